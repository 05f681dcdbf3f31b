"""benchmarks/commit_results.sh commits long experiments' results, and nothing else.

Sessions end and machines change; the only way a build or a paper run survives is a
commit of its finished pieces. The helper must commit exactly those paths: never the
scripts beside them (a half-edited script committed as "finished parts"), never caches.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "commit_results.sh"

pytestmark = pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None,
                                reason="needs git and bash")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture(autouse=True)
def this_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The script copies run folders with $PYTHON: this interpreter, which has n2n."""
    monkeypatch.setenv("PYTHON", sys.executable)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "test@example.com")
    git(tmp_path, "config", "user.name", "test")
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(SCRIPT, tmp_path / "benchmarks" / "commit_results.sh")
    (tmp_path / "benchmarks" / "n2n-bench").mkdir()
    (tmp_path / "benchmarks" / "n2n-bench" / "build_all.sh").write_text("echo v1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "scripts")
    return tmp_path


def write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def committed_files(repo: Path) -> set[str]:
    return set(git(repo, "show", "--name-only", "--format=", "HEAD").split())


def test_commits_results_and_leaves_scripts_and_caches(repo: Path) -> None:
    write(repo / "benchmarks/n2n-bench/removal-conv3-mnist-10k/parts/part-00001.json")
    write(repo / "benchmarks/paper/units/teacher.json")
    write(repo / "benchmarks/paper/table-1.md")
    write(repo / "benchmarks/paper/runs/unit/checkpoint.pt")
    write(repo / "benchmarks/results/real-env-conv4-mnist-10k/episodes/random-seed000.csv")
    write(repo / "benchmarks/results/real-env-conv4-mnist-10k/rewards.sqlite")
    write(repo / "benchmarks/results/real-env-shrink-conv4-mnist-10k/episodes/random-seed000.csv")
    write(repo / "benchmarks/results/real-env-shrink-conv4-mnist-10k/rewards.sqlite")
    write(repo / "benchmarks/n2n-bench/build_all.sh", "echo v2\n")
    subprocess.run(["bash", "benchmarks/commit_results.sh", "parts"], cwd=repo, check=True)

    assert git(repo, "log", "-1", "--format=%s").strip() == "parts"
    assert committed_files(repo) == {
        "benchmarks/n2n-bench/removal-conv3-mnist-10k/parts/part-00001.json",
        "benchmarks/paper/units/teacher.json", "benchmarks/paper/table-1.md",
        "benchmarks/results/real-env-conv4-mnist-10k/episodes/random-seed000.csv",
        "benchmarks/results/real-env-shrink-conv4-mnist-10k/episodes/random-seed000.csv",
        # the unfinished unit's run folder travels as a copy, never itself
        "benchmarks/paper/carry/unit/checkpoint.pt", "benchmarks/paper/carry/unit/carry.json"}
    status = git(repo, "status", "--porcelain")
    assert " M benchmarks/n2n-bench/build_all.sh" in status


def test_commits_small_teacher_resume_states_and_their_removal_never_large_ones(
        repo: Path) -> None:
    """A teacher longer than a sitting survives a new machine through its committed resume
    state; one over the limit is left to commit by hand; a finished teacher's removal of
    its resume file is committed too, so no stale state lingers."""
    small = repo / "benchmarks/paper/resume/teacher-small.pt"
    write(small, "s" * 100)
    write(repo / "benchmarks/paper/resume/teacher-large.pt", "l" * 300)
    environment = {**os.environ, "RESUME_LIMIT": "200"}
    subprocess.run(["bash", "benchmarks/commit_results.sh", "resume"], cwd=repo, check=True,
                   env=environment)
    assert committed_files(repo) == {"benchmarks/paper/resume/teacher-small.pt"}
    assert "?? benchmarks/paper/resume/teacher-large.pt" in git(repo, "status", "--porcelain")

    small.unlink()
    write(repo / "benchmarks/paper/teachers/teacher-small.pt")
    subprocess.run(["bash", "benchmarks/commit_results.sh", "done"], cwd=repo, check=True,
                   env=environment)
    changes = git(repo, "show", "--format=", "--name-status", "HEAD").splitlines()
    assert sorted(changes) == ["A\tbenchmarks/paper/teachers/teacher-small.pt",
                               "D\tbenchmarks/paper/resume/teacher-small.pt"]

    write(repo / "benchmarks/paper/resume/teacher-other.pt")
    subprocess.run(["bash", "benchmarks/commit_results.sh", "other"], cwd=repo, check=True,
                   env=environment)
    git(repo, "rm", "-q", "benchmarks/paper/resume/teacher-other.pt")  # staged by hand
    subprocess.run(["bash", "benchmarks/commit_results.sh", "gone"], cwd=repo, check=True,
                   env=environment)
    assert git(repo, "show", "--format=", "--name-status", "HEAD").splitlines() == [
        "D\tbenchmarks/paper/resume/teacher-other.pt"]


def test_commits_a_copy_of_an_unfinished_run_and_its_removal_once_finished(
        repo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A search longer than a sitting travels as ``carry/<unit>``: its reward cache copied
    with the rewards still in SQLite's write-ahead log, its other files as they are; a
    refresh waits CARRY_EVERY seconds; the finished unit's copy is removed in a commit."""
    run = repo / "benchmarks/paper/runs/compress-a"
    write(run / "state.json", '{"iteration": 3}')
    write(run / "tensorboard/events", "e")
    connection = sqlite3.connect(run / "rewards.sqlite")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA wal_autocheckpoint=0")
    connection.execute("CREATE TABLE rewards (key TEXT, reward REAL)")
    connection.execute("INSERT INTO rewards VALUES ('a', 0.5)")
    connection.commit()  # held open: the row is in the log, not yet in the file
    try:
        subprocess.run(["bash", "benchmarks/commit_results.sh", "pieces"], cwd=repo,
                       check=True)
        assert committed_files(repo) == {
            "benchmarks/paper/carry/compress-a/state.json",
            "benchmarks/paper/carry/compress-a/rewards.sqlite",
            "benchmarks/paper/carry/compress-a/carry.json"}
        # the file as a fresh clone has it
        committed = tmp_path_factory.mktemp("clone") / "rewards.sqlite"
        committed.write_bytes(subprocess.run(
            ["git", "-C", str(repo), "show", "HEAD:benchmarks/paper/carry/compress-a/"
             "rewards.sqlite"], check=True, capture_output=True).stdout)
        carried = sqlite3.connect(committed)
        assert carried.execute("SELECT * FROM rewards").fetchall() == [("a", 0.5)]
        carried.close()

        write(run / "state.json", '{"iteration": 4}')
        before = git(repo, "rev-parse", "HEAD")
        subprocess.run(["bash", "benchmarks/commit_results.sh", "soon"], cwd=repo, check=True)
        assert git(repo, "rev-parse", "HEAD") == before  # the copy is under 30 minutes old
        subprocess.run(["bash", "benchmarks/commit_results.sh", "later"], cwd=repo,
                       check=True, env={**os.environ, "CARRY_EVERY": "0"})
        assert committed_files(repo) == {"benchmarks/paper/carry/compress-a/state.json",
                                         "benchmarks/paper/carry/compress-a/carry.json"}
    finally:
        connection.close()

    write(repo / "benchmarks/paper/units/compress-a.json")
    subprocess.run(["bash", "benchmarks/commit_results.sh", "done"], cwd=repo, check=True)
    changes = git(repo, "show", "--format=", "--name-status", "HEAD").splitlines()
    assert sorted(changes) == ["A\tbenchmarks/paper/units/compress-a.json",
                               "D\tbenchmarks/paper/carry/compress-a/carry.json",
                               "D\tbenchmarks/paper/carry/compress-a/rewards.sqlite",
                               "D\tbenchmarks/paper/carry/compress-a/state.json"]


def test_a_pruning_loops_checkpoint_is_committed_only_when_the_command_ends(
        repo: Path) -> None:
    """Every half hour the copy of a pruning unit leaves out its loop's checkpoint (as large
    as the network); the commit made when the command ends (the end of a sitting) has it."""
    run = repo / "benchmarks/paper/runs/prune-a"
    write(run / "unit.json", '{"identity": {}, "seconds": 1.0, "sittings": 1}')
    write(run / "seed-0.loop.pt", "step 1")
    subprocess.run(["bash", "benchmarks/commit_results.sh", "pieces"], cwd=repo, check=True)
    assert committed_files(repo) == {"benchmarks/paper/carry/prune-a/unit.json",
                                     "benchmarks/paper/carry/prune-a/carry.json"}
    command = ("source benchmarks/commit_results.sh; "
               "with_commits 'table 2' bash -c 'echo step 2 > "
               "benchmarks/paper/runs/prune-a/seed-0.loop.pt'")
    subprocess.run(["bash", "-c", command], cwd=repo, check=True, timeout=60)
    assert git(repo, "log", "-1", "--format=%s").strip() == "table 2: finished pieces"
    assert "benchmarks/paper/carry/prune-a/seed-0.loop.pt" in committed_files(repo)
    assert git(repo, "show", "HEAD:benchmarks/paper/carry/prune-a/seed-0.loop.pt") == "step 2\n"


def test_makes_no_commit_when_nothing_changed(repo: Path) -> None:
    before = git(repo, "rev-parse", "HEAD")
    subprocess.run(["bash", "benchmarks/commit_results.sh", "nothing"], cwd=repo, check=True)
    assert git(repo, "rev-parse", "HEAD") == before


def test_with_commits_commits_after_the_command_and_returns_its_status(repo: Path) -> None:
    command = ("source benchmarks/commit_results.sh; "
               "with_commits 'table 9' bash -c 'mkdir -p benchmarks/paper/units && "
               "echo done > benchmarks/paper/units/u.json; exit 3'; echo status=$?")
    out = subprocess.run(["bash", "-c", command], cwd=repo, check=True, capture_output=True,
                         text=True).stdout
    assert "status=3" in out
    assert git(repo, "log", "-1", "--format=%s").strip() == "table 9: finished pieces"
    assert committed_files(repo) == {"benchmarks/paper/units/u.json"}


def test_with_commits_commits_pieces_while_the_command_runs(repo: Path) -> None:
    """The command waits until the loop has committed its first piece, then adds another:
    both end up committed, the first by the loop."""
    command = ("source benchmarks/commit_results.sh; COMMIT_EVERY=1 "
               "with_commits build bash -c 'mkdir -p benchmarks/paper/units && "
               "echo 1 > benchmarks/paper/units/a.json; "
               "until git log --format=%s | grep -q \"so far\"; do sleep 0.2; done; "
               "echo 2 > benchmarks/paper/units/b.json'")
    subprocess.run(["bash", "-c", command], cwd=repo, check=True, timeout=60)
    first_piece = git(repo, "log", "--format=%H", "--grep", "finished pieces so far").split()
    assert first_piece
    assert "benchmarks/paper/units/a.json" in git(
        repo, "show", "--name-only", "--format=", first_piece[-1]).split()
    assert git(repo, "ls-files", "benchmarks/paper/units").split() == [
        "benchmarks/paper/units/a.json", "benchmarks/paper/units/b.json"]
    assert git(repo, "status", "--porcelain", "benchmarks/paper") == ""


def test_an_empty_result_folder_does_not_stop_the_commit(repo: Path) -> None:
    (repo / "benchmarks/paper/policies").mkdir(parents=True)
    write(repo / "benchmarks/paper/units/u.json")
    subprocess.run(["bash", "benchmarks/commit_results.sh", "units"], cwd=repo, check=True)
    assert committed_files(repo) == {"benchmarks/paper/units/u.json"}


def test_with_commits_refuses_to_start_without_a_git_identity(repo: Path) -> None:
    git(repo, "config", "--unset", "user.email")
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"}
    result = subprocess.run(
        ["bash", "-c", "source benchmarks/commit_results.sh; with_commits x touch ran; "
         "echo status=$?"], cwd=repo, env=env, capture_output=True, text=True, timeout=30)
    assert "status=1" in result.stdout and "user.email" in result.stderr
    assert not (repo / "ran").exists()


@pytest.mark.skipif(shutil.which("flock") is None, reason="needs flock (util-linux)")
def test_only_one_refuses_a_second_instance(repo: Path, tmp_path: Path) -> None:
    script = "source benchmarks/commit_results.sh; only_one job.sh; echo running; sleep 2"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    first = subprocess.Popen(["bash", "-c", script], cwd=repo, env=env,
                             stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None and first.stdout.readline().strip() == "running"
    second = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=30)
    assert second.returncode == 1 and "job.sh is already running" in second.stderr
    assert "running" not in second.stdout
    assert first.wait(timeout=30) == 0


@pytest.mark.skipif(shutil.which("flock") is None or shutil.which("pkill") is None,
                    reason="needs flock and pkill")
def test_a_killed_script_leaves_no_commit_loop_holding_its_lock(repo: Path,
                                                                tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    script = subprocess.Popen(
        ["bash", "-c", "source benchmarks/commit_results.sh; only_one job.sh; "
         "COMMIT_EVERY=1 with_commits x sleep 37.25"], cwd=repo, env=env)
    time.sleep(1.0)
    script.kill()  # SIGKILL: no trap runs
    script.wait(timeout=10)
    subprocess.run(["pkill", "-f", "^sleep 37.25$"], check=False)  # its command, only
    deadline = time.monotonic() + 20
    while True:
        again = subprocess.run(["bash", "-c", "source benchmarks/commit_results.sh; "
                                "only_one job.sh; echo got it"], cwd=repo, env=env,
                               capture_output=True, text=True, timeout=30)
        if "got it" in again.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "got it" in again.stdout, again.stderr
