"""The Python blocks of docs/agents.md run as written (they use the mock evaluator)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

DOC = Path(__file__).parent.parent / "docs" / "agents.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


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
