"""Two n2n processes on one machine: the wall and CPU time of one, alone and beside another.

Torch sizes its thread pool for a machine of its own, so two n2n trainings that each take
every core oversubscribe it (issue 13: the default ``n2n compress`` took 21 minutes
instead of 3.4 beside one other training process on 2 cores, with three times the CPU
time). :mod:`n2n_env.thread_budget` shares the cores among the live n2n processes instead.
This script times a command (by default a short ``n2n compress`` on ``digits``) three ways:

* ``alone``: nothing else of n2n runs;
* ``before``: beside another n2n process, both forced onto every core with
  ``N2N_THREADS=<cores>`` (what every n2n process did before the budget);
* ``after``: beside another n2n process, both sharing the cores through the budget.

The other process runs the same command and is restarted whenever it finishes first, so
the timed one has company until its end; then it is interrupted. The teacher is trained
once beforehand in a private ``N2N_HOME``, so the timed runs find it cached.

``--pause-builds`` stops (SIGSTOP) any running ``n2n bench build`` processes while each
run is timed and always continues them (SIGCONT) afterwards, even on Ctrl-C or an error;
only a ``kill -9`` of this script would leave them stopped (continue them by hand with
``pkill -CONT -f "n2n bench build"``).

    python benchmarks/bench_oversubscription.py --pause-builds
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from n2n_env.thread_budget import available_cores

COMMAND = ("n2n compress --evaluator distill --iterations 2 --stages removal --no-progress")
PREPARE = "n2n teacher train --model conv4 --dataset digits --no-progress"
BUILDS = "n2n bench build"
"""The command line (a pkill pattern) of the processes ``--pause-builds`` pauses."""


@dataclass(frozen=True)
class Timing:
    """One timed run of the command."""

    scenario: str
    wall: float
    """Seconds from start to exit."""
    cpu: float
    """User plus system CPU seconds of the timed process (all its threads)."""
    exit_code: int
    neighbours: int
    """How many times the other process was restarted while this one ran."""
    load: tuple[float, float]
    """The machine's 1-minute load average when the run started and when it ended: other
    work than these two processes shows up here (and in the wall time)."""


def _environment(home: Path, threads: int | None) -> dict[str, str]:
    """The environment of both processes: a private N2N_HOME, no OMP_NUM_THREADS, and
    ``N2N_THREADS=threads`` when the budget is to be bypassed."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("OMP_NUM_THREADS", "N2N_THREADS")}
    env["N2N_HOME"] = str(home)
    if threads is not None:
        env["N2N_THREADS"] = str(threads)
    return env


@contextlib.contextmanager
def _builds_paused(enabled: bool) -> Iterator[None]:
    """Stop the ``n2n bench build`` processes for the duration, and always continue them."""
    if not enabled:
        yield
        return

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    subprocess.run(["pkill", "-STOP", "-f", BUILDS], check=False)
    try:
        yield
    finally:
        subprocess.run(["pkill", "-CONT", "-f", BUILDS], check=False)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_dir(root: Path, name: str) -> list[str]:
    return ["--out", str(root / f"{name}-{time.monotonic_ns()}")]


def time_command(scenario: str, command: list[str], other: list[str] | None,
                 env: dict[str, str], work: Path, log: Path) -> Timing:
    """Run ``command`` (beside ``other``, restarted as often as needed, if given) and time
    it; the other process is interrupted once the timed one exits."""
    neighbours, neighbour = 0, None
    with log.open("a") as out:
        out.write(f"\n### {scenario}: {shlex.join(command)}\n")
        out.flush()

        def start_neighbour() -> subprocess.Popen[bytes]:
            assert other is not None
            return subprocess.Popen([*other, *_run_dir(work, "other")], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        try:
            load_before = os.getloadavg()[0]
            if other is not None:
                neighbour, neighbours = start_neighbour(), 1
            started = time.perf_counter()
            timed = subprocess.Popen([*command, *_run_dir(work, "timed")], env=env,
                                     stdout=out, stderr=subprocess.STDOUT)
            while True:
                pid, status, usage = os.wait4(timed.pid, os.WNOHANG)
                if pid:
                    break
                if neighbour is not None and neighbour.poll() is not None:
                    neighbour, neighbours = start_neighbour(), neighbours + 1
                time.sleep(0.1)
            wall = time.perf_counter() - started
            timed.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if neighbour is not None and neighbour.poll() is None:
                neighbour.send_signal(signal.SIGINT)
                try:
                    neighbour.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    neighbour.kill()
                    neighbour.wait()
    return Timing(scenario, wall, usage.ru_utime + usage.ru_stime, timed.returncode,
                  neighbours - 1 if other is not None else 0,
                  (load_before, os.getloadavg()[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", default=COMMAND,
                        help=f"the timed command, without --out (default: {COMMAND})")
    parser.add_argument("--other", default=None,
                        help="the command of the other process (default: the same)")
    parser.add_argument("--prepare", default=PREPARE,
                        help=f"run once, untimed, before the timings (default: {PREPARE})")
    parser.add_argument("--scenarios", default="alone,before,after",
                        help="which timings, in order (default alone,before,after)")
    parser.add_argument("--pause-builds", action="store_true",
                        help=f"SIGSTOP '{BUILDS}' processes while timing (always resumed)")
    parser.add_argument("--log", default=None,
                        help="file for the timed runs' output (default: in the work folder)")
    args = parser.parse_args(argv)
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(scenarios) - {"alone", "before", "after"}
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; use alone, before, after")
    command = shlex.split(args.command)
    other = shlex.split(args.other) if args.other else command
    cores = available_cores()
    with tempfile.TemporaryDirectory(prefix="n2n-oversubscription-") as folder:
        work = Path(folder)
        log = Path(args.log) if args.log else work / "runs.log"
        print(f"{cores} cores; timed: {shlex.join(command)}; other: {shlex.join(other)}")
        if args.prepare:
            print(f"preparing: {args.prepare}", flush=True)
            subprocess.run(shlex.split(args.prepare), env=_environment(work / "home", None),
                           check=True, stdout=subprocess.DEVNULL)
        timings = []
        for scenario in scenarios:
            env = _environment(work / "home", cores if scenario == "before" else None)
            with _builds_paused(args.pause_builds):
                timing = time_command(scenario, command, None if scenario == "alone" else other,
                                      env, work, log)
            timings.append(timing)
            print(f"{scenario:7s} wall {timing.wall:7.1f} s   CPU {timing.cpu:7.1f} s   "
                  f"exit {timing.exit_code}   other restarted {timing.neighbours}x   "
                  f"load {timing.load[0]:.1f} -> {timing.load[1]:.1f}", flush=True)
        print()
        print("| scenario | threads | wall | CPU (user + system) | CPU/wall | load at start, end |")
        print("|---|---|---|---|---|---|")
        described = {"alone": "budget (alone: every core)",
                     "before": f"N2N_THREADS={cores} in both (every core each)",
                     "after": "budget (shared)"}
        for timing in timings:
            print(f"| {timing.scenario} | {described[timing.scenario]} | {timing.wall:.1f} s | "
                  f"{timing.cpu:.1f} s | {timing.cpu / timing.wall:.2f} | "
                  f"{timing.load[0]:.1f}, {timing.load[1]:.1f} |")
        if args.log is None and any(timing.exit_code for timing in timings):
            print(log.read_text(), file=sys.stderr)
    return 1 if any(timing.exit_code for timing in timings) else 0


if __name__ == "__main__":
    sys.exit(main())
