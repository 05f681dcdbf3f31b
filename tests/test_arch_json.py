"""The architecture JSON format: round trips of every teacher and of students drawn by
hypothesis, and clear errors for anything that is not version 1 of the format."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from n2n_env import zoo
from n2n_env.arch import Architecture

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", zoo.names())
def test_teacher_json_round_trip(name, small_zoo):
    for arch in (small_zoo.arch(name), zoo.get(name)):
        back = Architecture.from_json(arch.to_json(indent=2))
        assert back == arch and back.signature() == arch.signature() and back.name == name


@pytest.mark.parametrize("name", zoo.names())
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_student_json_round_trip_and_keep_all_identity(name, small_zoo, data):
    student = small_zoo.arch(name).remove(data.draw(small_zoo.keep_masks(small_zoo.arch(name))))
    if student.degenerate_reason() is None:
        count = len(student.shrink_variables(include_kernels=True))
        factors = data.draw(small_zoo.factor_lists(count))
        student = student.shrink(factors, include_kernels=True)
    back = Architecture.from_json(student.to_json())
    assert back == student and back.signature() == student.signature()
    assert back.degenerate_reason() == student.degenerate_reason()
    if student.degenerate_reason() is None:  # keeping everything stays the identity
        assert student.remove([True] * len(student)) == student


def test_from_json_rejects_garbage_formats_and_versions(small_zoo):
    good = json.loads(small_zoo.arch("resnet18").to_json())
    cases = {
        "not json {": "does not parse",
        "[]": "n2n-architecture",
        "null": "n2n-architecture",
        json.dumps({**good, "format": "onnx"}): "n2n-architecture",
        json.dumps({**good, "version": 2}): r"version 2.*version 1",
        json.dumps({k: v for k, v in good.items() if k != "version"}): "version",
        json.dumps({k: v for k, v in good.items() if k != "layers"}): "malformed",
        json.dumps({**good, "layers": [{"kind": "conv", "out": 3, "colour": 1}]}): "malformed",
        json.dumps({**good, "blocks": [{"start": 0}]}): "malformed",
        json.dumps({**good, "layers": [{"kind": "softmax"}]}): "unknown layer kind",
    }
    for text, message in cases.items():
        with pytest.raises(ValueError, match=message):
            Architecture.from_json(text)


def test_from_json_rejects_boolean_version(small_zoo):
    good = json.loads(small_zoo.arch("conv4").to_json())
    with pytest.raises(ValueError, match="version"):
        Architecture.from_json(json.dumps({**good, "version": True}))
