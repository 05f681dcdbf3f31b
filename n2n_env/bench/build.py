"""Building an N2N-Bench table: train every distinct student of a space, at every seed.

The build is a long job (hours on two CPU cores), so it works in *parts*: the trainable
students, in the order the space first reaches them, are cut into parts of
``part_size``, trained in :func:`spread_order`; a finished part is one small JSON file
in the work directory, written atomically. A killed build loses at most the part it was
in; rerunning the same command skips the parts on disk. The work directory also keeps
the teacher's checkpoint, so a build continued on another machine (from a git checkout of
the work directory, say) distils from the very same weights. ``shard=(i, n)`` lets n
processes split the parts.

Every student is trained exactly as the environments' default distillation evaluator
trains it (:meth:`~n2n_env.distill.DistillationEvaluator.train_student`), scored on
validation (the reward's accuracy) and, for reporting only, on test.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from n2n_env import __version__, zoo
from n2n_env import data as data_mod
from n2n_env.arch import Architecture
from n2n_env.bench.spaces import SPACES, Catalogue, Space, catalogue, make_space
from n2n_env.bench.table import OK, BenchTable, TableHeader, signature_int
from n2n_env.checkpoints import TeacherRecord, load_teacher, read_teacher_record, save_teacher
from n2n_env.device import resolve_device
from n2n_env.distill import DistillationEvaluator, DistillRecipe
from n2n_env.evaluators import unscored
from n2n_env.teacher import get_teacher
from n2n_env.training import evaluate_accuracy, model_fingerprint

PART_FORMAT = "n2n-bench-part"


class BuildError(ValueError):
    """The work directory belongs to another build, or a part file is damaged."""


@dataclass(frozen=True)
class BuildSettings:
    """What to build and where."""

    space: str
    """"removal" (every keep mask of the teacher) or "shrink" (every shrink vector)."""
    work_dir: Path
    """Holds the teacher checkpoint, the build's identity and the finished parts."""
    out: Path | None = None
    """Where the finished table is written (None: only report progress)."""
    teacher: str = "conv3"
    """A zoo name; trained on first use with the paper's recipe, then kept in work_dir."""
    teacher_width: float = 1.0
    teacher_epochs: int | None = None
    """Epochs of a teacher trained on first use (None: the dataset recipe's)."""
    dataset: str = "mnist-10k"
    data_root: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    """Distillation seeds; every student is trained once per seed."""
    recipe: DistillRecipe = field(default_factory=DistillRecipe)
    start: Architecture | None = None
    """The shrink space's start (None: the teacher itself)."""
    include_kernels: bool = False
    part_size: int = 64
    """Trainable students per part file."""
    shard: tuple[int, int] = (0, 1)
    """(i, n): build only the parts whose number is i modulo n."""
    device: str | None = None
    """Training device; None picks CUDA when there is one."""
    progress: bool = True
    command: str = ""
    """The command line recorded in the table's header."""

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(
                not isinstance(seed, int) or seed < 0 for seed in self.seeds):
            raise ValueError(f"seeds must be distinct integers >= 0, got {self.seeds!r}")
        if self.part_size < 1:
            raise ValueError(f"part_size must be a positive integer, got {self.part_size!r}")
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {self.shard!r}")
        if self.start is not None and self.space != "shrink":
            raise ValueError("start is for the shrink space only")


@dataclass(frozen=True)
class BuildStatus:
    """How far a build has come."""

    parts_done: int
    parts_total: int
    students: int
    """Distinct students in the space."""
    trainable: int
    """Distinct students that are not degenerate (the ones trained)."""
    table: Path | None
    """The table written, once every part is done."""

    @property
    def complete(self) -> bool:
        return self.parts_done == self.parts_total


