"""Run tables' units side by side in worker processes (``n2n paper TABLE... --jobs N``).

On a CPU, torch's threads speed one training up less than the cores they take: on this
project's 2-core machine one thread of a CPU-sized ResNet-34 step takes 98 ms and two take
62 ms, while two one-thread processes each keep 98 ms (docs/paper.md). Units are
independent once their needs have finished, so :func:`run_jobs` runs up to ``jobs`` of
them at once, each as ``n2n paper TABLE ... --only UNIT`` in its own process with its
share of the cores (``N2N_THREADS`` and ``OMP_NUM_THREADS`` set to ``threads // jobs``,
or to more when fewer units can run: :func:`threads_each`).

A unit starts when every unit it needs has its result file, in the plan's order. Several
tables given together share one pool of workers (:func:`~n2n_env.paper.plan.pool`), so
that one table's last unit does not leave cores idle while another table's units wait: a
unit runs once, with the first table that has it. A worker is the same command a user
could run, so it writes the same files, resumes the same way,
and a second invocation never runs a unit a worker holds (:func:`n2n_env.paper.runner`
locks each unit while it runs). The workers' lines are passed on, each with its unit's
id, except the ``done`` and ``skipped`` lines of units it does not run and its table
(the invocation writes the table once all have ended). A worker that fails is reported
with its status; the units needing it are left, the others go on. A worker that fails
after it finished its unit (at its copy of the table, say) is only warned about: the
unit's result is written, and the units needing it run.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from n2n_env.paper.plan import Unit, pool
from n2n_env.paper.runner import select
from n2n_env.paper.settings import PaperSettings, tables_named
from n2n_env.paper.units import artefact, result_file

__all__ = ["JobsResult", "run_jobs", "threads_each", "worker_command"]

_QUIET = re.compile(r"^\[\d+/\d+\] (done|skipped) ")
_FINISHED = re.compile(r"^\[\d+/\d+\] finished (\S+)")
_ERROR = re.compile(r"^(n2n: |Traceback|\s|[\w.]+(Error|Exception|Interrupt)\b)")


@dataclass(frozen=True)
class JobsResult:
    """What :func:`run_jobs` did."""

    finished: tuple[str, ...]
    """Units that a worker finished: their result is written, even if the worker then
    failed (at its table, which the caller writes again)."""
    failed: tuple[tuple[str, int], ...]
    """Units whose worker failed, with its exit status."""
    blocked: tuple[str, ...]
    """Units not run because a unit they need failed."""


def worker_command(settings: PaperSettings, work: str, unit_id: str, device: str
                   ) -> list[str]:
    """The command a worker runs: this table's settings, one unit, lines not bars."""
    words = shlex.split(settings.command(work))[1:]  # without the leading "n2n"
    return [sys.executable, "-m", "n2n_env.cli", *words, "--device", device,
            "--no-progress", "--only", unit_id]


