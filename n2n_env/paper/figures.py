"""The curves behind a paper table, as the paper's Figures 3 and 10 draw them.

Tables 1, 3 and 4 (searches): for each stage, the mean reward of each iteration's 5
students, the best reward found so far, their mean accuracy and mean compression, per
iteration, one colour per agent. A learning agent's mean reward climbs while random
search's stays flat, which is the plain picture of what the policy learnt (Figure 3).
Table 5 (transfer): each update's mean reward on the target teacher, pre-trained against
scratch policies (Figure 10). Table 2 has no curves.

Every seed is drawn as a thin line and, for two seeds or more, their mean as a thick one
(over the iterations all of them reached); a lone seed is drawn thick. Finished searches
keep their curves in their result file (``result["curves"]``); unfinished ones are read
from their run folder or its committed copy in ``carry/`` (whichever has spent more time
on this very unit), so a table written mid-run shows how far its searches got.
:func:`panels` gives the numbers (tested); :func:`write` draws them.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from n2n_env.paper import carry
from n2n_env.paper.runner import UnitState, read_tally
from n2n_env.paper.settings import PaperSettings
from n2n_env.paper.tables import AGENT_NAMES, ZOO_NAMES
from n2n_env.run_files import CURVE_FIELDS, STAGE_LABELS, curves_of_run

__all__ = ["Panel", "figure_name", "panels", "write"]

YLABELS = {"reward_mean": "mean reward of the 5 students",
           "best_reward_so_far": "best reward so far",
           "accuracy_mean": "mean validation accuracy", "compression_mean": "mean compression"}
"""The y-axis of each search curve."""
SEARCH_TABLES = (1, 3, 4)
"""The tables whose figure draws their searches' curves."""
Curves = Mapping[str, Mapping[str, Sequence[float | None]]]
"""stage -> field -> one value per iteration."""


@dataclass(frozen=True)
class Panel:
    """One plot: a line per label and seed, one value per iteration."""

    title: str
    ylabel: str
    lines: Mapping[str, Mapping[int, tuple[float, ...]]]
    """label (an agent, a policy) -> seed -> values of iterations 1, 2, ..."""


def figure_name(table: int) -> str:
    """The figure's file name in the work folder."""
    return f"figure-{table}.png"


def _search_curves(state: UnitState, work: Path) -> Curves:
    """A search's curves: from its result, else from whichever of its run folder and
    carried copy belongs to this unit (same spec in ``unit.json``) and has spent more time.
    Unreadable files count as no curves: a figure never fails a table."""
    if state.record is not None and "curves" in state.record["result"]:
        return state.record["result"]["curves"]
    spec = json.loads(json.dumps(state.unit.spec))
    runs = []
    for run in (work / "runs" / state.unit.id, carry.carry_dir(work, state.unit.id)):
        tally = read_tally(run)
        if tally is not None and (tally.get("identity") or {}).get("spec") == spec:
            runs.append((float(tally["seconds"]), run))
    for _, run in sorted(runs, key=lambda entry: entry[0], reverse=True):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, csv.Error):
            curves = curves_of_run(run, state.unit.spec["stages"])
            if curves:
                return curves
    return {}


def _values(values: Sequence[float | None]) -> tuple[float, ...]:
    """Floats, with NaN where an iteration had no value (None in JSON)."""
    return tuple(math.nan if value is None else float(value) for value in values)


