"""The examples are documentation: they must keep running."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
EXPECTED_OUTPUT = {
    "architecture_tour": "student output (2, 10)",
    "reward_engine": "cache: ",
    "random_agent": "episodes done",
    "sb3_ppo": "sb3 done",
}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runpy.run_path(str(path), run_name="__main__")
    assert EXPECTED_OUTPUT[path.stem] in capsys.readouterr().out


def test_importing_the_package_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, n2n_env; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
