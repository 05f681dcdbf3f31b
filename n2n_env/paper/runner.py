"""Run a paper table's units in a work folder, skipping finished ones, resuming the rest.

The work folder ``DIR`` of ``n2n paper TABLE --work DIR``:

* ``units/<unit>.json``: one small file per finished unit: its result, the spec it was
  made with, its wall time (summed over sittings), when and on which machine, and the
  command. **Commit these** (with ``teachers/`` and ``policies/``, below): a later run
  on a fresh machine skips every unit they hold.
* ``teachers/<unit>.pt``: the teachers' checkpoints (0.6-40 MB). Commit them too, so
  that a fresh machine continues with the very same teachers; without them it trains a
  teacher again, and the table marks the units made with another teacher.
* ``policies/<unit>.pt``: Table 5's pre-trained policies (about 0.4 MB each).
* ``resume/<unit>.pt``: an unfinished teacher's state after its last epoch (weights and
  optimiser: two to three times the teacher's checkpoint), removed when the teacher is done.
  Commit it when a teacher takes longer than a sitting: a fresh machine then continues
  the teacher's training from that epoch. (``benchmarks/commit_results.sh`` commits the
  ones under 20 MB; a larger one is best committed once, at the end of a sitting.)
* ``runs/<unit>/``: run directories, reward caches, partial trainings. Never commit
  them (``.gitignore`` has ``benchmarks/paper/runs/``). An unfinished unit is resumed
  from here; ``runs/<unit>/unit.json`` holds its spec and the seconds already spent.
* ``carry/<unit>/``: a consistent copy of an unfinished unit's run folder
  (:mod:`n2n_env.paper.carry`), small enough to commit. A machine without
  ``runs/<unit>`` (or with an older one) continues the unit from it; it is removed when
  the unit finishes.
* ``table-N.md``: the table, written after every invocation, with the settings it shows
  (``table-N.settings.json``) and its curves (``figure-N.png``, :mod:`n2n_env.paper.figures`).

A unit's result is reused only for the same spec; a different one is an error that names
the file, so that a table never mixes settings silently.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import json
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from n2n_env.device import resolve_device
from n2n_env.paper import carry
from n2n_env.paper.plan import Unit, plan, spec_difference
from n2n_env.paper.settings import PaperSettings
from n2n_env.paper.units import EXECUTORS, Context, artefact, result_file
from n2n_env.progress import Progress
from n2n_env.progress import check as check_progress
from n2n_env.run_files import read_state

__all__ = ["FORMAT", "TableRun", "UnitBusyError", "UnitFileError", "UnitState", "duration",
           "holding", "machine", "read_tally", "run_table", "select", "states"]

FORMAT = "n2n-paper-unit-v1"
"""The ``format`` tag of a unit's result file."""


class UnitFileError(ValueError):
    """A unit's result file is damaged, foreign or made with other settings."""


class UnitBusyError(RuntimeError):
    """Another process is running this unit in the same work folder."""


@dataclass(frozen=True)
class UnitState:
    """A planned unit and how far it got in the work folder."""

    unit: Unit
    status: str
    """``done`` (its result file holds this spec), ``partial`` (``runs/<unit>`` or
    ``carry/<unit>`` holds an unfinished attempt, to be resumed) or ``pending``."""
    record: Mapping[str, Any] | None = None
    """The result file's content when done."""
    progress: str = ""
    """How far a partial unit got, in a few words (a search's iterations per stage, a
    pruning unit's finished runs)."""
    seconds: float | None = None
    """The seconds a partial unit has spent so far, over its sittings (its ``unit.json``)."""


@dataclass(frozen=True)
class TableRun:
    """What :func:`run_table` did."""

    settings: PaperSettings
    states: tuple[UnitState, ...]
    """Every unit of the table, after the run."""
    ran: tuple[str, ...]
    """The units run (or resumed) by this invocation."""


def read_record(work: Path, unit: Unit) -> dict[str, Any] | None:
    """The result file of ``unit``, or None if it has not finished; UnitFileError if the
    file is damaged, foreign or holds another spec."""
    path = result_file(work, unit.id)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnitFileError(f"{path} is damaged ({exc}); repair it, or delete it to run "
                            "the unit again") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise UnitFileError(f"{path} is not an n2n paper unit result (format {FORMAT}); "
                            "delete it to run the unit again")
    if record.get("spec") != unit.spec:
        diffs = spec_difference(record.get("spec") or {}, unit.spec, ("there", "now"))
        raise UnitFileError(f"{path} was made with other settings ({diffs}); use another "
                            "--work folder, give the same settings, or delete the file to "
                            "run the unit again")
    return record


