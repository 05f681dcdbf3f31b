"""Latency as a measured quantity: per-layer timings on disk, summed per architecture.

A student's latency is estimated as NetAdapt does (Yang et al., ECCV 2018): the sum of the
latencies of the parts of its forward pass, each part (a layer, a projection shortcut, a
residual addition) timed once on its own and kept in a per-layer table on disk
(:class:`~n2n_env.latency_table.LatencyTable`), so that a part already timed is never timed
again, in this run or any later one. ``benchmarks/bench_latency.py`` compares the estimate
with timing whole models and measures how much the table's timings move between runs
(docs/benchmarks.md).

A part's table key is a hash of the part (its layer's fields other than ``origin``, or the
projection's, and its input shape) and of the timing conditions
(:func:`n2n_env.latency_timing.conditions`: device kind and model, batch size, CPU threads,
torch version, precision, memory layout, timing method). Latency is timed on the
evaluation device unless :class:`LatencySettings` names another, with ``batch_size`` images
per call, as the median of ``repeats`` samples after ``warmup`` calls.

Latency reaches the environments only through their evaluator: :class:`LatencyEvaluator`
wraps any evaluator, outermost (outside the SQLite evaluation cache), adds
``extra["latency_ms"]`` and ``extra["latency_compression"]`` to every evaluation it
returns, and offers :meth:`LatencyEvaluator.latency_ms` for the action wall. Because it
sits outside the cache, a cached evaluation never carries a latency measured under other
settings: the latency is looked up in the table, under the current settings, every time.
This module imports torch only when it times something.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from n2n_env import validate
from n2n_env.arch import Architecture, Layer
from n2n_env.arch_trace import projection_output
from n2n_env.evaluators import Evaluation, Evaluator, evaluate_each
from n2n_env.latency_table import LatencyTable, TimingRow
from n2n_env.reward import LATENCY, LATENCY_COMPRESSION

if TYPE_CHECKING:
    from n2n_env.latency_timing import TimingSetup

__all__ = ["LATENCY", "LATENCY_COMPRESSION", "LatencyEvaluator", "LatencyMeter", "LatencyPart",
           "LatencySettings", "Timer", "architecture_parts", "default_table_path", "part_key"]

LATENCY_DEVICES = "'cpu', 'cuda' or 'cuda:N' (None: the evaluation device)"
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+)$")
MAX_REMEMBERED = 4096
"""Architectures whose parts a meter remembers (the action wall asks about many)."""


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured (``n2n compress --latency-*``; ``gym.make(latency=...)``)."""

    device: str | None = None
    """``cpu``, ``cuda`` or ``cuda:N``; None: the device students are evaluated on."""
    batch_size: int = 1
    """Images per timed forward call (1: the latency of one request)."""
    repeats: int = 20
    """Timed samples per part; the median is kept."""
    warmup: int = 3
    """Untimed calls before the samples."""
    threads: int | None = 1
    """CPU intra-op threads while timing (None: torch's count at the time). One thread by
    default: it does not move with the thread budget of concurrent trainings."""
    table: str | None = None
    """The per-layer table file (None: :func:`default_table_path`, shared by runs)."""

    def __post_init__(self) -> None:
        if self.device is not None:
            if not isinstance(self.device, str) or not _DEVICE.match(self.device):
                raise ValueError(f"latency device must be one of {LATENCY_DEVICES}, got "
                                 f"{self.device!r}")
            from n2n_env.device import resolve_device

            resolve_device(self.device)  # a device this machine lacks fails now
        validate.integer("latency batch_size", self.batch_size, minimum=1)
        validate.integer("latency repeats", self.repeats, minimum=1)
        validate.integer("latency warmup", self.warmup, minimum=0)
        if self.threads is not None:
            validate.integer("latency threads", self.threads, minimum=1)
        if isinstance(self.table, os.PathLike):
            object.__setattr__(self, "table", os.fspath(self.table))
        if self.table is not None and not isinstance(self.table, str):
            raise TypeError(f"latency table must be a file path or None, got {self.table!r}")

    @classmethod
    def coerce(cls, value: LatencySettings | Mapping[str, Any] | bool | None
               ) -> LatencySettings | None:
        """``value`` as settings: a dict of their fields, True for the defaults, None or
        False for none."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            validate.known_keys("latency settings", value,
                                [f.name for f in dataclasses.fields(cls)])
            return cls(**value)
        raise TypeError(f"latency must be LatencySettings, a dict of its fields, True or "
                        f"None, got {value!r}")


def default_table_path() -> str:
    """``$N2N_HOME/latency.sqlite``: one table for every run on this machine."""
    from n2n_env.checkpoints import n2n_home

    return os.fspath(n2n_home() / "latency.sqlite")


@dataclass(frozen=True)
class LatencyPart:
    """One separately timed piece of a forward pass: ``op`` is ``layer``, ``projection``
    or ``add``; ``config`` the canonical JSON of the layer's (or projection's) fields
    other than ``origin`` (empty for an addition); ``input_shape`` one sample's shape."""

    op: str
    config: str
    input_shape: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        return {"op": self.op, "config": json.loads(self.config),
                "input_shape": list(self.input_shape)}


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def layer_part(layer: Layer, shape: tuple[int, ...]) -> LatencyPart:
    """The part of ``layer`` fed ``shape``: every field but ``origin`` goes into the key,
    so fields the architecture model gains later are timed apart without a change here."""
    fields = {k: v for k, v in dataclasses.asdict(layer).items() if k != "origin"}
    return LatencyPart("layer", _canonical(fields), tuple(shape))


