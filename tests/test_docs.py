"""Every Python block of the docs runs on its own, as pasted, and says how long it takes.

The blocks of README.md and docs/teachers.md train a real teacher (10-20 s) and are only
checked for their timing note; the others use the mock evaluator or no training at all.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "agents.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
TRAINING = ("README.md", "docs/teachers.md")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ALL_BLOCKS = [(page.relative_to(ROOT).as_posix(), index, block) for page in PAGES
              for index, block in enumerate(re.findall(r"```python\n(.*?)```",
                                                       page.read_text(), flags=re.DOTALL))]


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # files the examples save land here
    exec(compile(BLOCKS[index], f"{DOC.name} block {index}", "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out
    assert printed.strip(), "every block prints what it shows"
    assert "nan" not in printed


def test_every_block_says_how_long_it_takes() -> None:
    assert len(ALL_BLOCKS) >= 10
    for page, index, block in ALL_BLOCKS:
        first = block.splitlines()[0]
        assert first.startswith("#") and re.search(r"\b(Instant|second|\d+ s)\b", first), (
            f"{page} block {index} does not start with how long it takes: {first!r}")


@pytest.mark.parametrize(("page", "index", "block"),
                         [b for b in ALL_BLOCKS if b[0] not in TRAINING and b[0] != DOC.name
                          and b[0] != "docs/agents.md"],
                         ids=lambda value: str(value) if not isinstance(value, str) or
                         len(value) < 40 else "")
def test_every_other_page_block_runs_alone(page: str, index: int, block: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("N2N_HOME", str(tmp_path / "home"))
    exec(compile(block, f"{page} block {index}", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.strip(), "every block prints what it shows"