def states(settings: PaperSettings, work: str | os.PathLike[str]) -> tuple[UnitState, ...]:
    """Every unit of ``settings.table`` with its status in ``work`` (nothing is run)."""
    folder = Path(work)
    result = []
    for unit in plan(settings):
        record = read_record(folder, unit)
        if record is not None:
            result.append(UnitState(unit, "done", record))
        elif (folder / "runs" / unit.id).exists() or carry.carry_dir(folder, unit.id).exists():
            result.append(UnitState(unit, "partial", None, *_progress(folder, unit)))
        else:
            result.append(UnitState(unit, "pending"))
    return tuple(result)


def _progress(folder: Path, unit: Unit) -> tuple[str, float | None]:
    """How far the unfinished ``unit`` got and the seconds it has spent, read from its run
    folder, or from its carried copy when the run folder is missing or has no tally
    (a fresh machine). A search reports each stage's iterations from its ``state.json``, a
    pruning unit its finished runs (their result, weights and architecture files:
    a carried copy may lack the weights, and then the run is done again); damaged or missing
    files report nothing rather than fail the table."""
    run = folder / "runs" / unit.id
    if not (run / "unit.json").is_file():
        run = carry.carry_dir(folder, unit.id)
    tally = read_tally(run)
    seconds = float(tally["seconds"]) if tally is not None else None
    if unit.kind == "prune":
        from n2n_env.baselines.runs import finished_seeds

        runs = int(unit.spec["runs"])
        return f"{len(finished_seeds(run, range(runs)))}/{runs} pruning runs finished", seconds
    if unit.kind != "compress":
        return "", seconds
    stages: Mapping[str, Any] = {}
    with contextlib.suppress(ValueError):
        stages = read_state(run / "state.json")["stages"]
    words = []
    for index, stage in enumerate(unit.spec["stages"], start=1):
        saved = stages.get(stage)
        done = int(saved["iteration"]) if isinstance(saved, Mapping) else 0
        words.append(f"stage {index} {done}/{unit.spec['iterations']}")
    return ", ".join(words) + " iterations", seconds


def machine(device: torch.device) -> str:
    """The machine a unit ran on, in a few words (CPU count, threads, device, torch)."""
    where = str(device)
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
            f"{threads} thread{'' if threads == 1 else 's'}, {where}, torch {torch.__version__}")


def run_table(settings: PaperSettings, work: str | os.PathLike[str], *,
              device: str | None = None, progress: Progress = True,
              only: Sequence[str] = (), command: str | None = None,
              log: Callable[[str], None] | None = None) -> TableRun:
    """Run the units of ``settings.table`` in ``work`` that have not finished.

    ``only``: glob patterns of unit ids to run (with the units they need); the default
    runs them all. ``command`` is recorded with each result (default: the equivalent
    ``n2n paper`` command). ``log`` receives one line per unit started, skipped and
    finished (default: stdout); ``progress`` is the long runs' own progress (see
    :mod:`n2n_env.progress`). A unit interrupted by an exception or Ctrl-C keeps its
    ``runs/<unit>`` folder, and the next call resumes it.
    """
    check_progress(progress)
    folder = Path(work)
    say = log or (lambda line: print(line, flush=True))
    dev = resolve_device(device)
    command = command or settings.command(os.fspath(folder))
    before = states(settings, folder)
    units = {state.unit.id: state.unit for state in before}
    wanted = select([s.unit for s in before], only)
    ran: list[str] = []
    records: dict[str, Mapping[str, Any]] = {s.unit.id: s.record for s in before if s.record}

    def ensure(unit_id: str) -> Mapping[str, Any]:
        unit = units[unit_id]
        path = artefact(folder, unit)
        if unit_id not in records or (path is not None and not path.is_file()):
            missing = path if unit_id in records else result_file(folder, unit_id)
            say(f"      again    {unit_id} (needed, and {missing} is missing)")
            records[unit_id] = execute(unit, "again")
        return records[unit_id]["result"]

    context = Context(folder, settings.data_root, dev, progress, say, ensure)

    def execute(unit: Unit, how: str) -> dict[str, Any]:
        ran.append(unit.id)
        teachers = {need: ensure(need)["fingerprint"] for need in unit.needs
                    if units[need].kind == "teacher"}
        with holding(folder, unit.id):  # before the copy: never under a running unit
            carried = carry.restore(folder, unit.id, folder / "runs" / unit.id)
            if carried:
                say(carried)
            return _execute(unit, how, teachers, context, command, say)

    total = len(before)
    for index, state in enumerate(before, start=1):
        unit = state.unit
        tag = f"[{index}/{total}]"
        if unit.id in records:
            finished = records[unit.id].get("finished", "?")
            say(f"{tag} done     {unit.id} (finished {finished})")
            continue
        if unit.id not in wanted:
            say(f"{tag} skipped  {unit.id} (not in --only)")
            continue
        for need in unit.needs:
            ensure(need)
        how = ("resume" if (folder / "runs" / unit.id).exists()
               or carry.carry_dir(folder, unit.id).exists() else "start")
        say(f"{tag} {how:8} {unit.id}")
        records[unit.id] = execute(unit, how)
        say(f"{tag} finished {unit.id} in {duration(records[unit.id]['seconds'])}")
    return TableRun(settings, states(settings, folder), tuple(ran))


