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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
    from n2n_env.bench.build import BuildError, BuildSettings, build
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
    except BuildError as error:
        print(f"n2n: error: {error}", file=sys.stderr)
        return 1
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


def register(commands: argparse._SubParsersAction, add_command: AddCommand) -> None:
    """Add the ``bench`` command group to the ``n2n`` parser."""
    group = commands.add_parser("bench", help="N2N-Bench: tables of real rewards for RL research")
    sub = group.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)
    cmd = add_command(sub, "build", _build,
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
