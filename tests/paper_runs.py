"""Tiny ``n2n paper`` settings and readers of its output, for the paper tests.

``digits`` data, a conv4 teacher at width 0.25 trained for one epoch, one search iteration
of the mock evaluator and one epoch of fine-tuning: the numbers mean nothing, the files
and tables they fill are the real ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from n2n_env.paper import cells

TINY = ["--teacher-epochs", "1", "--seeds", "0,1", "--evaluator", "mock", "--no-progress"]
"""Settings every tiny table shares."""
SEARCH = ["--dataset", "digits", "--teacher", "conv4", "--teacher-width", "0.25",
          "--iterations", "1", "--finetune-epochs", "1", *TINY]
"""Tables 1, 2 and 4 on a conv4 teacher and digits (the same units for all three)."""


def paper_cmd(table: str, work: Path, *extra: str) -> list[str]:
    return ["paper", table, "--work", str(work), *extra]


def row_cells(line: str) -> list[str]:
    """The cells of one markdown table row."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def md_row(text: str, label: str) -> list[str]:
    """The cells of the one markdown row whose first cell starts with ``label``."""
    rows = [row_cells(line) for line in text.splitlines() if line.startswith(f"| {label}")]
    assert len(rows) == 1, f"expected one row {label!r} in:\n{text}"
    return rows[0]


def unit_lines(out: str, word: str) -> list[str]:
    """The unit ids of the progress lines ``[i/n] WORD unit``."""
    return re.findall(rf"^\[\d+/\d+\] (?:{word}) +(\S+)", out, flags=re.MULTILINE)


def results(work: Path) -> dict[str, dict]:
    """Every finished unit's result file in ``work``, by unit id."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((work / "units").glob("*.json"))}


def stage(record: dict, name: str) -> dict:
    """The row ``name`` (a stage's student) of a search unit's result."""
    return next(row for row in record["result"]["rows"] if row["name"] == name)


def spread(values: list[float], scale: float = 100) -> tuple[float, float]:
    """Mean and standard deviation of ``values`` as a table cell shows them (scaled, rounded)."""
    mean, std = cells.mean_std([scale * v for v in values])
    return round(mean, 2), round(std, 2)
