"""``n2n bench``: build N2N-Bench tables, describe them, run agents on them, validate logs.

Registered into the ``n2n`` parser by :func:`register`; the handlers import their heavy
modules only when they run, so ``n2n --help`` stays quick.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from n2n_env.arch import Architecture
from n2n_env.bench.spaces import SPACES
from n2n_env.cli import UsageError

AddCommand = Callable[..., argparse.ArgumentParser]
DEFAULT_SEEDS = {"removal": (0, 1, 2), "shrink": (0, 1)}
"""Training seeds per space: 3 for the removal table, 2 for the larger shrink table."""


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        seeds = ()
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"expected distinct integers >= 0 separated by commas, got {text!r}")
    return seeds


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        shard = int(index), int(count)
    except ValueError:
        shard = (-1, 0)
    if shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"expected I/N with 0 <= I < N, got {text!r}")
    return shard


def _positive_number(cast: Callable[[str], float], name: str) -> Callable[[str], float]:
    """An argparse type accepting finite values of ``cast`` above 0, described as ``name``."""

    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            value = 0
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}")
        return value

    return parse


_positive = _positive_number(int, "a positive integer")
_positive_seconds = _positive_number(float, "a positive number of seconds")


def _read_architecture(path: str) -> Architecture:
    """The architecture JSON at ``path``, or a UsageError saying what is wrong with it."""
    try:
        return Architecture.from_json(Path(path).read_text())
    except OSError as error:
        raise UsageError(f"cannot read the architecture file {path!r}: {error.strerror}"
                         ) from None
    except ValueError as error:
        raise UsageError(f"{path!r} is not an architecture JSON: {error}") from None


def _build(args: argparse.Namespace) -> int:
    from n2n_env.bench.build import BuildSettings, build
    from n2n_env.device import use_all_cores

    if args.threads is not None:
        import torch

        # use_all_cores(), which the evaluators call, respects OMP_NUM_THREADS.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    else:
        use_all_cores()
    work = Path(args.work or f"n2n-bench/{args.space}-{args.teacher}-{args.dataset}")
    seeds = args.seeds or DEFAULT_SEEDS[args.space]
    words = ["n2n", "bench", "build", args.space, "--teacher", args.teacher, "--dataset",
             args.dataset, "--seeds", ",".join(map(str, seeds)), "--part-size",
             str(args.part_size), "--work", str(work)]
    start = None
    if args.start:
        if args.space != "shrink":
            raise UsageError("--start is for the shrink space only")
        start = _read_architecture(args.start)
        words += ["--start", args.start]
    if args.teacher_epochs:
        words += ["--teacher-epochs", str(args.teacher_epochs)]
    if args.data_root:
        words += ["--data-root", args.data_root]
    if args.out:
        words += ["--out", args.out]
    settings = BuildSettings(
        space=args.space, work_dir=work, out=Path(args.out) if args.out else None,
        teacher=args.teacher, teacher_epochs=args.teacher_epochs, dataset=args.dataset,
        data_root=args.data_root, seeds=seeds, start=start,
        part_size=args.part_size, shard=args.shard,
        device=None if args.device == "auto" else args.device,
        progress=not args.no_progress, command=shlex.join(words))
    try:
        status = build(settings)
    except KeyboardInterrupt:
        print(f"n2n: interrupted; finished parts are kept in {work}; rerun the same command "
              "to continue", file=sys.stderr)
        return 130
    print(f"{args.space}: {status.students} distinct students, {status.trainable} trained "
          f"per seed; parts {status.parts_done}/{status.parts_total} done in {work}")
    if status.table is not None:
        print(f"table written to {status.table}")
    elif status.complete:
        print("every part is done; pass --out FILE to write the table")
    return 0


def _table_path(space: str, given: str | None) -> Path:
    from n2n_env.bench.lookup import shipped_table_path

    return Path(given) if given else shipped_table_path(space)


def _info(args: argparse.Namespace) -> int:
    from n2n_env.bench.landscape import describe
    from n2n_env.bench.table import BenchTable

    print(describe(BenchTable.load(_table_path(args.space, args.table))))
    return 0


def _rl(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from agents import registry
    from n2n_env.bench import report
    from n2n_env.bench.rl import RunSpec, read_logs, run_all
    from n2n_env.bench.table import BenchTable

    try:
        agents = tuple(dict.fromkeys(registry.check_spec(text).label
                                     for text in _agent_texts(args.agents)))
    except ValueError as error:
        raise UsageError(str(error)) from None
    path = _table_path(args.space, args.table)
    table = BenchTable.load(path)
    if table.header.space != args.space:
        raise UsageError(f"{path} is a {table.header.space} table, not a {args.space} one")
    evaluations = None if args.seconds else args.evaluations
    budget = (f"{args.seconds:g} simulated seconds per run" if args.seconds
              else f"{evaluations} evaluations per run")
    out = Path(args.out or f"n2n-bench-rl/{args.space}")
    words = ["n2n", "bench", "rl", args.space, "--agents", *_agent_words(agents), "--seeds",
             str(args.seeds), "--reward-seed", args.reward_seed, "--out", str(out)]
    words += ["--seconds", f"{args.seconds:g}"] if args.seconds else [
        "--evaluations", str(evaluations)]
    if args.table:
        words += ["--table", args.table]
    # The shipped table is recorded as null (not this machine's path to it), so that the
    # run directory validates and continues on any installation; the digest says which
    # table it was either way.
    settings = {"space": args.space, "table": args.table, "table_digest": table.digest(),
                "agents": list(agents), "seeds": args.seeds, "evaluations": evaluations,
                "seconds": args.seconds, "reward_seed": args.reward_seed}
    run_file = out / "run.json"
    if run_file.exists():
        found = json.loads(run_file.read_text())
        same = ("table_digest", "seeds", "evaluations", "seconds", "reward_seed")
        if any(found.get(key) != settings[key] for key in same):
            raise UsageError(f"{out} holds a run with other settings or another table "
                             f"({run_file}); pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({**settings, "command": shlex.join(words)}, indent=1))
    specs = [RunSpec(agent, seed, str(path), evaluations, args.seconds, args.reward_seed)
             for agent in agents for seed in range(args.seeds)]
    with tqdm(total=len(specs), desc="n2n bench rl", unit="run",
              disable=args.no_progress) as bar:
        logs = run_all(specs, out, workers=args.workers, on_done=lambda _: bar.update(1))
    records = read_logs(logs)
    summaries = report.summarize(records, table, evaluations)
    text = report.markdown(summaries, table, budget, shlex.join(words))
    (out / "results.md").write_text(text)
    report.write_summary(summaries, out / "summary.json")
    plots = report.plot(records, table, out, evaluations)
    print(text)
    print(f"episode logs: {out / 'episodes'}; plots: {', '.join(p.name for p in plots)}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    import json

    from n2n_env.bench.replay import validate
    from n2n_env.bench.rl import read_logs
    from n2n_env.bench.table import BenchTable

    paths: list[Path] = []
    table_path = Path(args.table) if args.table else None
    digests: dict[str, Path] = {}  # the tables run directories say their logs were made against
    for given in map(Path, args.logs):
        if given.is_dir():
            paths += sorted((given / "episodes").glob("*.csv"))
            if (given / "run.json").exists():
                run = json.loads((given / "run.json").read_text())
                if table_path is None:
                    table_path = (Path(run["table"]) if run.get("table") else
                                  _table_path(run["space"], None))
                if run.get("table_digest"):
                    digests.setdefault(run["table_digest"], given)
        else:
            paths.append(given)
    if len(digests) > 1:
        raise UsageError("these run directories were made against different tables ("
                         + ", ".join(f"{path}: {digest}" for digest, path in digests.items())
                         + "); validate them one at a time")
    digest = next(iter(digests), None)
    if table_path is None:
        raise UsageError("name the table the logs were made against: --table FILE (or pass "
                         "a run directory with its run.json)")
    if not paths:
        raise UsageError(f"no episode logs in {', '.join(args.logs)}")
    try:
        records = read_logs(paths)
    except OSError as error:
        raise UsageError(f"cannot read a log: {error}") from None
    except ValueError as error:
        print(f"n2n: error: {error}", file=sys.stderr)
        return 1
    table = BenchTable.load(table_path)
    if digest is not None and table.digest() != digest:
        print(f"n2n: error: the logs were made against the table of digest {digest}, and "
              f"{table_path} has digest {table.digest()}; pass that table with --table",
              file=sys.stderr)
        return 1
    mismatches = validate(records, table)
    if mismatches:
        for mismatch in mismatches[:20]:
            print(f"MISMATCH {mismatch}")
        print(f"{len(mismatches)} mismatches in {len(records)} episodes of {len(paths)} logs "
              f"against {table_path}")
        return 1
    print(f"{len(records)} episodes of {len(paths)} logs replayed against {table_path}: "
          "every reward, student, true reward and simulated time matches")
    return 0


def _agent_texts(arguments: list[str] | None) -> list[str]:
    """The agent specs of ``--agents``: an argument holding a ':' is one spec
    (``NAME:key=value,...``); any other is a comma-separated list of names. Default:
    every built-in agent."""
    if not arguments:
        from agents.registry import AGENT_NAMES

        return list(AGENT_NAMES)
    texts: list[str] = []
    for argument in arguments:
        if ":" in argument:
            texts.append(argument)
        else:
            texts += [name.strip() for name in argument.split(",") if name.strip()]
    return texts


def _agent_words(labels: tuple[str, ...]) -> list[str]:
    """``--agents``'s arguments for ``labels``: the plain names as one comma-separated
    list, then each spec with settings on its own."""
    plain = [label for label in labels if ":" not in label]
    return ([",".join(plain)] if plain else []) + [label for label in labels if ":" in label]


def _guarded(handler: Callable[[argparse.Namespace], int]
             ) -> Callable[[argparse.Namespace], int]:
    """``handler`` with damaged or foreign tables, parts and logs reported on one line."""

    def run(args: argparse.Namespace) -> int:
        from n2n_env.bench.build import BuildError
        from n2n_env.bench.table import BenchTableError

        try:
            return handler(args)
        except (BenchTableError, BuildError) as error:
            print(f"n2n: error: {error}", file=sys.stderr)
            return 1

    return run


def register(commands: argparse._SubParsersAction, add_command: AddCommand) -> None:
    """Add the ``bench`` command group to the ``n2n`` parser."""
    group = commands.add_parser("bench", help="N2N-Bench: tables of real rewards for RL research")
    sub = group.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)
    cmd = add_command(sub, "build", _guarded(_build),
                      "train every distinct student of a search space at every seed and "
                      "store the results as a table (resumable; hours on a CPU)")
    cmd.add_argument("space", choices=SPACES, help="removal (every keep mask of the teacher) "
                     "or shrink (every shrink vector of the teacher)")
    cmd.add_argument("--teacher", default="conv3", metavar="NAME",
                     help="zoo teacher (default conv3, N2N-Bench's)")
    cmd.add_argument("--teacher-epochs", type=_positive, metavar="N",
                     help="epochs to train the teacher on first use (default: the recipe's)")
    cmd.add_argument("--start", metavar="JSON", help="shrink space only: the start "
                     "architecture, derived from the teacher (default: the teacher itself)")
    cmd.add_argument("--dataset", default="mnist-10k", metavar="NAME",
                     help="dataset (default mnist-10k)")
    cmd.add_argument("--data-root", metavar="DIR", help="folder holding dataset files")
    cmd.add_argument("--seeds", type=_seeds, metavar="S,S,...",
                     help="distillation seeds (default 0,1,2 for removal, 0,1 for shrink)")
    cmd.add_argument("--work", metavar="DIR", help="work directory holding the teacher and "
                     "finished parts (default n2n-bench/SPACE-TEACHER-DATASET)")
    cmd.add_argument("--out", metavar="FILE", help="write the table here once every part is "
                     "done (.npz)")
    cmd.add_argument("--part-size", type=_positive, default=64, metavar="N",
                     help="students per part file (default 64)")
    cmd.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                     help="build only parts I, I+N, ... (to split a build over N processes)")
    cmd.add_argument("--threads", type=_positive, metavar="N",
                     help="CPU threads (default: every core); 1 beside other work")
    cmd.add_argument("--device", default="auto", metavar="D",
                     help="auto (default: CUDA when available), cpu, cuda or cuda:N")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar")

    cmd = add_command(sub, "info", _guarded(_info), "describe a table: how it was built, its "
                      "optimum, the noise between seeds and how hard random search finds it")
    cmd.add_argument("space", choices=SPACES, help="which shipped table (or --table's space)")
    cmd.add_argument("--table", metavar="FILE", help="a table file (default: the shipped one)")

    cmd = add_command(sub, "rl", _guarded(_rl), "run agents x seeds on a benchmark environment and "
                      "report regret with interquartile means and bootstrap intervals")
    cmd.add_argument("space", choices=SPACES, help="N2NRemovalBench-v0 or N2NShrinkBench-v0")
    cmd.add_argument("--table", metavar="FILE", help="a table file (default: the shipped one)")
    cmd.add_argument("--agents", nargs="+", default=None, metavar="SPEC",
                     help="agents: comma-separated names, and NAME:key=value,... for an agent "
                     "with other settings (config fields, or SB3 constructor arguments), e.g. "
                     "reinforce,random reinforce:learning_rate=0.03 (default: every built-in "
                     "agent)")
    cmd.add_argument("--seeds", type=_positive, default=20, metavar="N",
                     help="runs per agent, seeds 0..N-1 (default 20)")
    cmd.add_argument("--evaluations", type=_positive, default=300, metavar="N",
                     help="evaluations (episodes) per run (default 300)")
    cmd.add_argument("--seconds", type=_positive_seconds, metavar="S",
                     help="budget in simulated seconds per run instead of evaluations")
    cmd.add_argument("--reward-seed", choices=("draw", "mean"), default="draw",
                     help="draw one stored seed per evaluation (default) or use the mean")
    cmd.add_argument("--out", metavar="DIR", help="run directory (default n2n-bench-rl/SPACE);"
                     " rerunning continues it")
    cmd.add_argument("--workers", type=_positive, default=1, metavar="N",
                     help="worker processes, one torch thread each (default 1)")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar")

    cmd = add_command(sub, "validate", _guarded(_validate), "replay logged episodes against "
                      "the table and check every reward")
    cmd.add_argument("logs", nargs="+", metavar="LOG",
                     help="episode CSV files or 'n2n bench rl' run directories")
    cmd.add_argument("--table", metavar="FILE", help="the table (default: the run's)")
