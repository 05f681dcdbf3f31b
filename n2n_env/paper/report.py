"""A paper table as markdown: what was run, the paper's rows beside ours, the units, and
how to read the comparison.

:func:`render` needs only the settings and the units' states, so the table can be
written at any time from the committed result files (``n2n paper TABLE --report``),
whatever has finished so far.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from n2n_env.paper import reference as paper
from n2n_env.paper import versus
from n2n_env.paper.runner import UnitState, duration
from n2n_env.paper.settings import PaperSettings
from n2n_env.paper.tables import BODIES, STUDENT_NAMES, ZOO_NAMES, md_row, paper_row

__all__ = ["render", "wall_seconds"]

TABLE5_DATA = ("CIFAR-10 (50,000 / 10,000), teachers at full width (its ResNet-34 → "
               "ResNet-18 pair is run only if asked for with --pairs)")
"""What the paper's Table 5 was measured on (Tables 1-4: the paper's rows for the table's
own dataset and teacher, :func:`_paper_data`)."""


SEARCH_CAPTION = (
    "per stage and iteration, the mean reward of the 5 students, the best reward found so "
    "far, their mean validation accuracy and mean compression (the paper's Figure 3), one "
    "colour per agent; thin lines are seeds, thick ones their mean. Unfinished searches are "
    "drawn as far as they got.")
CAPTIONS = {1: SEARCH_CAPTION, 3: SEARCH_CAPTION, 4: SEARCH_CAPTION,
            5: "the mean reward of the 5 students of each policy update on the target "
               "teacher, pre-trained against scratch policies (the paper's Figure 10); thin "
               "lines are seeds, thick ones their mean."}
"""What each table's figure shows."""


def wall_seconds(record: Mapping[str, Any]) -> float:
    """A finished unit's wall time over all its sittings. A teacher continued from its
    ``resume/`` state on another machine counts only its last sitting in ``seconds``; its
    training record's ``train_seconds`` covers every epoch."""
    seconds = float(record["seconds"])
    if record.get("kind") == "teacher":
        seconds = max(seconds, float(record["result"].get("train_seconds") or 0.0))
    return seconds


def render(settings: PaperSettings, states: Sequence[UnitState], work: str, *,
           figure: str | None = None) -> str:
    """The markdown of ``settings.table`` from the units' ``states`` in the folder ``work``;
    ``figure``: the file name of its curves (:mod:`n2n_env.paper.figures`), shown when given."""
    finished = [s for s in states if s.record is not None]
    lines = [f"# {paper.TITLES[settings.table]}: the paper and this reproduction", "",
             f"Command: `{settings.command(work)}`", "",
             f"- Paper: {_paper_data(settings)}.",
             f"- Ours: {_our_data(settings, states)}.",
             f"- Units: {len(finished)} of {len(states)} finished"
             + (f", {duration(sum(wall_seconds(s.record) for s in finished))} of wall time"
                if finished else "") + "."]
    if settings.evaluator == "mock":
        lines += ["", "**MOCK evaluator: the search's rewards are NOT REAL** (a made-up "
                      "accuracy model, for tests and teaching); only the final trainings "
                      "are real. Do not read these numbers as results."]
    lines += ["", *BODIES[settings.table](settings, states), ""]
    comparison = versus.section(states)
    if comparison:
        lines += [*comparison, ""]
    if figure:
        lines += ["## Curves", "", f"![Table {settings.table}, per iteration]({figure})", "",
                  f"`{figure}`: {CAPTIONS[settings.table]}", ""]
    lines += _notes(settings, states)
    lines += ["", "## Units", "", *_units(states, settings.command(work)), ""]
    return "\n".join(lines)


def _paper_data(settings: PaperSettings) -> str:
    """What the paper's numbers beside ours were measured on."""
    if settings.table == 5:
        return TABLE5_DATA
    teacher = paper_row(settings, "Teacher")
    name = ZOO_NAMES.get(settings.teacher or "", settings.teacher or "")
    if teacher is None:
        return (f"its Table {settings.table} has no {name} on {settings.dataset} (nor on the "
                "dataset it is drawn from), so the paper's columns read —")
    text = f"{teacher.dataset} ({paper.IMAGES[teacher.dataset]}), {name} at full width"
    student = paper_row(settings, "Student (Stage 1 & 2)")
    if student is not None:
        text += f", params <= {student.constraint}"
    if settings.table == 3 and teacher.dataset != "SVHN":
        text += f"; SqueezeNet 1.1 on SVHN ({paper.IMAGES['SVHN']})"
    return text


def _our_data(settings: PaperSettings, states: Sequence[UnitState]) -> str:
    teachers = [s for s in states if s.unit.kind == "teacher"]
    splits = next((s.record["result"]["splits"] for s in teachers if s.record), None)
    data = settings.dataset or ""
    if splits:
        data += " ({:,} training / {:,} validation / {:,} test images)".format(*splits)
    described = []
    for state in teachers:
        name = ZOO_NAMES.get(state.unit.label, state.unit.label)
        text = f"{name} at width {settings.teacher_width:g}"
        if state.record:
            result = state.record["result"]
            text += (f" ({result['params']:,} parameters, {_plural(result['epochs'], 'epoch')}, "
                     f"{100 * result['test_accuracy']:.2f}% test)")
        described.append(text)
    seeds = ", ".join(map(str, settings.seeds or ()))
    return (f"{data}; teacher{'s' if len(described) > 1 else ''} {', '.join(described)}; "
            f"seeds {seeds}")