@contextlib.contextmanager
def holding(work: Path, unit_id: str) -> Iterator[None]:
    """Hold ``runs/<unit>.lock`` while the unit runs, so that a second invocation on the
    same work folder (``--jobs``, or another shell) stops instead of running it at once;
    UnitBusyError if another process holds it. No lock where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path = work / "runs" / f"{unit_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UnitBusyError(f"{unit_id} is being run by another process in {work}; "
                                "wait for it to end, or stop it") from None
        yield


def select(units: Sequence[Unit], only: Sequence[str], where: str = "this table"
           ) -> set[str]:
    """The ids of ``units`` matching a glob of ``only`` (all when it is empty) and of
    everything they need; ValueError naming the units (those of ``where``) if none
    matches."""
    if not only:
        return {unit.id for unit in units}
    by_id = {unit.id: unit for unit in units}
    chosen = {unit.id for unit in units if any(fnmatch.fnmatchcase(unit.id, p) for p in only)}
    if not chosen:
        raise ValueError(f"--only {' '.join(only)} matches none of the units of {where}: "
                         f"{', '.join(by_id)}")
    stack = list(chosen)
    while stack:
        for need in by_id[stack.pop()].needs:
            if need not in chosen:
                chosen.add(need)
                stack.append(need)
    return chosen


def _execute(unit: Unit, how: str, teachers: Mapping[str, str], context: Context,
             command: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Run one unit (its needs are ready; ``teachers`` maps the teacher units it reads to
    their fingerprints), write its result file and return it."""
    folder = context.work
    run = None if unit.kind == "teacher" else folder / "runs" / unit.id
    identity = {"spec": unit.spec, "teachers": teachers}
    spent, sittings = _previous_attempts(run, identity, say) if run else (0.0, 0)
    started = time.perf_counter()
    started_at = _now()
    with _tally(run, identity, spent, sittings + 1, started):
        result = EXECUTORS[unit.kind](unit, context)
    if unit.kind == "teacher":
        teachers = {unit.id: result["fingerprint"]}
    record: dict[str, Any] = {
        "format": FORMAT, "unit": unit.id, "kind": unit.kind, "spec": unit.spec,
        "needs": list(unit.needs), "result": result, "teachers": dict(teachers),
        "seconds": round(spent + time.perf_counter() - started, 1),
        "sittings": sittings + 1, "started": started_at, "finished": _now(),
        "machine": machine(context.device), "command": command, "n2n_version": _version(),
        "how": how}
    path = result_file(folder, unit.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    carry.discard(folder, unit.id)
    return record


def _previous_attempts(run: Path, identity: Mapping[str, Any],
                       say: Callable[[str], None]) -> tuple[float, int]:
    """Seconds and sittings already spent on this unit in ``run``; a folder made with
    another spec or teacher is cleared (its files would not match)."""
    if not run.exists():
        return 0.0, 0
    saved = read_tally(run)
    if saved is not None and saved.get("identity") == json.loads(json.dumps(identity)):
        return float(saved["seconds"]), int(saved["sittings"])
    say(f"  starting over: {run} was made with other settings or another teacher")
    shutil.rmtree(run)
    return 0.0, 0


def read_tally(run: Path) -> Mapping[str, Any] | None:
    """``run/unit.json`` (the unit's identity, seconds and sittings so far), or None when
    it is missing or damaged."""
    try:
        saved = json.loads((run / "unit.json").read_text())
        float(saved["seconds"]), int(saved["sittings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return saved


TALLY_SECONDS = 60.0
"""How often an unfinished unit's ``unit.json`` is brought up to date with the seconds
spent: a sitting killed without warning (a machine taken away) loses at most this much
of its tally."""


@contextlib.contextmanager
def _tally(run: Path | None, identity: Mapping[str, Any], spent: float, sittings: int,
           started: float) -> Iterator[None]:
    """Keep ``run/unit.json``'s seconds up to date while the body runs: at its start,
    every :data:`TALLY_SECONDS` from a background thread, and at its end (whatever the
    outcome). Nothing is written when ``run`` is None (teachers keep their own record)."""
    if run is None:
        yield
        return

    def write() -> None:
        _write_attempt(run, identity, spent + time.perf_counter() - started, sittings)

    write()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(TALLY_SECONDS):
            write()

    beater = threading.Thread(target=beat, name="n2n-paper-tally", daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join()
        write()


def _write_attempt(run: Path, identity: Mapping[str, Any], seconds: float,
                   sittings: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / f".unit.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"identity": identity, "seconds": seconds,
                               "sittings": sittings}))
    tmp.replace(run / "unit.json")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _version() -> str:
    from n2n_env import __version__

    return __version__


def duration(seconds: float) -> str:
    """A wall time in words: ``12.3 s``, ``4 min 05 s`` or ``2 h 03 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"

