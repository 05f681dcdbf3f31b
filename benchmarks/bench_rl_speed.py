"""How long does `n2n bench rl` take? (issue 12 target: every built-in agent, 20 seeds, 300
evaluations each, on one table, in under 15 minutes on 2 cores)

Runs the harness with the given settings into a fresh directory and prints the wall time of
the whole run and the mean seconds of one run per agent (measured in the worker that ran
it). Uses a shipped table, or ``--table FILE``.

Run: ``python benchmarks/bench_rl_speed.py removal --workers 2`` (minutes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from agents.registry import AGENT_NAMES
from n2n_env.bench.lookup import shipped_table_path
from n2n_env.bench.rl import RunSpec, run, write_log

TARGET_MINUTES = 15.0


def timed_run(spec: RunSpec) -> tuple[RunSpec, float, list[dict]]:
    started = time.perf_counter()
    records = run(spec)
    return spec, time.perf_counter() - started, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space", choices=("removal", "shrink"))
    parser.add_argument("--table", help="table file (default: the shipped one)")
    parser.add_argument("--agents", default=",".join(AGENT_NAMES))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    table = args.table or str(shipped_table_path(args.space))
    specs = [RunSpec(agent, seed, table, args.evaluations)
             for agent in args.agents.split(",") for seed in range(args.seeds)]
    seconds: dict[str, list[float]] = {}
    out = Path(tempfile.mkdtemp(prefix="n2n-bench-rl-speed-"))
    started = time.perf_counter()
    if args.workers <= 1:
        results = map(timed_run, specs)
    else:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        pool = ProcessPoolExecutor(args.workers, mp_context=get_context("spawn"))
        results = pool.map(timed_run, specs)
    for spec, elapsed, records in results:
        seconds.setdefault(spec.agent, []).append(elapsed)
        write_log(out / spec.log_name, records)
    wall = time.perf_counter() - started
    print(f"table {table}; {len(specs)} runs of {args.evaluations} evaluations; "
          f"{args.workers} workers")
    print("| agent | mean s per run |")
    print("|---|---|")
    for agent, values in seconds.items():
        print(f"| {agent} | {statistics.mean(values):.1f} |")
    verdict = "met" if wall / 60 < TARGET_MINUTES else "NOT met"
    print(f"wall time: {wall / 60:.1f} min (target {TARGET_MINUTES:.0f} min: {verdict}); "
          f"logs in {out}")


if __name__ == "__main__":
    main()
