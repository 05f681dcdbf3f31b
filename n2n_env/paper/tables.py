"""The body of each table's markdown: the paper's row beside ours.

Each ``tableN`` function takes the table's settings and the states of its units
(:func:`n2n_env.paper.runner.states`) and returns markdown lines: a header row, then one
row per model with the paper's cells (as printed, :mod:`n2n_env.paper.reference`), ours
(mean ± std over the finished seeds, test accuracy, deltas and compression against our
own teacher) and the per-seed values. Rows whose units have not finished read
``pending``; a row the paper does not have reads ``—`` in its columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from n2n_env.paper import cells
from n2n_env.paper import reference as paper
from n2n_env.paper.runner import UnitState
from n2n_env.paper.settings import PaperSettings

__all__ = ["AGENT_NAMES", "BODIES", "STUDENT_NAMES", "ZOO_NAMES", "md_row", "paper_row"]

DASH = "—"
ZOO_NAMES = {"vgg11": "VGG-11", "vgg13": "VGG-13", "vgg16": "VGG-16", "vgg19": "VGG-19",
             "resnet18": "ResNet-18", "resnet34": "ResNet-34", "conv4": "Conv4",
             "conv3": "Conv3"}
"""Our zoo names as the paper writes them."""
AGENT_NAMES = {"reinforce": "REINFORCE", "random": "random search",
               "actor-critic": "actor-critic"}
STUDENT_NAMES = {"fitnet4": "FitNet-4", "vgg-small": "VGG-small",
                 "squeezenet1_1": "SqueezeNet1.1"}
Result = Mapping[str, Any]


def md_row(cells_: Sequence[str]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(c.replace("|", "/") for c in cells_) + " |"


def _header(columns: Sequence[str]) -> list[str]:
    return [md_row(columns), md_row(["---"] * len(columns))]


def _done(states: Sequence[UnitState], kind: str,
          keep: Callable[[UnitState], bool] = lambda s: True) -> list[tuple[int, Result]]:
    """(seed, result) of the finished units of ``kind`` that ``keep`` accepts."""
    return [(int(s.unit.spec.get("seed", 0)), s.record["result"]) for s in states
            if s.unit.kind == kind and s.record is not None and keep(s)]


def _count(states: Sequence[UnitState], kind: str,
           keep: Callable[[UnitState], bool] = lambda s: True) -> int:
    return sum(s.unit.kind == kind and keep(s) for s in states)


def _finished(states: Sequence[UnitState], kind: str) -> list[UnitState]:
    return [s for s in states if s.unit.kind == kind and s.record is not None]


def _row(result: Result, name: str) -> Result:
    return next(row for row in result["rows"] if row["name"] == name)


def _student(entries: Sequence[tuple[int, Result]], name: str) -> dict[str, Any]:
    """Our cells for the student row ``name`` of finished compress results."""
    rows = [(seed, _row(r, name), _row(r, "Teacher")) for seed, r in entries]
    acc = [row["test_accuracy"] for _, row, _ in rows]
    params = [row["params"] for _, row, _ in rows]
    return {
        "acc": cells.pct(acc), "params": cells.count(params),
        "delta": cells.points([row["test_accuracy"] - t["test_accuracy"] for _, row, t in rows]),
        "compr": cells.ratio([t["params"] / row["params"] for _, row, t in rows]),
        "seeds": cells.per_seed([(seed, f"{100 * row['test_accuracy']:.2f}%, "
                                        f"{row['params']:,} ({t['params'] / row['params']:.1f}x)")
                                 for seed, row, t in rows]),
        "params_list": params}


def _partial(name: str, finished: int, planned: int) -> str:
    return name if finished in (0, planned) else f"{name} ({finished} of {planned} seeds)"


def paper_row(settings: PaperSettings, model: str) -> paper.PaperRow | None:
    """The paper's row ``model`` of the table ``settings.table`` (1-4) for the table's own
    dataset and teacher, if the paper ran that pair (ResNet-18 on cifar10-14k meets its
    CIFAR-10 ResNet-18 rows; conv4 on digits meets none)."""
    return paper.find(paper.ROWS[settings.table], paper.DATASETS.get(settings.dataset or "", ""),
                      ZOO_NAMES.get(settings.teacher or "", ""), model)


def _paper_cells(row: paper.PaperRow | None, fields: Sequence[str]) -> list[str]:
    return [DASH] * len(fields) if row is None else [getattr(row, f) for f in fields]


def _teacher(states: Sequence[UnitState]) -> Result | None:
    """The result of the table's (first) teacher unit, if it has finished."""
    for state in states:
        if state.unit.kind == "teacher":
            return state.record["result"] if state.record else None
    return None


