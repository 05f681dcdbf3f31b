"""The machine-wide share of CPU cores among n2n processes (private registry directory)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from n2n_env import device, thread_budget
from n2n_env.thread_budget import Registration

CORES = 6
"""The core count the tests pretend to have, so that shares differ on any machine."""

CHILD = f"""
import select, sys
from n2n_env import thread_budget
thread_budget.available_cores = lambda: {CORES}
print(thread_budget.claim(), flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:  # busy until told to exit
    sum(range(10_000))
sys.stdin.readline()
"""


@pytest.fixture
def budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh budget state on a private directory and ``CORES`` cores, without explicit
    settings; the registration and torch's thread count are restored afterwards."""
    directory = tmp_path / "threads"
    monkeypatch.setenv("N2N_THREADS_DIR", str(directory))
    monkeypatch.delenv("N2N_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(thread_budget, "_state", thread_budget._State())
    monkeypatch.setattr(thread_budget, "available_cores", lambda: CORES)
    threads = torch.get_num_threads()
    yield directory
    thread_budget.release()
    torch.set_num_threads(threads)


def _recount(monkeypatch: pytest.MonkeyPatch) -> int:
    """:func:`thread_budget.rebalance` without waiting for the check interval."""
    monkeypatch.setattr(thread_budget._state, "checked", float("-inf"))
    return thread_budget.rebalance()


def _fake(directory: Path, pid: int, start: str | None, threads: int | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{pid}.json"
    path.write_text(json.dumps({"pid": pid, "start": start, "threads": threads}))
    return path


def _parent() -> Registration:
    """A live process other than this one (the test runner's parent, idle while it waits
    for the tests), as if registered."""
    pid = os.getppid()
    return Registration(pid=pid, start=thread_budget._start_time(pid), threads=None)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_the_share_divides_what_fixed_processes_leave() -> None:
    sharing, fixed = Registration(1, None, None), Registration(2, None, 2)
    assert thread_budget.share(6, []) == 6
    assert thread_budget.share(6, [sharing]) == 3
    assert thread_budget.share(6, [sharing, sharing]) == 2
    assert thread_budget.share(6, [fixed, sharing]) == 2  # (6 - 2) // 2
    assert thread_budget.share(2, [fixed, fixed, sharing]) == 1  # never fewer than one


def test_a_lone_process_takes_every_core_and_registers(budget: Path) -> None:
    assert thread_budget.claim() == CORES == torch.get_num_threads()
    saved = json.loads((budget / f"{os.getpid()}.json").read_text())
    assert saved == {"pid": os.getpid(), "start": thread_budget._start_time(os.getpid()),
                     "threads": None}
    thread_budget.release()
    assert not list(budget.iterdir())


def test_two_registrations_take_half_each(budget: Path, monkeypatch) -> None:
    parent = _parent()
    _fake(budget, parent.pid, parent.start)
    assert device.use_all_cores() == CORES // 2  # use_all_cores goes through the budget
    (budget / f"{parent.pid}.json").unlink()  # the other process finished
    assert thread_budget.rebalance() == CORES // 2  # not re-counted within the interval
    assert _recount(monkeypatch) == CORES


def test_stale_registrations_are_pruned(budget: Path, monkeypatch) -> None:
    parent = _parent()
    dead = _fake(budget, _dead_pid(), "1")  # killed with -9: its file stayed
    reused = _fake(budget, parent.pid, "0")  # a live pid, but another process's start time
    assert thread_budget.live_registrations(budget) == []
    assert not dead.exists() and not reused.exists()
    _fake(budget, _dead_pid(), None)  # no start time: a signal finds the pid gone
    (budget / "junk.json").write_text("not json")
    assert thread_budget.claim() == CORES


def test_an_explicit_setting_wins(budget: Path, monkeypatch) -> None:
    parent = _parent()
    _fake(budget, parent.pid, parent.start)
    monkeypatch.setenv("N2N_THREADS", "5")
    assert thread_budget.claim() == 5
    saved = json.loads((budget / f"{os.getpid()}.json").read_text())
    assert saved["threads"] == 5  # the others leave those cores to it
    mine = [r for r in thread_budget.live_registrations(budget) if r.pid == os.getpid()]
    assert thread_budget.share(CORES, mine) == 1
    (budget / f"{parent.pid}.json").unlink()
    assert _recount(monkeypatch) == 5
    assert thread_budget.claim(2) == 2  # an explicit count in the call
    monkeypatch.delenv("N2N_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)
    assert device.use_all_cores() == 3
    monkeypatch.setenv("N2N_THREADS", "many")
    with pytest.raises(ValueError, match="N2N_THREADS must be a positive integer"):
        thread_budget.claim()
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        thread_budget.claim(0)


def test_a_count_set_by_the_caller_is_left_alone(budget: Path, monkeypatch) -> None:
    assert thread_budget.claim() == CORES
    torch.set_num_threads(1)
    parent = _parent()
    _fake(budget, parent.pid, parent.start)
    assert _recount(monkeypatch) == 1
    assert json.loads((budget / f"{os.getpid()}.json").read_text())["threads"] == 1
    assert thread_budget.claim() == CORES // 2  # claiming again re-takes the share


def test_an_idle_process_holds_no_cores_once_seen_idle(budget: Path, monkeypatch) -> None:
    parent = _parent()
    _fake(budget, parent.pid, parent.start)
    assert thread_budget.claim() == CORES // 2  # seen for the first time: it counts
    monkeypatch.setattr(thread_budget, "_MIN_SAMPLE", 0.0)
    time.sleep(0.3)  # the parent waits for the tests meanwhile: no CPU time
    assert _recount(monkeypatch) == CORES


def test_an_unwritable_directory_still_shares(tmp_path: Path, budget: Path,
                                              monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("N2N_THREADS_DIR", str(blocker / "threads"))
    assert thread_budget.claim() == CORES


def test_processes_that_start_and_finish_rebalance_the_others(budget: Path,
                                                              monkeypatch) -> None:
    assert thread_budget.claim() == CORES
    monkeypatch.setattr(thread_budget, "BUSY_SHARE", 0.01)  # the children spin on a busy machine
    env = {**os.environ, "N2N_THREADS_DIR": str(budget)}
    children = [subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env)
                for _ in range(2)]
    try:
        claimed = [int(child.stdout.readline()) for child in children]  # type: ignore[union-attr]
        assert set(claimed) <= {CORES // 3, CORES // 2}  # second or third, as they raced
        assert _recount(monkeypatch) == CORES // 3
        children[0].communicate("\n", timeout=60)  # a normal exit releases its registration
        assert not (budget / f"{children[0].pid}.json").exists()
        assert _recount(monkeypatch) == CORES // 2
        children[1].send_signal(signal.SIGKILL)  # no exit handler runs
        children[1].wait(timeout=60)
        assert (budget / f"{children[1].pid}.json").exists()
        assert _recount(monkeypatch) == CORES
        assert [path.name for path in budget.iterdir()] == [f"{os.getpid()}.json"]
    finally:
        for child in children:
            child.kill()
            child.communicate()
