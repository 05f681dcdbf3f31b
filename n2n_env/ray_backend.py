"""Train a batch of students on Ray actors: one machine's cores and GPUs, or a cluster's.

:class:`RayEvaluator` is the Ray twin of :class:`~n2n_env.workers.ProcessPoolEvaluator`: an
:class:`~n2n_env.evaluators.Evaluator` whose ``evaluate_many`` spreads a batch's distinct
students over ``workers`` Ray actors. Each actor builds its evaluator once, by calling
``make_evaluator`` (teacher, logits and data loaded once per actor), and trains one student
at a time. An actor asks Ray for ``cpus_per_worker`` CPUs and ``gpus_per_student`` GPUs; a
fraction such as 0.25 lets four students share one GPU, which pays when students are small
(the paper's students are). Ray places the actors wherever those resources are: on this
machine (``address=None`` starts a local Ray unless one is running already) or on a cluster
(``address="auto"`` or ``"HOST:PORT"``).

Faults: an actor that dies mid-student (out of memory, a segfault, ``ray.kill``, a lost
node) is restarted by Ray (``max_restarts``) or, once it cannot be, replaced by a fresh one;
its student is retried on the first actor ready for it, and a student that takes down
``max_crashes`` actors in a batch raises a RuntimeError naming it. Ray does not retry the
task itself (``max_task_retries=0``) so that this count, and the choice of actor, stay here.

Ray is an optional dependency (``pip install "n2n[ray]"``): nothing else in n2n imports this
module, and without Ray importing it raises an ImportError saying so. Any cache stays with the
driver: ``CachedEvaluator(RayEvaluator(...), path)``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
import weakref
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

try:
    import ray
    from ray.exceptions import (
        ActorDiedError,
        ActorUnavailableError,
        RayActorError,
        RayTaskError,
    )
except ImportError as error:
    raise ImportError('RayEvaluator needs Ray, an optional dependency of n2n: '
                      'pip install "n2n[ray]"') from error

from n2n_env import validate
from n2n_env.arch import Architecture
from n2n_env.backend_common import (
    MAX_CRASHES,
    Progress,
    WorkerInfo,
    build_evaluator,
    checked_students,
    describe,
    distinct,
    in_order,
    report,
    same_evaluator,
    student_label,
)
from n2n_env.evaluators import Evaluation, Evaluator

MAX_RESTARTS = 10
"""How often Ray restarts one actor (rebuilding its evaluator) before it is replaced."""

UNAVAILABLE_SECONDS = 300.0
"""How long an actor may answer its hand-shake with "temporarily unavailable" (Ray is
restarting it, which takes long on a loaded machine) before the batch gives up."""

STARTUP_PATIENCE_S = 60.0
"""After this long without every actor ready, warn once (with the resources Ray has free):
actors asking for more CPUs or GPUs than the cluster has wait for them forever."""


class EvaluatorActor:
    """The body of one Ray actor: an evaluator built once, when the actor starts (and again
    if Ray restarts it), then asked for one student at a time."""

    def __init__(self, make_evaluator: Callable[[], Evaluator], threads: int) -> None:
        self._evaluator = build_evaluator(make_evaluator, threads)

    def describe(self) -> WorkerInfo:
        """The hand-shake: teacher, teacher accuracy, identity and process id."""
        return describe(self._evaluator)

    def evaluate(self, arch: Architecture) -> Evaluation:
        """One student's Evaluation."""
        return self._evaluator.evaluate(arch)


_RemoteEvaluatorActor = ray.remote(EvaluatorActor)


@dataclass(eq=False)
class _Slot:
    actor: Any
    info: WorkerInfo | None = None
    """Set by the hand-shake; None while the actor (re)starts."""
    busy: bool = False


@dataclass
class _Batch:
    queue: deque[Architecture]
    pending: set[Any] = field(default_factory=set)
    """Object refs of this batch's students in flight."""
    results: dict[str, Evaluation] = field(default_factory=dict)
    crashes: Counter[str] = field(default_factory=Counter)