def architecture_parts(arch: Architecture) -> tuple[LatencyPart, ...]:
    """The parts of ``arch``'s forward pass, in order: each layer, and for each residual
    block its projection shortcut (if any) and its addition (if its body is not empty)."""
    reason = arch.degenerate_reason(max_classifier_inputs=2**62)
    if reason is not None:
        raise ValueError(f"cannot time a degenerate architecture: {reason}")
    in_shapes, out_shapes = arch.input_shapes(), arch.output_shapes()
    parts: list[LatencyPart] = []
    shape: tuple[int, ...] = arch.input_shape
    block_input = shape
    for op, index in arch.execution_order():
        if op == "layer":
            parts.append(layer_part(arch.layers[index], in_shapes[index]))  # type: ignore[arg-type]
            shape = out_shapes[index]  # type: ignore[assignment]
            continue
        if op == "open":
            block_input = shape
            continue
        source = block_input if op == "close" else shape
        projection = arch.blocks[index].projection
        shortcut = source
        if projection is not None:
            parts.append(LatencyPart("projection", _canonical(dataclasses.asdict(projection)),
                                     source))
            shortcut = projection_output(projection, source)
        if op == "close":
            parts.append(LatencyPart("add", "{}", shape))
        shape = shortcut
    return tuple(parts)


def part_key(part: LatencyPart, conditions: Mapping[str, Any]) -> str:
    """The table key of ``part`` timed under ``conditions``: sha256 of both, canonical."""
    text = _canonical({"part": part.describe(), "conditions": dict(conditions)})
    return hashlib.sha256(text.encode()).hexdigest()


Timer = Callable[[LatencyPart, "TimingSetup"], Sequence[float]]
"""Times one part under a setup: samples in milliseconds (default:
:func:`n2n_env.latency_timing.time_part`)."""


class LatencyMeter:
    """Estimates architectures' latencies from the per-layer table, timing (and storing)
    only the parts the table does not hold yet.

    ``default_device`` is the evaluation device, used when the settings name none.
    ``timer`` replaces the real timing (tests count calls through it). ``timings`` counts
    the parts this meter has timed; a part found in memory or in the file is not timed.
    """

    def __init__(self, settings: LatencySettings | None = None,
                 default_device: str | None = None, timer: Timer | None = None) -> None:
        self.settings = settings or LatencySettings()
        if not isinstance(self.settings, LatencySettings):
            raise TypeError(f"settings must be LatencySettings, got {settings!r}")
        self.default_device = default_device
        self.timer = timer
        self.timings = 0
        self._table: LatencyTable | None = None
        self._setup: TimingSetup | None = None
        self._conditions: dict[str, Any] | None = None
        self._known: dict[str, float] = {}
        self._parts: dict[Architecture, tuple[LatencyPart, ...]] = {}
        self._keys: dict[LatencyPart, str] = {}

    @property
    def table(self) -> LatencyTable:
        """The per-layer table (opened, or created, on first use)."""
        if self._table is None:
            self._table = LatencyTable(self.settings.table or default_table_path())
        return self._table

    @property
    def setup(self) -> TimingSetup:
        """The resolved timing setup (the device resolved on first use)."""
        if self._setup is None:
            from n2n_env.device import resolve_device
            from n2n_env.latency_timing import TimingSetup

            device = resolve_device(self.settings.device or self.default_device)
            self._setup = TimingSetup(str(device), self.settings.batch_size,
                                      self.settings.repeats, self.settings.warmup,
                                      self.settings.threads)
        return self._setup

    @property
    def conditions(self) -> dict[str, Any]:
        """The timing conditions every key of this meter includes."""
        if self._conditions is None:
            from n2n_env.latency_timing import conditions

            self._conditions = conditions(self.setup)
        return dict(self._conditions)

    def identity(self) -> dict[str, str]:
        """What decides this meter's numbers (an evaluation cache key includes it)."""
        return {"latency": _canonical(self.conditions)}

    def parts(self, arch: Architecture) -> tuple[LatencyPart, ...]:
        """:func:`architecture_parts` of ``arch``, remembered."""
        found = self._parts.get(arch)
        if found is None:
            if len(self._parts) >= MAX_REMEMBERED:
                self._parts.clear()
            found = self._parts[arch] = architecture_parts(arch)
        return found

    def breakdown(self, arch: Architecture) -> list[tuple[LatencyPart, float]]:
        """Each part of ``arch`` with its table latency (ms), in forward order."""
        parts = self.parts(arch)
        medians = self._medians(parts)
        return [(part, medians[part]) for part in parts]

    def latency_ms(self, arch: Architecture) -> float:
        """The estimated latency of ``arch``: the sum of its parts' table latencies."""
        return sum(ms for _, ms in self.breakdown(arch))

    def latencies_ms(self, archs: Sequence[Architecture]) -> list[float]:
        """:meth:`latency_ms` of each, timing the parts they lack in one pass."""
        self._medians([part for arch in archs for part in self.parts(arch)])
        return [self.latency_ms(arch) for arch in archs]

    def _medians(self, parts: Sequence[LatencyPart]) -> dict[LatencyPart, float]:
        conditions = self.conditions
        keys = {part: self._key(part, conditions) for part in parts}
        missing = {key for key in keys.values() if key not in self._known}
        if missing:
            self._known.update(self.table.lookup(missing))
        rows = []
        for part, key in keys.items():
            if key in self._known:
                continue
            samples = self._time(part)
            self._known[key] = statistics.median(samples)
            rows.append(TimingRow(key, {"part": part.describe(), "conditions": conditions},
                                  self._known[key], tuple(samples)))
        self.table.store(rows)
        return {part: self._known[key] for part, key in keys.items()}

    def _key(self, part: LatencyPart, conditions: Mapping[str, Any]) -> str:
        key = self._keys.get(part)
        if key is None:
            if len(self._keys) >= 16 * MAX_REMEMBERED:
                self._keys.clear()
            key = self._keys[part] = part_key(part, conditions)
        return key

    def _time(self, part: LatencyPart) -> list[float]:
        if self.timer is None:
            from n2n_env.latency_timing import time_part

            samples = list(time_part(part, self.setup))
        else:
            samples = [float(s) for s in self.timer(part, self.setup)]
        if not samples or not all(s >= 0 for s in samples):
            raise ValueError(f"timing {part.describe()} gave {samples!r}; expected "
                             "non-negative milliseconds")
        self.timings += 1
        return samples


