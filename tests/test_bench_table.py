"""N2N-Bench table files: the round trip, and every damaged or foreign file refused by name."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest
from bench_tables import fake_table

from n2n_env.bench.table import BenchTable, BenchTableError


@pytest.fixture(scope="module")
def table() -> BenchTable:
    return fake_table("removal")


def test_round_trip_keeps_every_array_and_the_header(table, tmp_path):
    path = table.save(tmp_path / "t.npz")
    loaded = BenchTable.load(path)
    assert loaded.header == table.header
    for name in ("row_student", "signature", "params", "flops", "status", "val_accuracy",
                 "test_accuracy", "seconds"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(table, name))
        assert getattr(loaded, name).dtype == getattr(table, name).dtype
    assert loaded.source == str(path)
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no partial file left


def test_arrays_are_read_only(table):
    with pytest.raises(ValueError, match="read-only"):
        table.val_accuracy[0, 0] = 1.0


def test_queries(table):
    assert table.num_episodes == 64 and table.num_seeds == 3
    degenerate = [i for i in range(table.num_students) if table.reason(i) is not None]
    assert degenerate and all("empty" in table.reason(i) for i in degenerate)
    assert np.isnan(table.val_accuracy[degenerate]).all()
    assert table.student_of(63) == table.row_student[63]
    compression = table.compression()
    assert compression[table.student_of(63)] == pytest.approx(0.0)  # keep-all is the teacher
    assert (compression[degenerate] == 0).all()


@pytest.mark.parametrize("damage", ["truncated", "random", "foreign", "version", "header",
                                    "missing"])
def test_damaged_or_foreign_files_are_refused_by_name(table, tmp_path, damage):
    path = table.save(tmp_path / "good.npz")
    bad = tmp_path / f"{damage}.npz"
    if damage == "truncated":
        bad.write_bytes(path.read_bytes()[:1000])
    elif damage == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "foreign":
        np.savez(bad, weights=np.zeros(3))
    else:
        with np.load(path) as archive:
            arrays = {key: archive[key] for key in archive.files}
        if damage == "version":
            arrays["version"] = np.array(99)
        elif damage == "header":
            arrays["header"] = np.frombuffer(b"{not json", np.uint8)
        else:
            del arrays["seconds"]
        np.savez(bad, **arrays)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BenchTableError, match=str(bad.name)):
        BenchTable.load(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_missing_file_names_it(tmp_path):
    with pytest.raises(BenchTableError, match=r"nowhere\.npz"):
        BenchTable.load(tmp_path / "nowhere.npz")


def test_a_pickled_array_is_never_loaded(table, tmp_path):
    path = tmp_path / "pickled.npz"
    with np.load(table.save(tmp_path / "good.npz")) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["params"] = np.array([object()], dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(BenchTableError, match=r"pickled\.npz"):
        BenchTable.load(path)


@pytest.mark.parametrize(("field", "damage", "message"), [
    ("params", lambda a: a[:3], "rows"),
    ("val_accuracy", lambda a: a[:, :2], "seed columns"),
    ("row_student", lambda a: a[:10], "episodes"),
    ("row_student", lambda a: a + 1000, "outside"),
    ("status", lambda a: np.full_like(a, 7), "status"),
    ("signature", lambda a: a.astype(np.int64), "uint64"),
])
def test_inconsistent_arrays_are_refused(table, field, damage, message):
    value = damage(getattr(table, field).copy())
    with pytest.raises(BenchTableError, match=message):
        dataclasses.replace(table, **{field: value})


def test_accuracies_outside_unit_interval_are_refused(table):
    values = table.val_accuracy.copy()
    values[table.student_of(63), 0] = 1.5
    with pytest.raises(BenchTableError, match=r"outside \[0, 1\]"):
        dataclasses.replace(table, val_accuracy=values)


def test_the_file_is_a_plain_zip_of_npy_arrays(table, tmp_path):
    path = table.save(tmp_path / "t.npz")
    with zipfile.ZipFile(path) as archive:
        assert all(name.endswith(".npy") for name in archive.namelist())