def _teacher_cells(result: Result | None, order: str) -> list[str]:
    """Our teacher's cells, by ``order``: a(ccuracy), p(arams), d(elta) and c(ompression)
    dashes, 1 (``1x``), n (``N/A``)."""
    values = {"a": cells.PENDING, "p": cells.PENDING, "d": DASH, "c": DASH, "1": "1x",
              "n": "N/A"}
    if result is not None:
        values.update(a=cells.pct([result["test_accuracy"]]), p=f"{result['params']:,}")
    return [values[key] for key in order]


def table1(settings: PaperSettings, states: Sequence[UnitState]) -> list[str]:
    """Table 1: teacher, stage-1 and stage 1+2 students per agent, beside the paper's rows for
    the same dataset and teacher (:func:`paper_row`)."""
    assert settings.agents is not None and settings.seeds is not None
    fields = ("accuracy", "params", "delta", "compression")
    lines = _header(["Model", "Paper acc.", "Paper #params", "Paper Δ acc.", "Paper compr.",
                     "Our acc.", "Our #params", "Our Δ acc. (points)", "Our compr.",
                     "Per seed: acc., #params (compr.)"])
    teacher_name = ZOO_NAMES.get(settings.teacher or "", settings.teacher or "")
    lines.append(md_row([f"Teacher ({teacher_name})",
                         *_paper_cells(paper_row(settings, "Teacher"),
                                       fields),
                         *_teacher_cells(_teacher(states), "apdc"), DASH]))
    for agent in settings.agents:
        def mine(state: UnitState, agent: str = agent) -> bool:
            return state.unit.label == agent

        entries = _done(states, "compress", mine)
        planned = _count(states, "compress", mine)
        for name in ("Student (Stage1)", "Student (Stage1+Stage2)"):
            ours = _student(entries, name) if entries else None
            reference = (paper_row(settings, name)
                         if agent == "reinforce" else None)
            lines.append(md_row([
                _partial(f"{name}, {AGENT_NAMES.get(agent, agent)}", len(entries), planned),
                *_paper_cells(reference, fields), *_ours(ours, ("acc", "params", "delta",
                                                                 "compr", "seeds"))]))
    return lines


def _ours(ours: Mapping[str, Any] | None, keys: Sequence[str]) -> list[str]:
    return [cells.PENDING] * len(keys) if ours is None else [str(ours[k]) for k in keys]