class LatencyEvaluator:
    """Any evaluator, with each evaluation's latency added (see the module docstring).

    Every evaluation of a student that is neither degenerate nor failed gains
    ``extra["latency_ms"]`` (its estimate from the table) and
    ``extra["latency_compression"]`` (1 - that / the teacher's), and
    :meth:`latency_ms` estimates any architecture, finished or not. Put it outermost: a
    reward cache inside it stores evaluations without latency. Its identity adds the
    timing conditions, so a cache around it would not mix latency settings either.
    """

    def __init__(self, inner: Evaluator, meter: LatencyMeter | LatencySettings | None = None
                 ) -> None:
        if callable(getattr(inner, "latency_ms", None)):
            raise ValueError(f"{type(inner).__name__} already measures latency; wrap it once")
        self.inner = inner
        self.meter = meter if isinstance(meter, LatencyMeter) else LatencyMeter(meter)
        self.teacher_architecture: Architecture = inner.teacher_architecture
        self._teacher_ms: float | None = None

    @property
    def teacher_accuracy(self) -> float:
        return float(self.inner.teacher_accuracy)

    @property
    def teacher_latency_ms(self) -> float:
        """The teacher's estimated latency (timed on first use)."""
        if self._teacher_ms is None:
            measured = self.meter.latency_ms(self.teacher_architecture)
            if not measured > 0:
                raise ValueError(f"the teacher's latency was measured as {measured} ms; "
                                 "latency compression needs a positive one")
            self._teacher_ms = measured
        return self._teacher_ms

    def latency_ms(self, arch: Architecture) -> float:
        """The estimated latency (ms) of any buildable architecture."""
        return self.meter.latency_ms(arch)

    def identity(self) -> Mapping[str, str]:
        return {**self.inner.identity(), **self.meter.identity()}

    def evaluate(self, arch: Architecture) -> Evaluation:
        return self.evaluate_many([arch])[0]

    def evaluate_many(self, archs: Sequence[Architecture]) -> list[Evaluation]:
        archs = list(archs)
        many = getattr(self.inner, "evaluate_many", None)
        evaluations = list(many(archs) if callable(many) else evaluate_each(self.inner, archs))
        if len(evaluations) != len(archs):
            raise RuntimeError(f"{type(self.inner).__name__}.evaluate_many returned "
                               f"{len(evaluations)} evaluations for {len(archs)} students")
        timed = [arch for arch, result in zip(archs, evaluations) if result.ok]
        latencies = dict(zip(timed, self.meter.latencies_ms(timed)))
        return [self._with_latency(result, latencies[arch]) if result.ok else result
                for arch, result in zip(archs, evaluations)]

    def _with_latency(self, evaluation: Evaluation, latency: float) -> Evaluation:
        extra = {**evaluation.extra, LATENCY: latency,
                 LATENCY_COMPRESSION: 1.0 - latency / self.teacher_latency_ms}
        return dataclasses.replace(evaluation, extra=extra)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()