def build(settings: BuildSettings) -> BuildStatus:
    """Train the parts of ``settings.shard`` that are not on disk yet; once every part is
    there, assemble the table and write it to ``settings.out``."""
    work = Path(settings.work_dir)
    data = data_mod.load(settings.dataset, root=settings.data_root)
    teacher, record = _teacher(settings, data, work)
    space = make_space(settings.space, record.architecture, settings.start,
                       settings.include_kernels)
    students = catalogue(space)
    device = resolve_device(settings.device).type
    identity = _identity(settings, record, model_fingerprint(teacher), data.fingerprint, device)
    _claim(work, identity)
    trainable = students.trainable
    parts = [trainable[start : start + settings.part_size]
             for start in range(0, len(trainable), settings.part_size)]
    digest = _digest(identity)
    todo = [number for number in spread_order(len(parts))
            if number % settings.shard[1] == settings.shard[0]
            and _read_part(work, number, digest, students, parts[number]) is None]
    if todo:
        _train_parts(settings, teacher, record, data, students, parts, todo, work, digest)
    done = [_read_part(work, number, digest, students, parts[number])
            for number in range(len(parts))]
    finished = sum(part is not None for part in done)
    table_path = None
    if finished == len(parts) and settings.out is not None:
        table = _assemble(settings, record, identity, students, parts, done)  # type: ignore[arg-type]
        table_path = table.save(settings.out)
    return BuildStatus(finished, len(parts), len(students.students), len(trainable), table_path)


def spread_order(count: int) -> list[int]:
    """The part numbers ``0 .. count - 1`` in the order a build trains them: van der Corput
    order (sorted by their bit-reversed binary), so that the parts finished at any moment
    are spread evenly over the space instead of filling its first corner. Students are in
    episode order, so index order would train, say, every shrink vector whose first width
    is 10% before any other; spread out, an unfinished build already previews the whole
    landscape (``benchmarks/provisional_table.py``). A shard's share (the numbers of one
    residue) stays spread: any m of its first parts leave no gap over 2 * count / m."""
    bits = max(count - 1, 0).bit_length()
    return sorted(range(count), key=lambda number: int(f"{number:0{bits}b}"[::-1], 2))


MEASURED = ("val_accuracy", "test_accuracy", "seconds")
"""What a part stores per student, one value per seed."""


@dataclass(frozen=True)
class FinishedParts:
    """What an unfinished build has measured so far (:func:`read_finished`)."""

    identity: dict[str, Any]
    record: TeacherRecord
    space: Space
    students: Catalogue
    measured: dict[str, dict[str, list[float]]]
    """Per finished student's signature, in the parts' order: :data:`MEASURED` per seed."""


def read_finished(work: str | os.PathLike[str]) -> FinishedParts:
    """The finished parts in the build work directory ``work``, for previews of a table
    before it is complete; BuildError when there is none yet, or when the build shrinks
    an architecture other than its teacher (its identity keeps only the start's
    signature)."""
    work = Path(work)
    parts = sorted((work / "parts").glob("part-*.json"))
    if not (work / "identity.json").exists() or not parts:
        raise BuildError(f"{work} holds no finished part of a build yet")
    identity = json.loads((work / "identity.json").read_text())
    if identity.get("start") is not None:
        raise BuildError(f"{work} shrinks an architecture other than its teacher; only "
                         "builds over the teacher itself can be read before they finish")
    record = read_teacher_record(work / "teacher.pt")[0]
    space = make_space(identity["space"], record.architecture,
                       include_kernels=bool(identity.get("include_kernels")))
    measured: dict[str, dict[str, list[float]]] = {}
    for path in parts:
        part = json.loads(path.read_text())
        for index, signature in enumerate(part["signatures"]):
            measured[signature] = {key: part[key][index] for key in MEASURED}
    return FinishedParts(identity, record, space, catalogue(space), measured)


def _teacher(settings: BuildSettings, data: data_mod.Dataset,
             work: Path) -> tuple[torch.nn.Module, TeacherRecord]:
    """The build's teacher: the copy in the work directory, or the zoo's (trained on first
    use), copied there so that a continued build distils from the same weights."""
    path = work / "teacher.pt"
    expected = zoo.get(settings.teacher, data.input_shape, data.num_classes,
                       width=settings.teacher_width)
    if path.exists():
        return load_teacher(path, architecture=expected, dataset_fingerprint=data.fingerprint,
                            device=settings.device or "auto")
    model, record = get_teacher(settings.teacher, settings.dataset,
                                width=settings.teacher_width, data_root=settings.data_root,
                                device=settings.device, epochs=settings.teacher_epochs,
                                progress=settings.progress)
    work.mkdir(parents=True, exist_ok=True)
    save_teacher(path, model, record)
    return model, record


