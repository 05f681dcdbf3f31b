"""Train a batch of students side by side in local worker processes.

A search proposes several students at once (a population, a batch of episodes), and each
student trains for seconds to minutes, so :class:`ProcessPoolEvaluator` spreads a batch over
N worker processes. It is an :class:`~n2n_env.evaluators.Evaluator` itself: a search, an
environment or a :class:`~n2n_env.cache.CachedEvaluator` uses it exactly like the evaluator it
runs, and gets the same results (a student trains with the same seed and recipe wherever it
trains), only sooner.

Each worker is started with the ``spawn`` method (no inherited torch or CUDA state) and builds
its own evaluator ONCE by calling ``make_evaluator`` (the teacher, its logits and the data
are loaded once per worker, not per student); the workers then receive one student at a
time. A worker that dies mid-student (killed by the kernel's out-of-memory killer, a
segfault, SIGKILL) is replaced and its student retried on a live worker; a student that
keeps killing workers raises a RuntimeError naming it. What it shares with the Ray backend
(the hand-shake, batch deduplication, progress) is in :mod:`n2n_env.backend_common`.

The driver keeps any cache: wrap the pool, ``CachedEvaluator(ProcessPoolEvaluator(...),
path)``, and only the driver opens the SQLite file.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import signal
import threading
import time
import traceback
import weakref
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from types import TracebackType
from typing import Any

from n2n_env import validate
from n2n_env.arch import Architecture
from n2n_env.backend_common import (
    MAX_CRASHES,
    Progress,
    WorkerInfo,
    build_evaluator,
    checked_students,
    default_threads,
    describe,
    distinct,
    in_order,
    report,
    same_evaluator,
    student_label,
)
from n2n_env.evaluators import Evaluation, Evaluator

_STOP_SECONDS = 5.0  # how long close() waits for an idle worker to exit before terminating it


def exit_text(code: int | None) -> str:
    """A worker's exit code in words: 'killed by SIGKILL', 'exit code 1'."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# ---------------------------------------------------------------------- worker process
def _watch_parent(parent: int) -> None:
    """Exit as soon as the driver is gone, even in the middle of a student (a daemon
    thread): a killed driver must not leave workers training for nobody."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _worker_main(make_evaluator: Callable[[], Evaluator], threads: int, conn: Connection,
                 parent: int) -> None:
    """A worker: build the evaluator, report ("ready", WorkerInfo) or ("error", traceback),
    then answer each (task, student) with ("done", task, Evaluation) or ("raised", task,
    traceback) until told None or the driver goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        evaluator = build_evaluator(make_evaluator, threads)
        info = describe(evaluator)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", info))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task, arch = message
        try:
            reply: tuple[Any, ...] = ("done", task, evaluator.evaluate(arch))
        except Exception:
            reply = ("raised", task, traceback.format_exc())
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


# ---------------------------------------------------------------------- driver side
@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    info: WorkerInfo | None = None
    """Set by the hand-shake; None while the worker is still building its evaluator."""
    task: tuple[int, Architecture] | None = None
    """The (task id, student) the worker is training, if any."""


@dataclass
class _Batch:
    queue: deque[Architecture]
    inflight: dict[int, Architecture] = field(default_factory=dict)
    results: dict[str, Evaluation] = field(default_factory=dict)
    crashes: Counter[str] = field(default_factory=Counter)


def _shut_down(workers: list[_Worker]) -> None:
    """Stop every worker: idle ones are asked to exit, busy ones (whose result nobody waits
    for any more) terminated; any still alive after a few seconds are killed."""
    for worker in workers:
        try:
            if worker.task is None and worker.process.is_alive():
                worker.conn.send(None)
            else:
                worker.process.terminate()
        except (OSError, ValueError):
            pass
    for worker in workers:
        worker.process.join(_STOP_SECONDS)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(_STOP_SECONDS)
        worker.conn.close()
    workers.clear()


