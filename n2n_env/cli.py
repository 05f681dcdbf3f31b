"""The ``n2n`` command line: teachers, the model zoo and datasets.

Every leaf command is a function ``(args) -> int`` registered with
:func:`_add_command`; adding a command group (``n2n compress ...``) means writing one
``_register_*`` function and calling it from :func:`build_parser`. Bad input exits with
status 2 and one line on stderr, a missing dataset or unreadable checkpoint with 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from n2n_env import checkpoints, data, recipes, teacher, zoo
from n2n_env.device import resolve_device, use_all_cores

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """Invalid user input detected after parsing; reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line (no usage dump) with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _int_at_least(minimum: int, name: str) -> Callable[[str], int]:
    """An argparse type accepting integers >= ``minimum``, described as ``name``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {name}, got {text}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W of positive integers, got {text!r}")
    return shape  # type: ignore[return-value]


def _check_choice(kind: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise UsageError(f"unknown {kind} {value!r}; choose from: {', '.join(allowed)}")
    return value


def _add_command(
    group: argparse._SubParsersAction, name: str, handler: Handler, help_text: str
) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


# ------------------------------------------------------------------ teacher


def _teacher_train(args: argparse.Namespace) -> int:
    _check_choice("model", args.model, zoo.names())
    _check_choice("dataset", args.dataset, data.names())
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    dataset = data.load(args.dataset, root=args.data_root)
    try:
        arch = zoo.get(
            args.model, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
            width=args.width,
        )
    except ValueError as exc:
        raise UsageError(f"{args.model} does not fit {args.dataset}: {exc}") from None
    recipe = recipes.recipe_for(args.dataset)
    if args.epochs is not None:
        recipe = recipe.with_epochs(args.epochs)
    overrides = {"lr": args.lr, "batch_size": args.batch_size}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    out = Path(args.out) if args.out else checkpoints.teacher_path(
        args.model, args.dataset, args.width, args.seed
    )
    resume = checkpoints.partial_path(out)
    if args.no_resume:
        resume.unlink(missing_ok=True)
    c, h, w = dataset.input_shape
    print(f"teacher:    {args.model} (width {args.width:g}) on {args.dataset} "
          f"({c}x{h}x{w}, {dataset.num_classes} classes, {len(dataset.train)} train / "
          f"{len(dataset.val)} val / {len(dataset.test)} test)")
    print(f"params:     {arch.num_params():,}   FLOPs/image: {_human(arch.flops())}")
    print(f"recipe:     {recipe.epochs} epochs, {recipe.optimizer} lr {recipe.lr:g}, "
          f"x{recipe.gamma:g} at {list(recipe.milestones)}, batch {recipe.batch_size}, "
          f"augment {'on' if recipe.augment else 'off'}")
    cores = use_all_cores() if device.type == "cpu" else 0
    threads = f" ({cores} thread{'s' if cores > 1 else ''})" if cores else ""
    print(f"device:     {device}{threads}")
    if resume.exists():
        print(f"resuming:   {resume} (if it matches this run)")
    sys.stdout.flush()
    started = time.perf_counter()
    trained = teacher.train_teacher(
        arch, dataset, recipe, device=device, seed=args.seed, progress=not args.no_progress,
        resume_path=resume,
    )
    wall = time.perf_counter() - started
    record = checkpoints.TeacherRecord(
        architecture=arch, dataset=args.dataset, dataset_fingerprint=dataset.fingerprint,
        val_accuracy=trained.val_accuracy, test_accuracy=trained.test_accuracy, recipe=recipe,
        model_name=args.model, width=args.width, seed=args.seed, seconds=trained.seconds,
    )
    checkpoints.save_teacher(out, trained.model, record)
    resume.unlink(missing_ok=True)
    print(f"wall time:  {wall:.1f} s (training total {trained.seconds:.1f} s)")
    print(f"val acc:    {_pct(trained.val_accuracy)}")
    print(f"test acc:   {_pct(trained.test_accuracy)}")
    print(f"checkpoint: {out}")
    return 0


def _teacher_list(args: argparse.Namespace) -> int:
    paths = list(checkpoints.cached_teachers())
    folder = checkpoints.n2n_home() / "teachers"
    if not paths:
        print(f"no cached teachers in {folder}; train one with: n2n teacher train")
        return 0
    print(f"cached teachers in {folder}:")
    header = ("file", "model", "dataset", "width", "params", "val acc", "test acc", "epochs")
    rows = [header]
    for path in paths:
        try:
            rec, _ = checkpoints.read_teacher_record(path)
        except (OSError, ValueError) as exc:
            print(f"  {path.name}: unreadable ({exc})", file=sys.stderr)
            continue
        rows.append((
            path.name, rec.model_name or rec.architecture.name, rec.dataset, f"{rec.width:g}",
            f"{rec.architecture.num_params():,}", _pct(rec.val_accuracy),
            _pct(rec.test_accuracy), str(rec.recipe.epochs),
        ))
    _print_table(rows)
    return 0


def _register_teacher(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("teacher", help="train and list teacher networks")
    sub = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = _add_command(
        sub, "train", _teacher_train,
        "train a teacher with the paper's recipe (appendix 10.2) and cache it",
    )
    train.add_argument("--model", default="conv4", metavar="NAME",
                       help="zoo model (default conv4; see 'n2n zoo list')")
    train.add_argument("--dataset", default="digits", metavar="NAME",
                       help="dataset (default digits; see 'n2n data list')")
    train.add_argument("--epochs", type=_positive_int, metavar="N",
                       help="epochs (default: the recipe's); milestones scale with it")
    train.add_argument("--width", type=_positive_float, default=1.0, metavar="W",
                       help="width multiplier (default 1)")
    train.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                       help="training seed (default 0)")
    train.add_argument("--data-root", metavar="DIR", help="folder holding dataset files")
    train.add_argument("--device", default="auto", metavar="D",
                       help="auto (default), cpu, cuda or cuda:N")
    train.add_argument("--batch-size", type=_positive_int, metavar="B",
                       help="batch size (default: the recipe's)")
    train.add_argument("--lr", type=_positive_float, metavar="LR",
                       help="initial learning rate (default: the recipe's)")
    train.add_argument("--out", metavar="PATH", help="checkpoint path (default: in the cache)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--no-resume", action="store_true",
                       help="discard a partial checkpoint from an interrupted run")
    _add_command(sub, "list", _teacher_list, "list cached teacher checkpoints")


# ------------------------------------------------------------------ zoo and data


def _zoo_list(args: argparse.Namespace) -> int:
    if args.dataset is not None:
        if args.num_classes is not None:
            raise UsageError("--num-classes goes with --input-shape, not with --dataset")
        _check_choice("dataset", args.dataset, data.names())
        (shape, classes), where = data.info(args.dataset), f"dataset {args.dataset}"
    else:
        shape, classes = args.input_shape or (3, 32, 32), args.num_classes or 10
        where = "input"
    print(f"{where}: {'x'.join(map(str, shape))}, {classes} classes, width {args.width:g}")
    rows = [("model", "params", "FLOPs/image")]
    for name in zoo.names():
        try:
            arch = zoo.get(name, input_shape=shape, num_classes=classes, width=args.width)
            rows.append((name, f"{arch.num_params():,}", _human(arch.flops())))
        except ValueError as exc:
            rows.append((name, "n/a", str(exc).splitlines()[0]))
    _print_table(rows)
    return 0


def _data_list(args: argparse.Namespace) -> int:
    offline = {"digits": "bundled with scikit-learn", "synthetic": "generated, for tests",
               "mnist-10k": "local MNIST test files", "cifar10-14k": "local cifar10-subset.npz"}
    print(f"data root: {data.resolve_root(args.data_root)}")
    _print_table([("dataset", "source"),
                  *((n, offline.get(n, "torchvision download")) for n in data.names())])
    return 0


def _data_download(args: argparse.Namespace) -> int:
    _check_choice("dataset", args.name, data.names())
    root = data.download(args.name, root=args.data_root)
    print(f"{args.name}: ready under {root}")
    return 0


def _register_zoo(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("zoo", help="teacher architectures")
    sub = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = _add_command(sub, "list", _zoo_list, "list zoo models with parameter counts and FLOPs")
    source = ls.add_mutually_exclusive_group()
    source.add_argument("--dataset", metavar="NAME",
                        help="take the input shape and classes from a dataset")
    source.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                        help="input shape (default 3,32,32)")
    ls.add_argument("--num-classes", type=_positive_int, metavar="K", help="classes (default 10)")
    ls.add_argument("--width", type=_positive_float, default=1.0, metavar="W",
                    help="width multiplier (default 1)")
    ls.add_argument("--data-root", metavar="DIR", help="folder holding dataset files")


def _register_data(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("data", help="datasets")
    sub = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = _add_command(sub, "list", _data_list, "list the datasets n2n knows")
    ls.add_argument("--data-root", metavar="DIR", help="folder holding dataset files")
    dl = _add_command(sub, "download", _data_download, "download a dataset's files")
    dl.add_argument("name", help="dataset name (see 'n2n data list')")
    dl.add_argument("--data-root", metavar="DIR", help="folder to download into")


# ------------------------------------------------------------------ compress


def _constraint(text: str) -> tuple[str, float]:
    """``QUANTITY<=BOUND`` (params or flops) as a (quantity, bound) pair."""
    name, sep, bound = text.replace(" ", "").partition("<=")
    try:
        value = float(bound)
    except ValueError:
        value = float("nan")
    if not sep or name not in ("params", "flops") or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected params<=N or flops<=N with N a positive number, got {text!r}")
    return name, value


def _compress(args: argparse.Namespace) -> int:
    from n2n_env import pipeline

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    for stage in stages:
        _check_choice("stage", stage, pipeline.STAGES)
    _check_choice("agent", args.agent, pipeline.AGENTS)
    _check_choice("evaluator", args.evaluator, ("distill", "mock"))
    if not args.teacher.endswith(".pt"):
        _check_choice("teacher (or a checkpoint path ending in .pt)", args.teacher, zoo.names())
    _check_choice("dataset", args.dataset, data.names())
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise UsageError("--resume DIR continues the run in DIR; do not also give --out")
    run = Path(args.resume or args.out or pipeline.default_run_dir(args.teacher, args.dataset))
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if device.type == "cpu":
        use_all_cores()
    try:
        result = pipeline.compress(
            args.teacher, args.dataset, data_root=args.data_root, stages=stages,
            iterations=args.iterations, agent=args.agent,
            constraints=dict(args.constraint) or None, evaluator=args.evaluator,
            policy_init=args.policy_init, out=run, resume=args.resume is not None,
            finetune_epochs=args.finetune_epochs, device=str(device), seed=args.seed,
            progress=not args.no_progress, teacher_width=args.teacher_width,
            teacher_epochs=args.teacher_epochs, anneal_episodes=args.anneal_episodes,
        )
    except KeyboardInterrupt:
        if (run / "state.json").exists():
            print(f"n2n: interrupted; continue with: n2n compress --resume "
                  f"{shlex.quote(str(run))}", file=sys.stderr)
        else:
            print("n2n: interrupted before the first search iteration finished; nothing "
                  "to resume", file=sys.stderr)
        return 130
    except ValueError as exc:
        if isinstance(exc, (checkpoints.CheckpointError, data.DatasetCorruptError)):
            raise
        raise UsageError(str(exc).splitlines()[0]) from None
    print(result.table())
    print(f"wall time:  {result.seconds:.1f} s")
    print(f"run dir:    {result.out}")
    return 0


def _register_compress(commands: argparse._SubParsersAction) -> None:
    from n2n_env.pipeline import DEFAULT_ITERATIONS

    cmd = _add_command(commands, "compress", _compress,
                       "compress a teacher: layer removal, then layer shrinkage, then "
                       "fine-tuning (paper Algorithm 1 and section 3.5)")
    cmd.add_argument("--teacher", default="conv4", metavar="NAME_OR_CHECKPOINT",
                     help="zoo model (default conv4) or a teacher checkpoint (.pt)")
    cmd.add_argument("--dataset", default="digits", metavar="NAME",
                     help="dataset (default digits; see 'n2n data list')")
    cmd.add_argument("--data-root", metavar="DIR", help="folder holding dataset files")
    cmd.add_argument("--stages", default="removal,shrink", metavar="LIST",
                     help="comma-separated stages, in order (default removal,shrink)")
    cmd.add_argument("--iterations", type=_positive_int, metavar="N",
                     help=f"policy updates (of 5 rollouts) per stage (default "
                     f"{DEFAULT_ITERATIONS}; with --resume, the run's own, or more to extend it)")
    cmd.add_argument("--agent", default="reinforce", metavar="NAME",
                     help="reinforce (default), actor-critic, ppo, a2c, maskable-ppo, "
                     "recurrent-ppo (these four need the sb3 extra) or random")
    cmd.add_argument("--constraint", type=_constraint, action="append", default=[],
                     metavar="Q<=N", help="upper bound, e.g. params<=20000 (repeatable); "
                     "relaxed early in each stage, see --anneal-episodes")
    cmd.add_argument("--anneal-episodes", type=_non_negative_int, metavar="N",
                     help="episodes per stage over which eps_t, the share of its reward a "
                     "student over a constraint keeps, falls from 1 to 0 (paper 3.3.1; "
                     "default: half of the stage's episodes; 0: hard from the start)")
    cmd.add_argument("--policy-init", metavar="PATH",
                     help="start stage 1 from a saved removal policy (removal_policy.pt of "
                     "a reinforce or actor-critic run, any teacher)")
    cmd.add_argument("--teacher-width", type=_positive_float, default=1.0, metavar="W",
                     help="width multiplier of a zoo teacher trained on first use (default 1)")
    cmd.add_argument("--teacher-epochs", type=_positive_int, metavar="N",
                     help="epochs to train a zoo teacher on first use (default: the "
                     "dataset recipe's)")
    cmd.add_argument("--out", metavar="DIR",
                     help="run directory (default n2n-runs/<teacher>-<dataset>-<time>)")
    cmd.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR")
    cmd.add_argument("--finetune-epochs", type=_positive_int, metavar="N",
                     help="epochs of the final training (default: the teacher recipe's; "
                     "with --resume, the run's own)")
    cmd.add_argument("--evaluator", default="distill", metavar="NAME",
                     help="distill (default, real training) or mock (instant, NOT REAL)")
    cmd.add_argument("--device", default="auto", metavar="D",
                     help="auto (default), cpu, cuda or cuda:N")
    cmd.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                     help="seed (default 0)")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bars")


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def build_parser() -> argparse.ArgumentParser:
    """The full ``n2n`` parser; each subcommand stores its handler as ``handler``."""
    parser = _Parser(prog="n2n", description="N2N network-to-network compression (ICLR 2018): "
                     "teachers, model zoo and datasets.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _register_teacher(commands)
    _register_zoo(commands)
    _register_data(commands)
    _register_compress(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``n2n`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"n2n: error: {exc}", file=sys.stderr)
        return 2
    except (data.DatasetNotFoundError, data.DatasetCorruptError, checkpoints.CheckpointError,
            OSError) as exc:
        print(f"n2n: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("n2n: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