def _shut_down(slots: list[_Slot], started_ray: bool) -> None:
    """Kill the actors and, if the evaluator started Ray, shut it down (never someone
    else's Ray). Tolerates a Ray that is already gone (at interpreter exit)."""
    with contextlib.suppress(Exception):  # Ray already torn down by its own exit hook
        if ray.is_initialized():
            for slot in slots:
                ray.kill(slot.actor, no_restart=True)
            if started_ray:
                ray.shutdown()
    slots.clear()


class RayEvaluator:
    """An :class:`~n2n_env.evaluators.Evaluator` that trains a batch's students in parallel on
    ``workers`` Ray actors.

    ``make_evaluator`` builds the real evaluator in each actor, once; Ray serialises it with
    cloudpickle, so it must be importable where the actors run (or be defined in the driver's
    script). ``address``: None uses the Ray this process is connected to, else starts a local
    one (``init_kwargs`` go to ``ray.init``); "auto" or "HOST:PORT" connects to a cluster.
    Whatever Ray the evaluator did not start, :meth:`close` leaves running. Each actor
    reserves ``cpus_per_worker`` CPUs (torch gets ``threads_per_worker`` threads, by default
    that many, at least one) and ``gpus_per_student`` GPUs, a fraction letting students share
    a GPU; ``make_evaluator`` should then pick device "cuda" (Ray sets each actor's
    ``CUDA_VISIBLE_DEVICES``).

    The constructor returns once every actor has built its evaluator (a ``make_evaluator``
    that raises makes it raise a RuntimeError with the actor's traceback); the actors must
    agree on teacher and identity, which are the inner evaluator's. ``evaluate_many``
    returns results in input order, each distinct student (by signature) trained once and
    repeats marked ``cache_hit=True``; dead actors are survived as the module docstring
    says. ``progress``: a callback ``(student, evaluation)`` or a tqdm bar, told of each
    finished student. One batch runs at a time (calls are serialised).
    """

    def __init__(self, make_evaluator: Callable[[], Evaluator], workers: int = 2,
                 address: str | None = None, gpus_per_student: float = 0,
                 cpus_per_worker: float = 1, *, threads_per_worker: int | None = None,
                 max_crashes: int = MAX_CRASHES, progress: Progress | None = None,
                 init_kwargs: Mapping[str, Any] | None = None) -> None:
        if not callable(make_evaluator):
            raise TypeError(f"make_evaluator must be a callable that builds an Evaluator, got "
                            f"{make_evaluator!r}")
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be None, 'auto' or 'HOST:PORT', got {address!r}")
        self.workers = validate.integer("workers", workers, minimum=1)
        self.gpus_per_student = validate.number("gpus_per_student", gpus_per_student,
                                                at_least=0)
        self.cpus_per_worker = validate.number("cpus_per_worker", cpus_per_worker, at_least=0)
        self.threads_per_worker = (max(1, int(self.cpus_per_worker))
                                   if threads_per_worker is None else validate.integer(
                                       "threads_per_worker", threads_per_worker, minimum=1))
        self.max_crashes = validate.integer("max_crashes", max_crashes, minimum=1)
        self.progress = progress
        self._make_evaluator = make_evaluator
        self._lock = threading.Lock()
        self._closed = False
        self._startup_failures = 0
        self._unavailable_since: dict[int, float] = {}
        """id(slot) -> when its actor's hand-shake first found it restarting."""
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            ray.init(address=address, **dict(init_kwargs or {}))
            if address is None:  # a Ray of this machine alone: no autoscaler will add nodes
                self._check_fits(ray.cluster_resources())
        self._slots: list[_Slot] = []
        self._inflight: dict[Any, tuple[_Slot, Architecture | None]] = {}
        """Every call in flight: the slot it went to and its student (None: a hand-shake)."""
        self._finalizer = weakref.finalize(self, _shut_down, self._slots, self._started_ray)
        try:
            for _ in range(self.workers):
                slot = _Slot(self._new_actor())
                self._slots.append(slot)
                self._ask(slot)
            self._info = self._await_ready()
        except BaseException:
            self.close()
            raise
        self.teacher_architecture: Architecture = self._info.teacher_architecture
        self.teacher_accuracy: float = self._info.teacher_accuracy

    # ------------------------------------------------------------------ Evaluator protocol
    def identity(self) -> Mapping[str, str]:
        """The actors' evaluator's identity: where a student trains does not change it."""
        return dict(self._info.identity)

    def evaluate(self, arch: Architecture) -> Evaluation:
        """``arch`` trained on one actor (a batch of one)."""
        return self.evaluate_many([arch])[0]

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        """Train each distinct student of ``archs`` once, on the actors, in parallel; one
        Evaluation per architecture, in order, repeats with ``cache_hit=True``."""
        students = checked_students(archs)
        with self._lock:
            if self._closed:
                raise RuntimeError("this RayEvaluator is closed")
            batch = _Batch(queue=deque(distinct(students)))
            while batch.queue or batch.pending:
                self._dispatch(batch)
                self._step(batch)
        return in_order(students, batch.results)

    # ------------------------------------------------------------------ lifetime
    @property
    def actors(self) -> list[Any]:
        """The current actor handles (a replaced actor's successor is a new handle)."""
        return [slot.actor for slot in self._slots]

    @property
    def pids(self) -> list[int | None]:
        """Each actor's process id, as of its last hand-shake (None while it restarts)."""
        return [slot.info.pid if slot.info is not None else None for slot in self._slots]

    @property
    def started_ray(self) -> bool:
        """Whether this evaluator started (or connected) Ray, and so shuts it down on close."""
        return self._started_ray

    def close(self) -> None:
        """Kill the actors, and shut Ray down if this evaluator started it (idempotent)."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a RayEvaluator cannot be pickled (it owns its actors); pass "
                        "make_evaluator to whoever needs one and build it there")

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pids {self.pids}"
        return (f"RayEvaluator(workers={self.workers}, cpus_per_worker={self.cpus_per_worker:g}, "
                f"gpus_per_student={self.gpus_per_student:g}, {state})")

    # ------------------------------------------------------------------ internals
    def _check_fits(self, resources: Mapping[str, float]) -> None:
        """Refuse, at once, actors that a fixed cluster of ``resources`` can never place
        (they would wait for them forever); shuts down the Ray this evaluator started."""
        for name, each in (("GPU", self.gpus_per_student), ("CPU", self.cpus_per_worker)):
            if each > resources.get(name, 0.0):
                if self._started_ray:
                    ray.shutdown()
                raise RuntimeError(f"each Ray actor asks for {each:g} {name}s but this "
                                   f"machine's Ray has {resources.get(name, 0.0):g}; lower "
                                   f"{'gpus_per_student' if name == 'GPU' else 'cpus_per_worker'}"
                                   f" or connect to a cluster that has them (address=)")

    def _new_actor(self) -> Any:
        return _RemoteEvaluatorActor.options(
            num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_student,
            max_restarts=MAX_RESTARTS, max_task_retries=0,
        ).remote(self._make_evaluator, self.threads_per_worker)

    def _ask(self, slot: _Slot) -> None:
        """Send ``slot``'s actor the hand-shake; it is not given students until it answers."""
        slot.info, slot.busy = None, True
        self._inflight[slot.actor.describe.remote()] = (slot, None)

    def _await_ready(self) -> WorkerInfo:
        """Wait for every actor's first hand-shake (start-up only); warn once if that takes
        long, since actors that cannot be placed wait forever."""
        waiting = list(self._inflight)
        started, warned = time.monotonic(), False
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=5.0)
            if not done and not warned and time.monotonic() - started > STARTUP_PATIENCE_S:
                warned = True
                warnings.warn(
                    f"RayEvaluator: {len(waiting)} of {self.workers} actors not ready after "
                    f"{STARTUP_PATIENCE_S:g} s; each asks for {self.cpus_per_worker:g} CPUs and "
                    f"{self.gpus_per_student:g} GPUs, Ray has {ray.available_resources()} "
                    f"free. Lower workers, cpus_per_worker or gpus_per_student if they cannot "
                    f"fit.", RuntimeWarning, stacklevel=3)
            for ref in done:
                slot, _ = self._inflight.pop(ref)
                try:
                    slot.info = ray.get(ref)
                except RayActorError as error:
                    raise RuntimeError(f"make_evaluator failed in a Ray actor:\n{error}"
                                       ) from error
                slot.busy = False
        first = self._slots[0].info
        assert first is not None
        for slot in self._slots[1:]:
            assert slot.info is not None
            same_evaluator(first, slot.info)
        return first

    def _dispatch(self, batch: _Batch) -> None:
        """Give queued students to the actors that are ready and free."""
        for slot in self._slots:
            if not batch.queue:
                return
            if slot.info is None or slot.busy:
                continue
            arch = batch.queue.popleft()
            ref = slot.actor.evaluate.remote(arch)
            slot.busy = True
            self._inflight[ref] = (slot, arch)
            batch.pending.add(ref)

    def _step(self, batch: _Batch) -> None:
        """Wait for the next call to finish (or fail) and act on it."""
        (ref,), _ = ray.wait(list(self._inflight), num_returns=1)
        slot, arch = self._inflight.pop(ref)
        slot.busy = False
        ours = ref in batch.pending
        batch.pending.discard(ref)
        try:
            value = ray.get(ref)
        except RayActorError as error:
            self._actor_failed(slot, arch if ours else None, arch is None, batch, error)
            return
        except RayTaskError as error:
            if ours and arch is not None:
                raise RuntimeError(f"evaluating {student_label(arch)} raised in a Ray actor:\n"
                                   f"{error}") from error
            return  # a student of an earlier, interrupted batch
        if arch is None:
            same_evaluator(self._info, value)
            slot.info = value
            self._startup_failures = 0
            self._unavailable_since.pop(id(slot), None)
        elif ours:
            batch.results[arch.signature()] = value
            report(self.progress, arch, value)

    def _actor_failed(self, slot: _Slot, arch: Architecture | None, handshake: bool,
                      batch: _Batch, error: RayActorError) -> None:
        """``slot``'s actor died or became unreachable during a call: wait for Ray's restart
        (or start a fresh actor if it is dead for good) and queue the student ``arch`` of
        this batch again, first, unless it has taken down too many actors already."""
        if error.actor_init_failed:
            raise RuntimeError(f"make_evaluator failed in a Ray actor (re)starting:\n{error}"
                               ) from error
        if isinstance(error, ActorDiedError):  # no restart left, or killed for good
            with contextlib.suppress(Exception):  # already gone
                ray.kill(slot.actor, no_restart=True)
            slot.actor = self._new_actor()
        if handshake and isinstance(error, ActorUnavailableError):
            # Still restarting (slow on a loaded machine): not a death; ask again shortly,
            # for at most UNAVAILABLE_SECONDS in a row.
            since = self._unavailable_since.setdefault(id(slot), time.monotonic())
            if time.monotonic() - since > UNAVAILABLE_SECONDS:
                raise RuntimeError(f"a Ray actor stayed unavailable for over "
                                   f"{UNAVAILABLE_SECONDS:g} s while restarting (the last: "
                                   f"{error})") from error
            time.sleep(0.2)
        elif handshake:
            self._startup_failures += 1
            if self._startup_failures >= self.max_crashes:
                raise RuntimeError(f"{self._startup_failures} Ray actors in a row died while "
                                   f"(re)starting (the last: {error})") from error
        self._ask(slot)  # given students again once it answers
        if arch is None:
            return
        batch.crashes[arch.signature()] += 1
        crashes = batch.crashes[arch.signature()]
        if crashes >= self.max_crashes:
            raise RuntimeError(f"{student_label(arch)} took down {crashes} Ray actors (the "
                               f"last: {type(error).__name__}); giving up on it. Train it "
                               f"alone to see why (out of memory? a crash in native code?)")
        batch.queue.appendleft(arch)
