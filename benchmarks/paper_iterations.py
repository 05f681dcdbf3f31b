"""How long the search iterations of an ``n2n paper`` work folder took, per unit and stage.

Reads each search's metrics CSVs from ``DIR/runs/<unit>/`` (this machine's run folders),
else from ``DIR/carry/<unit>/`` (their committed copies): iterations done, their seconds
(sum, median, range), the best reward so far, and the mean reward and mean validation
accuracy of the students of the last 10 iterations (a degenerate student counts reward -1
and accuracy 0, so the accuracy says how many of them the policy still proposes). The
seconds are wall time of each iteration of 5 students, so they include whatever else ran
on the machine meanwhile. Then,
from the run's evaluation cache (``rewards.sqlite``), how many distinct students both
stages evaluated and how many of them were degenerate (reward -1, never trained): a
policy that learns avoids them, random search does not. For a run under constraints
(its ``state.json`` says which), also how many valid students met them all, and the
parameters of the smallest valid one.

    python benchmarks/paper_iterations.py benchmarks/paper
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from n2n_env.cache import CacheFileError, stored_evaluations
from n2n_env.reward import LinearConstraint, parse_constraints
from n2n_env.run_files import read_metrics


def summary(work: Path) -> list[str]:
    """One line per search unit and stage that has iterations, and one per unit whose
    evaluation cache is there."""
    lines = []
    runs = {path.name: path for path in sorted((work / "carry").glob("compress-*"))}
    runs.update({path.name: path for path in sorted((work / "runs").glob("compress-*"))
                 if path.is_dir()})
    for unit, run in sorted(runs.items()):
        for stage in ("removal", "shrink"):
            rows = read_metrics(run / f"metrics_{stage}.csv")
            if not rows:
                continue
            seconds = [row["seconds"] for row in rows]
            best = rows[-1]["best_reward_so_far"]
            last = rows[-10:]
            lines.append(
                f"{unit} {stage}: {len(rows)} iterations, {sum(seconds) / 3600:.2f} h, "
                f"median {statistics.median(seconds):.0f} s ({min(seconds):.0f}-"
                f"{max(seconds):.0f} s), best reward "
                + ("none" if math.isnan(best) else f"{best:.4f}")
                + f"; last {len(last)}: mean reward "
                f"{statistics.fmean(row['reward_mean'] for row in last):.3f}, mean accuracy "
                f"{statistics.fmean(row['accuracy_mean'] for row in last):.3f}"
                + f" [{run.parent.name}/]")
        if (run / "rewards.sqlite").is_file():
            lines.append(f"{unit}: {students(run / 'rewards.sqlite', constraints_of(run))} "
                         f"[{run.parent.name}/]")
    return lines


def constraints_of(run: Path) -> tuple[LinearConstraint, ...]:
    """The constraints in a run's ``state.json`` (none when it has none or is missing)."""
    try:
        config = json.loads((run / "state.json").read_text()).get("config", {})
    except (OSError, ValueError):
        return ()
    return parse_constraints(config.get("constraints") or None)


def students(cache: Path, constraints: Sequence[LinearConstraint] = ()) -> str:
    """How many distinct students a run's evaluation cache holds, and how many of them were
    degenerate, by reason (its words before any detail, numbers as N); under
    ``constraints``, how many valid ones met them and the smallest valid one's size."""
    try:
        entries = stored_evaluations(cache)
    except CacheFileError as exc:
        return f"evaluation cache unreadable ({exc})"
    by_student = {e.architecture.signature(): e.evaluation.degenerate_reason for e in entries}
    reasons = Counter(re.sub(r"\d+", "N", reason.split(" (")[0].split(":")[0])
                      for reason in by_student.values() if reason)
    identities = {json.dumps(dict(e.identity), sort_keys=True) for e in entries}
    text = (f"{len(by_student)} distinct students evaluated"
            + (f" (under {len(identities)} evaluator identities)" if len(identities) > 1
               else "")
            + f", {sum(reasons.values())} degenerate")
    text += (f" ({', '.join(f'{r}: {n}' for r, n in reasons.most_common())})"
             if reasons else "")
    if not constraints:
        return text
    valid = {e.architecture.signature(): e.evaluation for e in entries
             if e.evaluation.degenerate_reason is None}
    within = sum(all(row.satisfied(evaluation.measured()) for row in constraints)
                 for evaluation in valid.values())
    smallest = min((evaluation.params for evaluation in valid.values()), default=None)
    return (text + f"; {' and '.join(row.describe() for row in constraints)}: {within} of "
            f"{len(valid)} valid students within"
            + (f", the smallest valid one {smallest:,} parameters" if valid else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the n2n paper work folder")
    args = parser.parse_args()
    print("\n".join(summary(args.work)) or f"no search iterations in {args.work}")


if __name__ == "__main__":
    main()