def _identity(settings: BuildSettings, record: TeacherRecord, teacher_fingerprint: str,
              dataset_fingerprint: str, device: str) -> dict[str, Any]:
    """Everything that decides the stored numbers; parts of another identity are refused.
    The device type is part of it: CUDA trains in bf16 and reads wall seconds, so a CPU
    build is never continued on a GPU (or the other way round)."""
    return {
        "device": device,
        "space": settings.space, "teacher": teacher_fingerprint,
        "teacher_name": record.architecture.name, "dataset": settings.dataset,
        "dataset_fingerprint": dataset_fingerprint, "recipe": asdict(settings.recipe),
        "recipe_digest": settings.recipe.digest(), "seeds": list(settings.seeds),
        "start": settings.start.signature() if settings.start is not None else None,
        "include_kernels": settings.include_kernels, "part_size": settings.part_size,
    }


def _digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _claim(work: Path, identity: dict[str, Any]) -> None:
    """Record the identity in a new work directory, or check it against the one there."""
    path = work / "identity.json"
    if path.exists():
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise BuildError(f"{path} is damaged ({error}); delete it only if the parts "
                             "beside it belong to this build") from None
        if found != identity:
            changed = sorted(key for key in identity if found.get(key) != identity[key])
            raise BuildError(f"work directory {work} belongs to another build (differs in "
                             f"{', '.join(changed)}); pass another work directory")
        return
    work.mkdir(parents=True, exist_ok=True)
    _write_json(path, identity)


def _part_path(work: Path, number: int) -> Path:
    return work / "parts" / f"part-{number:05d}.json"


def _read_part(work: Path, number: int, digest: str, students: Catalogue,
               members: tuple[int, ...]) -> dict[str, Any] | None:
    """The finished part ``number``, None if it is not on disk; BuildError if it is damaged
    or belongs to another build."""
    path = _part_path(work, number)
    if not path.exists():
        return None
    try:
        part = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BuildError(f"part file {path} is damaged ({error}); delete it to retrain "
                         "its students") from None
    expected = [students.students[i].signature() for i in members]
    if part.get("format") != PART_FORMAT or part.get("build") != digest or (
            part.get("signatures") != expected):
        raise BuildError(f"part file {path} belongs to another build; delete it or pass "
                         "another work directory")
    return part


def _train_parts(settings: BuildSettings, teacher: torch.nn.Module, record: TeacherRecord,
                 data: data_mod.Dataset, students: Catalogue,
                 parts: list[tuple[int, ...]], todo: list[int], work: Path,
                 digest: str) -> None:
    evaluators = [DistillationEvaluator(teacher, data, settings.recipe,
                                        teacher_accuracy=record.val_accuracy, seed=seed,
                                        device=settings.device)
                  for seed in settings.seeds]
    device = evaluators[0].device
    test = data.test.to(device)
    clock = "CPU seconds" if device.type == "cpu" else "wall seconds"
    machine = (f"{device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
               f"{platform.machine()}, {clock}")
    # The first training in a process pays one-off costs (kernel selection, allocator
    # growth) that would inflate the first student's seconds: pay them on a throwaway run.
    evaluators[0].train_student(students.students[parts[todo[0]][0]])
    total = sum(len(parts[number]) for number in todo) * len(settings.seeds)
    with tqdm(total=total, desc=f"n2n bench build {settings.space}", unit="training",
              disable=not settings.progress, dynamic_ncols=True) as bar:
        for number in todo:
            members = parts[number]
            rows = [list(_measure(evaluators, test, students.students[i], bar))
                    for i in members]
            _write_json(_part_path(work, number), {
                "format": PART_FORMAT, "build": digest, "part": number,
                "signatures": [students.students[i].signature() for i in members],
                "val_accuracy": [[m[0] for m in row] for row in rows],
                "test_accuracy": [[m[1] for m in row] for row in rows],
                "seconds": [[m[2] for m in row] for row in rows],
                "machine": machine, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                              time.gmtime()),
            })


