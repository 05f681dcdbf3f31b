"""N2N-Bench's search spaces: episode numbers, action sequences and students agree with the
environments, for every episode."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from bench_tables import small_teacher
from hypothesis import given, settings
from hypothesis import strategies as st

import n2n_env  # noqa: F401  (registers the environments)
from n2n_env import zoo
from n2n_env.bench.spaces import RemovalSpace, ShrinkSpace, catalogue, make_space

CONV3 = zoo.get("conv3", (1, 16, 16), num_classes=10)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 2**13 - 1))
def test_removal_index_and_actions_round_trip(index):
    space = RemovalSpace(CONV3)
    actions = space.actions(index)
    assert space.index(actions) == index
    fixed = [i for i, free in enumerate(CONV3.removable()) if not free]
    assert all(actions[i] == 1 for i in fixed)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 9999))
def test_shrink_index_and_actions_round_trip(index):
    space = ShrinkSpace(CONV3)
    actions = space.actions(index)
    assert space.index(actions) == index
    assert int("".join(map(str, actions))) == index  # base 10, first variable first


def test_sizes_of_the_benchmark_spaces():
    assert RemovalSpace(CONV3).size == 2**13 and RemovalSpace(CONV3).episode_length == 15
    assert ShrinkSpace(CONV3).size == 10**4 and ShrinkSpace(CONV3).episode_length == 4


@pytest.mark.parametrize("space_name", ["removal", "shrink"])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_a_played_episode_builds_the_space_student(space_name, data):
    """The environment's terminal student is the space's student of that episode."""
    teacher = small_teacher()
    space = make_space(space_name, teacher)
    index = data.draw(st.integers(0, space.size - 1))
    env = gym.make("N2NRemoval-v0" if space_name == "removal" else "N2NShrink-v0",
                   teacher=teacher, evaluator="mock").unwrapped
    env.reset(seed=0)
    for action in space.actions(index):
        *_, terminated, _, info = env.step(action)
    assert terminated
    assert info["architecture"] == space.student(index).to_json()


def test_out_of_range_and_wrong_length_are_refused():
    space = RemovalSpace(CONV3)
    with pytest.raises(ValueError, match=r"outside the removal space \[0, 8192\)"):
        space.actions(8192)
    with pytest.raises(ValueError, match="15 actions"):
        space.index([1, 0])
    shrink = ShrinkSpace(CONV3)
    with pytest.raises(ValueError, match="use 0-9"):
        shrink.index([0, 0, 0, 10])
    with pytest.raises(ValueError, match="allowed: removal, shrink"):
        make_space("prune", CONV3)
    with pytest.raises(ValueError, match="start is for the shrink space"):
        make_space("removal", CONV3, start=CONV3)


def test_catalogue_deduplicates_students_in_first_seen_order():
    students = catalogue(make_space("removal", small_teacher()))
    assert len(students.row_student) == 64
    signatures = [s.signature() for s in students.students]
    assert len(set(signatures)) == len(signatures)
    assert students.row_student[0] == 0  # episode 0 (remove all) is the first student seen
    assert np.all(np.diff(np.maximum.accumulate(students.row_student)) <= 1)
    empty = students.reasons[students.row_student[0]]
    assert empty is not None and "empty" in empty
