"""The N2N-Bench table: every episode of one search space, trained for real, stored once.

A table has one row per episode of its space (:mod:`n2n_env.bench.spaces`) pointing at a
*student*: episodes that build the same architecture share one. Per student it stores the
parameter and FLOP counts, why it is degenerate (if it is), and per training seed the
validation accuracy (what a reward sees), the test accuracy (for reporting only) and the
seconds the evaluation took. A training that failed at a seed (its loss diverged) stores
NaN accuracies there.

The file is a NumPy ``.npz`` archive of plain arrays and one JSON header (stored as
bytes), read with ``allow_pickle=False``: nothing in it can run code. Pure NumPy, no
torch import, so the benchmark environments load a table in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from n2n_env.arch import Architecture
from n2n_env.bench.spaces import SPACES, Space, make_space

FORMAT = "n2n-bench-table"
FORMAT_VERSION = 1
OK = -1
"""``status`` of a student that trained: not an index into ``header.reasons``."""


class BenchTableError(ValueError):
    """A table file is missing, corrupt, foreign or inconsistent; the message names it."""


@dataclass(frozen=True)
class TableHeader:
    """What a table was built from, and how; everything needed to judge and rebuild it."""

    space: str
    """"removal" or "shrink"."""
    teacher: str
    """The teacher's architecture JSON."""
    teacher_name: str
    teacher_fingerprint: str
    """Hash of the teacher's architecture and weights (training.model_fingerprint)."""
    teacher_accuracy: float
    """The teacher's validation accuracy, the A_teacher of the reward."""
    teacher_test_accuracy: float
    dataset: str
    dataset_fingerprint: str
    recipe: dict[str, Any]
    """The distillation recipe (DistillRecipe fields) every student was trained with."""
    recipe_digest: str
    seeds: tuple[int, ...]
    """Training seeds, one column of the per-seed arrays each."""
    start: str | None = None
    """The shrink space's start architecture JSON (None: the teacher itself)."""
    include_kernels: bool = False
    reasons: tuple[str, ...] = ()
    """Degenerate reasons; ``status`` indexes them."""
    package_version: str = ""
    command: str = ""
    """The command that built the table."""
    machine: str = ""
    """Where it was built (device, threads, torch version)."""
    build_seconds: float = 0.0
    """Sum of the stored seconds: the compute the table cost (test scoring excluded)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def teacher_architecture(self) -> Architecture:
        return Architecture.from_json(self.teacher)

    def space_object(self) -> Space:
        """The search space this table enumerates."""
        teacher = self.teacher_architecture()
        start = Architecture.from_json(self.start) if self.start else None
        return make_space(self.space, teacher, start, self.include_kernels)


_ARRAYS = {
    "row_student": (np.int32, 1),
    "signature": (np.uint64, 1),
    "params": (np.int64, 1),
    "flops": (np.int64, 1),
    "status": (np.int16, 1),
    "val_accuracy": (np.float32, 2),
    "test_accuracy": (np.float32, 2),
    "seconds": (np.float32, 2),
}


@dataclass(frozen=True, eq=False)
class BenchTable:
    """A loaded table; see the module docstring. Arrays are read-only."""

    header: TableHeader
    row_student: np.ndarray
    """(episodes,) student index of every episode of the space."""
    signature: np.ndarray
    """(students,) Architecture.signature() as an unsigned 64-bit integer."""
    params: np.ndarray
    flops: np.ndarray
    status: np.ndarray
    """(students,) OK, or an index into ``header.reasons`` for a degenerate student."""
    val_accuracy: np.ndarray
    """(students, seeds) validation accuracy; NaN where degenerate or failed."""
    test_accuracy: np.ndarray
    seconds: np.ndarray
    """(students, seeds) seconds to train and score on validation; 0 where degenerate."""
    source: str = "<memory>"

    def __post_init__(self) -> None:
        _validate(self, self.source)
        for name in _ARRAYS:
            getattr(self, name).setflags(write=False)

    @property
    def num_episodes(self) -> int:
        return len(self.row_student)

    @property
    def num_students(self) -> int:
        return len(self.signature)

    @property
    def num_seeds(self) -> int:
        return len(self.header.seeds)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table to ``path`` (an ``.npz``), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = json.dumps(asdict(self.header), sort_keys=True).encode()
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as handle:
            np.savez_compressed(handle, format=np.frombuffer(FORMAT.encode(), np.uint8),
                                version=np.array(FORMAT_VERSION),
                                header=np.frombuffer(header, np.uint8), **arrays)
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BenchTable:
        """Read a table written by :meth:`save`; a missing, corrupt or foreign file raises
        :class:`BenchTableError` naming it."""
        name = os.fspath(path)
        if not Path(path).is_file():
            raise BenchTableError(f"no benchmark table at {name!r}")
        try:
            with np.load(path, allow_pickle=False) as archive:
                contents = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
            raise BenchTableError(f"{name!r} is not a readable benchmark table: {error}") from None
        if bytes(contents.get("format", np.zeros(0, np.uint8))).decode(errors="replace") != FORMAT:
            raise BenchTableError(f"{name!r} is not an n2n benchmark table (no "
                                  f"{FORMAT!r} marker); build one with 'n2n bench build'")
        if int(contents.get("version", -1)) != FORMAT_VERSION:
            raise BenchTableError(f"{name!r} has table format version "
                                  f"{int(contents.get('version', -1))}; this n2n reads "
                                  f"version {FORMAT_VERSION}")
        try:
            raw = json.loads(bytes(contents["header"]).decode())
            raw["seeds"] = tuple(raw["seeds"])
            raw["reasons"] = tuple(raw["reasons"])
            header = TableHeader(**raw)
        except (KeyError, TypeError, ValueError) as error:
            raise BenchTableError(f"{name!r} has a damaged header: {error}") from None
        missing = sorted(set(_ARRAYS) - set(contents))
        if missing:
            raise BenchTableError(f"{name!r} lacks the arrays {missing}")
        return cls(header=header, source=name, **{key: contents[key] for key in _ARRAYS})

    # ------------------------------------------------------------------ queries
    def student_of(self, episode: int) -> int:
        """The student index of an episode number."""
        return int(self.row_student[episode])

    def reason(self, student: int) -> str | None:
        """The degenerate reason of a student, or None if it trained."""
        code = int(self.status[student])
        return None if code == OK else self.header.reasons[code]

    def compression(self, metric: str = "params") -> np.ndarray:
        """(students,) 1 - size/teacher size, for ``metric`` "params" or "flops"; 0 for
        degenerate students (as the environments report them)."""
        teacher = self.header.teacher_architecture()
        sizes, total = ((self.params, teacher.num_params()) if metric == "params"
                        else (self.flops, teacher.flops()))
        values = 1.0 - sizes.astype(np.float64) / total
        return np.where(sizes > 0, values, 0.0)

    def digest(self) -> str:
        """A hash of the header and every array: which table a log was made against."""
        digest = hashlib.sha256(json.dumps(asdict(self.header), sort_keys=True).encode())
        for name in _ARRAYS:
            digest.update(np.ascontiguousarray(getattr(self, name)).tobytes())
        return digest.hexdigest()[:16]

    def signature_index(self) -> dict[int, int]:
        """Architecture signature (as an int) -> student index."""
        return {int(sig): index for index, sig in enumerate(self.signature)}


def signature_int(arch: Architecture) -> int:
    """An architecture's signature as the unsigned integer a table stores."""
    return int(arch.signature(), 16)