def table2(settings: PaperSettings, states: Sequence[UnitState]) -> list[str]:
    """Table 2: teacher, pruning (best of N) and our stage-1 REINFORCE student."""
    fields = ("accuracy", "params", "compression", "delta")
    lines = _header(["Model", "Paper acc.", "Paper #params", "Paper compr.", "Paper Δ acc.",
                     "Our acc.", "Our #params", "Our compr.", "Our Δ acc. (points)",
                     "Per run: acc., #params (compr.)"])
    teacher = _teacher(states)
    lines.append(md_row(["Teacher (" + ZOO_NAMES.get(settings.teacher or "", "") + ")",
                         *_paper_cells(paper_row(settings, "Teacher"),
                                       fields), *_teacher_cells(teacher, "apcd"), DASH]))
    pruning = _done(states, "prune")
    paper_pruning = paper_row(settings, "Pruning")
    if not pruning or teacher is None:
        lines.append(md_row([f"Pruning (best of {settings.prune_runs})",
                             *_paper_cells(paper_pruning, fields), *[cells.PENDING] * 5]))
        lines.append(md_row([f"Pruning (all {settings.prune_runs} runs)", *[DASH] * 4,
                             *[cells.PENDING] * 5]))
    else:
        result = pruning[0][1]
        runs = result["runs"]
        best = next(run for run in runs if run["seed"] == result["best_seed"])
        t_acc, t_params = teacher["test_accuracy"], teacher["params"]

        def cells_of(chosen: Sequence[Result]) -> list[str]:
            return [cells.pct([r["test_accuracy"] for r in chosen]),
                    cells.count([r["params"] for r in chosen]),
                    cells.ratio([t_params / r["params"] for r in chosen]),
                    cells.points([r["test_accuracy"] - t_acc for r in chosen])]

        per_run = cells.per_seed([(r["seed"], f"{100 * r['test_accuracy']:.2f}%, "
                                              f"{r['params']:,} ({t_params / r['params']:.1f}x), "
                                              f"{r['steps']} steps"
                                              f"{' (nothing pruned)' if r['steps'] == 0 else ''}, "
                                              f"stopped by {r['stop_reason']}")
                                  for r in runs])
        lines.append(md_row([f"Pruning (best of {len(runs)}: seed {best['seed']}, by val. acc.)",
                             *_paper_cells(paper_pruning, fields), *cells_of([best]), per_run]))
        lines.append(md_row([f"Pruning (all {len(runs)} runs)", *[DASH] * 4, *cells_of(runs),
                             DASH]))
    entries = _done(states, "compress")
    planned = _count(states, "compress")
    ours = _student(entries, "Student (Stage1)") if entries else None
    reference_id = pruning[0][1]["reference"]["unit"] if pruning else None
    chosen = [(int(s.unit.spec["seed"]), s.record["result"]) for s in _finished(states, "compress")
              if s.unit.id == reference_id]
    ref = _student(chosen, "Student (Stage1)") if chosen else None
    paper_ours = paper_row(settings, "Ours")
    label = f"seed {chosen[0][0]}, the pruning reference" if chosen else "the pruning reference"
    lines.append(md_row([f"Ours: Student (Stage1), REINFORCE, {label}",
                         *_paper_cells(paper_ours, fields),
                         *_ours(ref, ("acc", "params", "compr", "delta")), DASH]))
    lines.append(md_row([_partial("Ours: Student (Stage1), REINFORCE, all seeds", len(entries),
                                  planned), *[DASH] * 4,
                         *_ours(ours, ("acc", "params", "compr", "delta", "seeds"))]))
    return lines


def table3(settings: PaperSettings, states: Sequence[UnitState]) -> list[str]:
    """Table 3: teacher, the hand-designed students and our stage 1+2 student."""
    assert settings.students is not None and settings.agents is not None
    fields = ("accuracy", "params", "compression", "delta")
    lines = _header(["Model", "Paper acc.", "Paper #params", "Paper compr.", "Paper Δ acc.",
                     "Our acc.", "Our #params", "Our compr.", "Our Δ acc. (points)",
                     "Per seed: acc., #params (compr.)"])
    teacher = _teacher(states)
    paper_teacher = paper_row(settings, "Teacher")
    lines.append(md_row([f"Teacher ({ZOO_NAMES.get(settings.teacher or '', '')})",
                         *_paper_cells(paper_teacher, fields),
                         *_teacher_cells(teacher, "apcd"), DASH]))
    for student in settings.students:
        name = STUDENT_NAMES[student]
        reference = paper_row(settings, name)
        on_svhn = (reference is None and student == "squeezenet1_1"
                   and paper_teacher is not None)
        if on_svhn:  # the paper ran SqueezeNet 1.1 under the same teacher on SVHN alone
            reference = paper.find(paper.TABLE3, "SVHN", "ResNet-18", name)

        def mine(state: UnitState, student: str = student) -> bool:
            return state.unit.label == student

        entries = [r for _, r in _done(states, "kd", mine)]
        planned = _count(states, "kd", mine)
        label = _partial(name + (" (paper: on SVHN)" if on_svhn else ""),
                         len(entries), planned)
        if not entries or teacher is None:
            lines.append(md_row([label, *_paper_cells(reference, fields),
                                 *[cells.PENDING] * 5]))
            continue
        t_acc, t_params = teacher["test_accuracy"], teacher["params"]
        lines.append(md_row([
            label, *_paper_cells(reference, fields),
            cells.pct([r["test_accuracy"] for r in entries]),
            cells.count([r["params"] for r in entries]),
            cells.ratio([t_params / r["params"] for r in entries]),
            cells.points([r["test_accuracy"] - t_acc for r in entries]),
            cells.per_seed([(r["seed"], f"{100 * r['test_accuracy']:.2f}%") for r in entries])]))
    for agent in settings.agents:
        def mine(state: UnitState, agent: str = agent) -> bool:
            return state.unit.label == agent

        entries = _done(states, "compress", mine)
        ours = _student(entries, "Student (Stage1+Stage2)") if entries else None
        reference = (paper_row(settings, "Ours") if agent == "reinforce"
                     else None)
        lines.append(md_row([
            _partial(f"Ours: Student (Stage1+Stage2), {AGENT_NAMES.get(agent, agent)}",
                     len(entries), _count(states, "compress", mine)),
            *_paper_cells(reference, fields),
            *_ours(ours, ("acc", "params", "compr", "delta", "seeds"))]))
    return lines