def panels(settings: PaperSettings, states: Sequence[UnitState], work: Path
           ) -> list[list[Panel]]:
    """The figure of ``settings.table`` as rows of panels (none for Table 2, or before any
    curve exists)."""
    if settings.table == 5:
        return _transfer_panels(states)
    if settings.table not in SEARCH_TABLES:
        return []
    by_stage: dict[str, dict[str, dict[str, dict[int, tuple[float, ...]]]]] = {}
    for state in states:
        if state.unit.kind != "compress":
            continue
        agent = AGENT_NAMES.get(state.unit.spec["agent"], state.unit.spec["agent"])
        for stage, fields in _search_curves(state, work).items():
            for name in CURVE_FIELDS:
                lines = by_stage.setdefault(stage, {}).setdefault(name, {})
                lines.setdefault(agent, {})[int(state.unit.spec["seed"])] = _values(
                    fields[name])
    return [[Panel(f"{STAGE_LABELS.get(stage, stage)} ({stage})", YLABELS[name],
                   by_stage[stage][name]) for name in CURVE_FIELDS]
            for stage in ("removal", "shrink") if stage in by_stage]


def _transfer_panels(states: Sequence[UnitState]) -> list[list[Panel]]:
    pairs: dict[tuple[str, str], dict[str, dict[int, tuple[float, ...]]]] = {}
    for state in states:
        if state.unit.kind != "transfer" or state.record is None:
            continue
        spec, result = state.unit.spec, state.record["result"]
        pair = (spec["source"], spec["target"])
        label = "pre-trained" if spec["policy"] == "pretrained" else "scratch"
        pairs.setdefault(pair, {}).setdefault(label, {})[int(spec["seed"])] = _values(
            result["iteration_rewards"])
    return [[Panel(f"{_teacher_name(source)} → {_teacher_name(target)}",
                   "mean reward of the 5 students", lines)
             for (source, target), lines in pairs.items()]] if pairs else []


def _teacher_name(unit_id: str) -> str:
    """``teacher-vgg11-w0.125-cifar10-14k`` -> ``VGG-11``."""
    name = unit_id.removeprefix("teacher-").split("-")[0]
    return ZOO_NAMES.get(name, name)


def write(settings: PaperSettings, states: Sequence[UnitState], work: Path) -> Path | None:
    """Draw the table's figure to ``work/figure-N.png``; its path, or None (and no file)
    when the table has no curves yet."""
    rows = panels(settings, states, work)
    path = work / figure_name(settings.table)
    if not rows:
        path.unlink(missing_ok=True)
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({label for row in rows for panel in row for label in panel.lines})
    colours = {label: f"C{index}" for index, label in enumerate(labels)}  # same in every panel
    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(3.6 * columns, 3.0 * len(rows)),
                                squeeze=False)
    for row, row_axes in zip(rows, axes, strict=True):
        for panel, axis in zip(row, row_axes, strict=False):
            _draw(axis, panel, colours)
        for axis in row_axes[len(row):]:
            axis.set_visible(False)
    figure.suptitle(f"Table {settings.table}: per iteration of 5 students "
                    "(thin: one seed; thick: mean over seeds)", fontsize=10)
    figure.tight_layout()
    pending = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")  # --jobs workers too
    figure.savefig(pending, dpi=90, metadata={"Software": None})
    plt.close(figure)
    pending.replace(path)
    return path


def _draw(axis: Any, panel: Panel, colours: Mapping[str, str]) -> None:
    import numpy as np

    for label, seeds in sorted(panel.lines.items()):
        colour = colours[label]
        lone = len(seeds) == 1  # its one seed is its mean: drawn thick
        for values in seeds.values():
            axis.plot(range(1, len(values) + 1), values, color=colour,
                      alpha=1.0 if lone else 0.35, lw=2 if lone else 0.8,
                      marker="." if len(values) == 1 else None)  # one point still shows
        common = min(len(values) for values in seeds.values())
        if not lone and common:
            mean = np.mean([values[:common] for values in seeds.values()], axis=0)
            axis.plot(range(1, common + 1), mean, color=colour, lw=2,
                      marker="." if common == 1 else None)
        axis.plot([], [], color=colour, lw=2,
                  label=f"{label} ({len(seeds)} seed{'' if lone else 's'})")
    axis.set_title(panel.title, fontsize=9)
    axis.set_xlabel("iteration", fontsize=8)
    axis.set_ylabel(panel.ylabel, fontsize=8)
    axis.tick_params(labelsize=7)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