class ProcessPoolEvaluator:
    """An :class:`~n2n_env.evaluators.Evaluator` that trains a batch's students in parallel,
    one per worker process.

    ``make_evaluator`` builds the real evaluator inside each worker, once; it must be
    picklable by reference (a module-level function, a class, or a ``functools.partial`` of
    one with picklable arguments), since each worker is a fresh ``spawn``-ed interpreter.
    ``threads_per_worker`` torch threads per worker default to the available cores divided
    by ``workers``. The constructor returns once every worker has built its evaluator; a
    ``make_evaluator`` that raises makes it raise a RuntimeError carrying the worker's
    traceback. ``teacher_architecture``, ``teacher_accuracy`` and ``identity()`` are the
    workers' evaluator's (they must agree); where a student trains does not change what its
    result means, so a cache keyed on the identity is shared with sequential runs.

    ``evaluate_many`` sends each distinct student (by signature) to a free worker and
    returns the results in input order, repeats marked ``cache_hit=True``. A worker that
    dies mid-student is replaced and the student retried elsewhere; one student killing
    ``max_crashes`` workers within a batch raises a RuntimeError naming it (the pool stays
    usable). ``progress`` (a callback ``(student, evaluation)`` or a tqdm bar) hears of each
    student as it finishes. Use as a context manager, or call :meth:`close`; workers are
    also stopped when the pool is garbage-collected or the interpreter exits, and exit by
    themselves if the driver is killed. One batch runs at a time (calls are serialised).
    """

    def __init__(self, make_evaluator: Callable[[], Evaluator], workers: int = 2,
                 threads_per_worker: int | None = None, *, max_crashes: int = MAX_CRASHES,
                 progress: Progress | None = None) -> None:
        if not callable(make_evaluator):
            raise TypeError(f"make_evaluator must be a callable that builds an Evaluator, got "
                            f"{make_evaluator!r}")
        self.workers = validate.integer("workers", workers, minimum=1)
        self.threads_per_worker = (default_threads(self.workers) if threads_per_worker is None
                                   else validate.integer("threads_per_worker",
                                                         threads_per_worker, minimum=1))
        self.max_crashes = validate.integer("max_crashes", max_crashes, minimum=1)
        self.progress = progress
        self._make_evaluator = make_evaluator
        self._context = multiprocessing.get_context("spawn")
        self._pool: list[_Worker] = []
        self._tasks = itertools.count()
        self._lock = threading.Lock()
        self._startup_deaths = 0
        self._closed = False
        self._finalizer = weakref.finalize(self, _shut_down, self._pool)
        try:
            self._pool.extend(self._start() for _ in range(self.workers))
            infos = [self._await_ready(worker) for worker in self._pool]
            for info in infos[1:]:
                same_evaluator(infos[0], info)
        except BaseException:
            self.close()
            raise
        self._info = infos[0]
        self.teacher_architecture: Architecture = self._info.teacher_architecture
        self.teacher_accuracy: float = self._info.teacher_accuracy

    # ------------------------------------------------------------------ Evaluator protocol
    def identity(self) -> Mapping[str, str]:
        """The workers' evaluator's identity: parallel training does not change a result."""
        return dict(self._info.identity)

    def evaluate(self, arch: Architecture) -> Evaluation:
        """``arch`` trained on one worker (a batch of one)."""
        return self.evaluate_many([arch])[0]

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        """Train each distinct student of ``archs`` once, on the workers, in parallel; one
        Evaluation per architecture, in order, repeats with ``cache_hit=True``."""
        students = checked_students(archs)
        with self._lock:
            if self._closed:
                raise RuntimeError("this ProcessPoolEvaluator is closed")
            batch = _Batch(queue=deque(distinct(students)))
            while batch.queue or batch.inflight:
                self._dispatch(batch)
                self._step(batch)
        return in_order(students, batch.results)

    # ------------------------------------------------------------------ lifetime
    @property
    def pids(self) -> list[int]:
        """Process ids of the current workers (a replaced worker's successor has a new one)."""
        return [worker.process.pid for worker in self._pool if worker.process.pid is not None]

    def close(self) -> None:
        """Stop the workers (idempotent); the pool cannot evaluate afterwards."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> ProcessPoolEvaluator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a ProcessPoolEvaluator cannot be pickled (it owns worker processes); "
                        "pass make_evaluator to whoever needs one and build it there")

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pids {self.pids}"
        return (f"ProcessPoolEvaluator(workers={self.workers}, "
                f"threads_per_worker={self.threads_per_worker}, {state})")

    # ------------------------------------------------------------------ internals
    def _start(self) -> _Worker:
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main, name="n2n-evaluator-worker", daemon=True,
            args=(self._make_evaluator, self.threads_per_worker, theirs, os.getpid()))
        process.start()
        theirs.close()  # the worker holds the only other end: its death reads as EOF here
        return _Worker(process, ours)

    def _await_ready(self, worker: _Worker) -> WorkerInfo:
        """Block until ``worker`` reports its evaluator built (start-up only)."""
        wait([worker.conn, worker.process.sentinel])
        message = None
        if worker.conn.poll():
            with contextlib.suppress(EOFError, OSError):
                message = worker.conn.recv()
        if message is not None and message[0] == "ready":
            worker.info = message[1]
            return message[1]
        if message is not None and message[0] == "error":
            raise RuntimeError(f"make_evaluator failed in worker process {worker.process.pid}; "
                               f"its traceback:\n{message[1]}")
        worker.process.join(_STOP_SECONDS)
        raise RuntimeError(f"worker process {worker.process.pid} died while building its "
                           f"evaluator ({exit_text(worker.process.exitcode)})")

    def _dispatch(self, batch: _Batch) -> None:
        """Give queued students to the workers that are ready and free."""
        for worker in self._pool:
            if not batch.queue:
                return
            if worker.info is None or worker.task is not None:
                continue
            arch = batch.queue.popleft()
            task = next(self._tasks)
            try:
                worker.conn.send((task, arch))
            except (OSError, ValueError):  # died meanwhile: its sentinel says so next
                batch.queue.appendleft(arch)
                continue
            worker.task = (task, arch)
            batch.inflight[task] = arch

    def _step(self, batch: _Batch) -> None:
        """Wait for the next message or death of any worker and act on it."""
        owners: dict[Any, _Worker] = {}
        for worker in self._pool:
            owners[worker.conn] = worker
            owners[worker.process.sentinel] = worker
        for ready in wait(list(owners)):
            worker = owners[ready]
            if worker not in self._pool:
                continue  # replaced while handling an earlier event of this round
            if ready is worker.conn:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    self._replace(worker, batch)
                    continue
                self._handle(worker, message, batch)
            else:
                self._replace(worker, batch)

    def _handle(self, worker: _Worker, message: tuple[Any, ...], batch: _Batch) -> None:
        kind = message[0]
        if kind == "ready":
            same_evaluator(self._info, message[1])
            worker.info = message[1]
            self._startup_deaths = 0
        elif kind == "error":
            raise RuntimeError(f"make_evaluator failed in replacement worker process "
                               f"{worker.process.pid}; its traceback:\n{message[1]}")
        elif kind in ("done", "raised"):
            task = message[1]
            if worker.task is not None and worker.task[0] == task:
                worker.task = None
            arch = batch.inflight.pop(task, None)
            if arch is None:
                return  # a student of an earlier, interrupted batch
            if kind == "raised":
                raise RuntimeError(f"evaluating {student_label(arch)} raised in worker "
                                   f"process {worker.process.pid}; its traceback:\n"
                                   f"{message[2]}")
            batch.results[arch.signature()] = message[2]
            report(self.progress, arch, message[2])

    def _replace(self, worker: _Worker, batch: _Batch) -> None:
        """``worker`` died: keep whatever it finished, start a successor in its place, and
        queue its student again (first), or give up on a student that keeps killing
        workers."""
        while True:  # a result sent just before dying is still in the pipe
            try:
                if not worker.conn.poll():
                    break
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            self._handle(worker, message, batch)
        worker.process.join(_STOP_SECONDS)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(_STOP_SECONDS)
        worker.conn.close()
        how = exit_text(worker.process.exitcode)
        self._pool[self._pool.index(worker)] = self._start()
        if worker.info is None:
            self._startup_deaths += 1
            if self._startup_deaths >= self.max_crashes:
                raise RuntimeError(f"{self._startup_deaths} replacement workers in a row died "
                                   f"while building their evaluators (the last: {how})")
        if worker.task is None:
            return
        task, arch = worker.task
        if batch.inflight.pop(task, None) is None:
            return
        batch.crashes[arch.signature()] += 1
        crashes = batch.crashes[arch.signature()]
        if crashes >= self.max_crashes:
            raise RuntimeError(f"{student_label(arch)} took down {crashes} worker processes "
                               f"(the last: {how}); giving up on it. Train it alone to see "
                               f"why (out of memory? a crash in native code?)")
        batch.queue.appendleft(arch)