def table4(settings: PaperSettings, states: Sequence[UnitState]) -> list[str]:
    """Table 4: the teacher and our stage 1+2 student under ``params <= max_params``."""
    assert settings.agents is not None and settings.max_params is not None
    fields = ("accuracy", "params", "compression", "constraint")
    lines = _header(["Model", "Paper acc.", "Paper #params", "Paper compr.", "Paper constr.",
                     "Our acc.", "Our #params", "Our compr.", "Our constr.",
                     "Within it", "Per seed: acc., #params (compr.)"])
    lines.append(md_row([f"Teacher ({ZOO_NAMES.get(settings.teacher or '', '')})",
                         *_paper_cells(paper_row(settings, "Teacher"),
                                       fields),
                         *_teacher_cells(_teacher(states), "ap1n"), DASH, DASH]))
    for agent in settings.agents:
        def mine(state: UnitState, agent: str = agent) -> bool:
            return state.unit.label == agent

        entries = _done(states, "compress", mine)
        ours = _student(entries, "Student (Stage1+Stage2)") if entries else None
        within = (f"{sum(p <= settings.max_params for p in ours['params_list'])} of "
                  f"{len(entries)} seeds" if ours else cells.PENDING)
        reference = (paper_row(settings, "Student (Stage 1 & 2)")
                     if agent == "reinforce" else None)
        lines.append(md_row([
            _partial(f"Student (Stage 1 & 2), {AGENT_NAMES.get(agent, agent)}", len(entries),
                     _count(states, "compress", mine)),
            *_paper_cells(reference, fields),
            *(_ours(ours, ("acc", "params", "compr")) if ours else [cells.PENDING] * 3),
            f"{settings.max_params:,}", within,
            ours["seeds"] if ours else cells.PENDING]))
    return lines


def table5(settings: PaperSettings, states: Sequence[UnitState]) -> list[str]:
    """Table 5: per teacher pair, the pre-trained and scratch policies' first iterations."""
    assert settings.pairs is not None
    lines = _header(["Teachers", "Policy", "Paper reward", "Paper comp.", "Paper acc.",
                     "Our reward", "Our comp.", "Our acc.", "Degenerate students",
                     "Per seed: reward, comp., acc."])
    for source, target in settings.pairs:
        pair = f"{ZOO_NAMES.get(source, source)} → {ZOO_NAMES.get(target, target)}"
        for policy, name in (("pretrained", "Pre-trained"), ("scratch", "Scratch")):
            def mine(state: UnitState, policy: str = policy, source: str = source,
                     target: str = target) -> bool:
                spec = state.unit.spec
                return (state.unit.label == policy and spec["source"].startswith(
                    f"teacher-{source}-") and spec["target"].startswith(f"teacher-{target}-"))

            entries = _done(states, "transfer", mine)
            reference = paper.transfer(source, target, name)
            paper_cells = ([DASH] * 3 if reference is None else
                           [reference.reward, reference.compression, reference.accuracy])
            if entries:
                ours = [cells.reward([r["reward"] for _, r in entries]),
                        cells.share([r["compression"] for _, r in entries]),
                        cells.share([r["accuracy"] for _, r in entries]),
                        f"{sum(r['degenerate'] for _, r in entries)} of "
                        f"{sum(r['students'] for _, r in entries)}",
                        cells.per_seed([(seed, f"{r['reward']:.2f}, {100 * r['compression']:.1f}%"
                                               f", {100 * r['accuracy']:.1f}%")
                                        for seed, r in entries])]
            else:
                ours = [cells.PENDING] * 5
            lines.append(md_row([pair, _partial(name, len(entries),
                                                _count(states, "transfer", mine)),
                                 *paper_cells, *ours]))
    return lines


BODIES: Mapping[int, Callable[[PaperSettings, Sequence[UnitState]], list[str]]] = {
    1: table1, 2: table2, 3: table3, 4: table4, 5: table5}
"""Each table's body."""