def _measure(evaluators: list[DistillationEvaluator], test: data_mod.Split,
             student: Architecture, bar: tqdm) -> Iterator[tuple[float | None, ...]]:
    """(validation accuracy, test accuracy, seconds) at every seed; None accuracies where
    training failed. Seconds count training and validation, as an environment pays them."""
    clock = _clock(evaluators[0].device)
    for evaluator in evaluators:
        started = clock()
        trained = evaluator.train_student(student)
        if trained.model is None:
            yield None, None, clock() - started
        else:
            val = evaluate_accuracy(trained.model, evaluator.val)
            seconds = clock() - started
            yield val, evaluate_accuracy(trained.model, test), seconds
        bar.update(1)


def _clock(device: torch.device) -> Callable[[], float]:
    """The clock a table's seconds are read on: this process's CPU time on a CPU (immune to
    other processes sharing the machine, and the compute spent at any thread count), wall
    time on an accelerator (which the CPU clock does not see)."""
    return time.process_time if device.type == "cpu" else time.perf_counter


def _assemble(settings: BuildSettings, record: TeacherRecord, identity: dict[str, Any],
              students: Catalogue, parts: list[tuple[int, ...]],
              done: list[dict[str, Any]]) -> BenchTable:
    count, seeds = len(students.students), len(settings.seeds)
    val = np.full((count, seeds), np.nan, np.float32)
    test = np.full((count, seeds), np.nan, np.float32)
    seconds = np.zeros((count, seeds), np.float32)
    machines = set()
    for members, part in zip(parts, done):
        index = list(members)
        val[index] = np.array(part["val_accuracy"], np.float64)
        test[index] = np.array(part["test_accuracy"], np.float64)
        seconds[index] = np.array(part["seconds"], np.float64)
        machines.add(part["machine"])
    return table_of(record, identity, students, val, test, seconds, command=settings.command,
                    machine="; ".join(sorted(machines)), start=settings.start)


def table_of(record: TeacherRecord, identity: dict[str, Any], students: Catalogue,
             val: np.ndarray, test: np.ndarray, seconds: np.ndarray, *, command: str,
             machine: str, start: Architecture | None = None,
             extra: dict[str, Any] | None = None) -> BenchTable:
    """The table of a build's ``identity`` (see ``identity.json`` in its work directory)
    from its measurements, (students, seeds) arrays each: the header, the sizes and the
    degenerate reasons are derived here, so that every table is assembled one way."""
    reasons = sorted({reason for reason in students.reasons if reason is not None})
    status = np.array([OK if reason is None else reasons.index(reason)
                       for reason in students.reasons], np.int16)
    header = TableHeader(
        space=identity["space"], teacher=record.architecture.to_json(),
        teacher_name=record.architecture.name, teacher_fingerprint=identity["teacher"],
        teacher_accuracy=float(record.val_accuracy),
        teacher_test_accuracy=float(record.test_accuracy), dataset=identity["dataset"],
        dataset_fingerprint=identity["dataset_fingerprint"], recipe=identity["recipe"],
        recipe_digest=identity["recipe_digest"], seeds=tuple(identity["seeds"]),
        start=start.to_json() if start is not None else None,
        include_kernels=identity["include_kernels"], reasons=tuple(reasons),
        package_version=__version__, command=command, machine=machine,
        build_seconds=float(seconds.sum()), extra=dict(extra or {}),
    )
    # unscored() sizes a student as the evaluators do (0 where its shapes do not work out)
    sizes = [unscored(record.architecture, s, r)
             for s, r in zip(students.students, students.reasons)]
    return BenchTable(
        header=header, row_student=students.row_student,
        signature=np.array([signature_int(s) for s in students.students], np.uint64),
        params=np.array([e.params for e in sizes], np.int64),
        flops=np.array([e.flops for e in sizes], np.int64), status=status,
        val_accuracy=val.astype(np.float32), test_accuracy=test.astype(np.float32),
        seconds=seconds.astype(np.float32),
    )


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` atomically (a killed write leaves no file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    os.replace(partial, path)