def _notes(settings: PaperSettings, states: Sequence[UnitState]) -> list[str]:
    """How to read the comparison honestly."""
    budget = f"{_plural(settings.iterations or 0, 'iteration')} of 5 students per stage"
    finetune = (_plural(settings.finetune_epochs, "epoch") if settings.finetune_epochs
                else "the teacher's recipe")
    notes = [
        "## Reading",
        "",
        "- Ours: mean ± sample standard deviation over the finished seeds (the seed-to-seed "
        "spread), each seed in the last column; the paper reports one run per model.",
        "- The data here is much smaller than the paper's, and the teachers are ours (see "
        "above).",
    ]
    if settings.table != 5:
        notes.append("- Accuracies are test accuracies after the final training; Δ acc. and "
                     "compression are against our own teacher.")
        notes.append(f"- Search: {budget}; every candidate's reward was read on the "
                     "validation split after a short distillation (100 steps of 32 images; "
                     "the paper trained each candidate for 5 epochs, and its policies for at "
                     f"least 100 iterations). Final training of each student: {finetune}.")
    extra = {
        1: "- The paper's student rows are REINFORCE's (for MNIST it has a stage-1 student "
           "only); random search is ours, to show what the learnt policy adds.",
        2: "- Pruning follows Molchanov et al. with the paper's stopping rule against the "
           "stage-1 REINFORCE student with the best validation accuracy (named in the row); "
           "the best of the runs is chosen by validation accuracy (docs/baselines.md).",
        3: "- The hand-designed students are trained from scratch by the same final training "
           "(cross-entropy + 0.1 x L2 on the teacher's logits). The paper ran SqueezeNet "
           "1.1 on SVHN; here all three share the table's data.",
        4: "- The constraint enters the reward as in the paper's section 3.3.1, relaxed early "
           "in each stage; 'Within it' counts the seeds whose final student meets it. A "
           "stage 1 that finds no student within it hands stage 2 its valid student "
           "nearest to it (the fewest parameters here), which shrinking may bring within "
           "it.",
        5: f"- Reward, Comp. and Acc. are means over the students of the first "
           f"{settings.transfer_iterations} policy updates (5 students each) on the target "
           f"teacher; the pre-trained policy first trained {settings.pretrain_iterations} "
           "updates on the source. Acc. is the validation accuracy after the short "
           "distillation (0 for a degenerate student), so it is far below a trained "
           "student's.",
    }
    notes.append(extra[settings.table])
    if settings.table == 3:
        notes += _larger_students(states)
    notes += _teacher_warnings(states)
    return notes


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _larger_students(states: Sequence[UnitState]) -> list[str]:
    """Table 3 with a teacher narrower than the paper's: the hand-designed students, of
    fixed size, can be larger than the teacher itself."""
    teacher = next((s.record["result"] for s in states
                    if s.unit.kind == "teacher" and s.record), None)
    larger = sorted({STUDENT_NAMES[s.unit.label] for s in states if s.unit.kind == "kd"
                     and s.record and teacher
                     and s.record["result"]["params"] > teacher["params"]})
    if not larger:
        return []
    return [f"- {', '.join(larger)} {'has' if len(larger) == 1 else 'have'} more parameters "
            f"than this teacher ({teacher['params']:,}; the paper's had 11.17M): their "
            "compression is below 1x, so read this table as accuracy at a given size."]


def _teacher_warnings(states: Sequence[UnitState]) -> list[str]:
    """Units made with another teacher than the one now in ``teachers/``."""
    current = {s.unit.id: s.record["result"]["fingerprint"] for s in states
               if s.unit.kind == "teacher" and s.record}
    stale = sorted(s.unit.id for s in states if s.record and s.unit.kind != "teacher"
                   and any(current.get(t, f) != f for t, f in s.record["teachers"].items()))
    if not stale:
        return []
    return [f"- **Made with another teacher** (trained again since): {', '.join(stale)}. "
            "Delete their result files to run them with the current one."]


def _units(states: Sequence[UnitState], command: str) -> list[str]:
    """One row per unit: status, wall time, when, where and by which command ("the
    table's" when it is the command at the top)."""
    lines = [md_row(["Unit", "Status", "Wall time", "Finished", "Machine", "Command"]),
             md_row(["---"] * 6)]
    for state in states:
        record = state.record
        if record is None:
            status = f"{state.status}: {state.progress}" if state.progress else state.status
            spent = "" if state.seconds is None else f"{duration(state.seconds)} so far"
            lines.append(md_row([state.unit.id, status, spent, "", "", ""]))
            continue
        sittings = f" ({record['sittings']} sittings)" if record.get("sittings", 1) > 1 else ""
        lines.append(md_row([state.unit.id, "done", duration(wall_seconds(record)) + sittings,
                             record["finished"], record["machine"],
                             "the table's" if record["command"] == command
                             else f"`{record['command']}`"]))
    return lines