def run_jobs(tables: Sequence[PaperSettings], work: str, *, jobs: int, threads: int,
             device: str, only: Sequence[str] = (),
             log: Callable[[str], None] | None = None) -> JobsResult:
    """Run the unfinished units of ``tables`` (the settings of one table or of several
    sharing ``work``) in ``work``, ``jobs`` at a time, each with ``max(1, threads // jobs)``
    threads (more when fewer can run, :func:`threads_each`). ``only`` as for
    :func:`~n2n_env.paper.runner.run_table`, over all the tables' units. Ctrl-C stops the
    workers (each keeps its resumable state, as a single invocation does) and is raised
    again here. ValueError as :func:`~n2n_env.paper.plan.pool` raises it."""
    say = log or (lambda line: print(line, flush=True))
    folder = Path(work)
    pooled = pool(tables)
    units = [unit for unit, _ in pooled]
    owner = {unit.id: settings for unit, settings in pooled}
    wanted = select(units, only, tables_named(settings.table for settings in tables))
    per_job = max(1, threads // jobs)
    running: dict[str, subprocess.Popen[str]] = {}
    readers: dict[str, threading.Thread] = {}
    lock = threading.Lock()
    finished: list[str] = []
    failed: dict[str, int] = {}
    said_finished: set[str] = set()  # units whose worker printed its "finished" line

    def done(unit: Unit) -> bool:
        return result_file(folder, unit.id).is_file()

    by_id = {u.id: u for u in units}

    def blocked(unit: Unit) -> bool:
        stack = list(unit.needs)
        while stack:
            need = stack.pop()
            if need in failed:
                return True
            stack.extend(by_id[need].needs)
        return False

    def forward(unit_id: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        after = False  # after its unit finished, only errors: not its table
        for raw in process.stdout:
            line = raw.rstrip("\n")
            if _QUIET.match(line) or (after and not _ERROR.match(line)):
                continue
            with lock:
                say(line if line.startswith("[") else f"  {unit_id}: {line}")
            match = _FINISHED.match(line)
            if match and match.group(1) == unit_id:
                after = True
                said_finished.add(unit_id)

    say(f"{jobs} jobs of {per_job} thread{'s' if per_job > 1 else ''} each"
        + (f"; a unit that can only run alone gets {threads}" if threads > per_job else ""))
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            for unit_id, process in list(running.items()):
                status = process.poll()
                if status is None:
                    continue
                del running[unit_id]
                readers[unit_id].join(timeout=5)  # its last lines come before the verdict
                if result_file(folder, unit_id).is_file():  # absent when it started
                    finished.append(unit_id)
                    if status != 0 and unit_id in said_finished:  # failed after: its table
                        with lock:
                            say(f"      warning  {unit_id} finished, then its process "
                                f"exited with status {status}; its lines above say why")
                else:
                    failed[unit_id] = status
                    with lock:
                        say(f"      failed   {unit_id} (exit status {status})")
            ready = [unit for unit in units
                     if unit.id in wanted and unit.id not in running and unit.id not in failed
                     and not done(unit) and not blocked(unit)
                     and all(result_file(folder, need).is_file() for need in unit.needs)]
            if not ready and not running:
                break
            share = threads_each(threads, jobs, len(running) + len(ready))
            env = {**os.environ, "N2N_THREADS": str(share), "OMP_NUM_THREADS": str(share),
                   "PYTHONUNBUFFERED": "1"}
            for unit in _one_per_lost_file(ready, running, by_id, folder)[
                    : jobs - len(running)]:
                process = subprocess.Popen(worker_command(owner[unit.id], work, unit.id,
                                                          device),
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True, errors="replace", env=env)
                running[unit.id] = process
                reader = threading.Thread(target=forward, args=(unit.id, process), daemon=True)
                reader.start()
                readers[unit.id] = reader
            _wait_any(running)
    except BaseException:  # Ctrl-C, SIGTERM (see above), a failure here: no orphans
        _stop(running.values())
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for reader in readers.values():
            reader.join(timeout=5)
    left = tuple(unit.id for unit in units
                 if unit.id in wanted and not done(unit) and unit.id not in failed)
    return JobsResult(tuple(finished), tuple(failed.items()), left)


def threads_each(threads: int, jobs: int, at_once: int) -> int:
    """The threads of each worker started now, when ``at_once`` units are running or
    ready: ``threads // jobs``, or more when fewer than ``jobs`` units can run. A unit
    that is alone now stays alone until it ends (only its result can make another one
    ready), so a lone teacher or pruning run takes every thread instead of leaving cores
    idle for hours."""
    return max(1, threads // max(1, min(jobs, at_once)))


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM to the invocation stops its workers as Ctrl-C does."""
    raise KeyboardInterrupt


def _one_per_lost_file(ready: Sequence[Unit], running: Mapping[str, object],
                       by_id: Mapping[str, Unit], folder: Path) -> list[Unit]:
    """``ready`` without units that would make a lost file again beside another: a
    finished need whose file (a teacher's checkpoint, a policy) is missing is made again
    by the first worker that needs it, and the others wait for it."""
    chosen: list[Unit] = []
    busy = {need for unit_id in running for need in by_id[unit_id].needs}
    for unit in ready:
        lost = {need for need in unit.needs
                if (path := artefact(folder, by_id[need])) is not None and not path.is_file()}
        if lost & busy:
            continue
        busy |= lost
        chosen.append(unit)
    return chosen


def _stop(processes: Iterable[subprocess.Popen[str]], settle: float = 5.0,
          grace: float = 60.0) -> None:
    """Stop the workers as Ctrl-C stops one invocation (SIGINT: each saves what it holds
    and records its time), killing any still running after ``grace`` seconds. A Ctrl-C
    typed in a terminal reaches the workers too: they get ``settle`` seconds to end on
    their own before the signal is sent, so that none is interrupted while it saves."""
    processes = list(processes)
    deadline = time.monotonic() + settle
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_any(running: dict[str, subprocess.Popen[str]], seconds: float = 1.0) -> None:
    """Sleep until a worker ends or ``seconds`` pass."""
    for process in running.values():
        try:
            process.wait(timeout=seconds / max(1, len(running)))
            return
        except subprocess.TimeoutExpired:
            continue