def _validate(table: BenchTable, name: str) -> None:
    """Check dtypes, shapes and cross-references; raise BenchTableError naming ``name``."""
    header = table.header
    if header.space not in SPACES:
        raise BenchTableError(f"{name!r}: unknown space {header.space!r}; allowed: {SPACES}")
    if not header.seeds:
        raise BenchTableError(f"{name!r}: the header names no seeds")
    if not (math.isfinite(header.teacher_accuracy) and 0 < header.teacher_accuracy <= 1):
        raise BenchTableError(f"{name!r}: teacher accuracy {header.teacher_accuracy!r} is not "
                              "in (0, 1]")
    try:
        size = header.space_object().size
    except ValueError as error:
        raise BenchTableError(f"{name!r}: the header's architectures are damaged: {error}"
                              ) from None
    if len(table.row_student) != size:
        raise BenchTableError(f"{name!r}: {len(table.row_student)} episodes stored for a "
                              f"{header.space} space of {size}")
    students = len(table.signature)
    for key, (dtype, ndim) in _ARRAYS.items():
        array = getattr(table, key)
        if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != ndim:
            raise BenchTableError(f"{name!r}: array {key!r} must be {ndim}-D {np.dtype(dtype)}, "
                                  f"got {getattr(array, 'dtype', type(array))} "
                                  f"{getattr(array, 'shape', '')}")
        if key != "row_student" and len(array) != students:
            raise BenchTableError(f"{name!r}: array {key!r} has {len(array)} rows for "
                                  f"{students} students")
        if ndim == 2 and array.shape[1] != len(header.seeds):
            raise BenchTableError(f"{name!r}: array {key!r} has {array.shape[1]} seed columns "
                                  f"for {len(header.seeds)} seeds")
    rows = table.row_student
    if len(rows) and (rows.min() < 0 or rows.max() >= students):
        raise BenchTableError(f"{name!r}: an episode points at a student outside "
                              f"[0, {students})")
    status = table.status
    if len(status) and (status.min() < OK or status.max() >= len(header.reasons)):
        raise BenchTableError(f"{name!r}: a student's status is not OK or a known reason")
    trained = status == OK
    accuracies = table.val_accuracy[trained]
    finite = accuracies[np.isfinite(accuracies)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise BenchTableError(f"{name!r}: validation accuracies outside [0, 1]")
