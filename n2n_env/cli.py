"""The ``n2n`` command line: teachers, the model zoo, datasets and exporting students.

Every leaf command is a function ``(args) -> int`` registered with
:func:`_add_command`; adding a command group (``n2n compress ...``) means writing one
``_register_*`` function and calling it from :func:`build_parser` (``n2n compress`` is
registered from :mod:`n2n_env.cli_compress`, ``n2n paper`` from
:mod:`n2n_env.paper.cli`). Bad input exits with
status 2 and one line on stderr; a missing, damaged or foreign file (dataset, checkpoint,
policy, cache) or a diverged training with 1. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from agents.policy_files import PolicyFileError
from n2n_env import checkpoints, data, recipes, teacher, zoo
from n2n_env.cache import CacheFileError
from n2n_env.device import resolve_device, use_all_cores
from n2n_env.latency_table import LatencyTableError
from n2n_env.teacher_spec import cache_name, check_teacher_name

Handler = Callable[[argparse.Namespace], int]
FILE_ERRORS: tuple[type[Exception], ...] = (
    data.DatasetNotFoundError, data.DatasetCorruptError, checkpoints.CheckpointError,
    PolicyFileError, CacheFileError, LatencyTableError)
"""Damaged, foreign or missing files: reported on one line with exit status 1."""


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
    try:
        check_teacher_name(args.model, zoo.names())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.model.endswith(".pt"):
        raise UsageError(f"--model {args.model!r} is a checkpoint; name a zoo model or "
                         "an imported one (torchvision:NAME, file.py:FUNCTION)")
    _check_choice("dataset", args.dataset, data.names())
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    dataset = data.load(args.dataset, root=args.data_root)
    try:
        arch = teacher.teacher_architecture(args.model, dataset.input_shape,
                                            dataset.num_classes, args.width)
    except ValueError as exc:
        raise UsageError(f"{args.model} does not fit {args.dataset}: {exc}") from None
    recipe = recipes.recipe_for(args.dataset)
    if args.epochs is not None:
        recipe = recipe.with_epochs(args.epochs)
    overrides = {"lr": args.lr, "batch_size": args.batch_size}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    out = Path(args.out) if args.out else checkpoints.teacher_path(
        cache_name(args.model), args.dataset, args.width, args.seed
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
    try:
        trained = teacher.train_teacher(
            arch, dataset, recipe, device=device, seed=args.seed,
            progress="lines" if args.no_progress else True, resume_path=resume,
        )
    except KeyboardInterrupt:
        print("n2n: interrupted; rerun the same command (without --no-resume) to continue "
              "from the last finished epoch", file=sys.stderr)
        return 130
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
                       help="zoo model (default conv4; see 'n2n zoo list'), torchvision:NAME "
                       "or path/to/file.py:FUNCTION (docs/import.md)")
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
    train.add_argument("--batch-size", type=_int_at_least(2, "an integer >= 2"), metavar="B",
                       help="batch size, at least 2 (default: the recipe's)")
    train.add_argument("--lr", type=_positive_float, metavar="LR",
                       help="initial learning rate (default: the recipe's)")
    train.add_argument("--out", metavar="PATH", help="checkpoint path (default: in the cache)")
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar: one line per epoch instead")
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


def _export(args: argparse.Namespace) -> int:
    from n2n_env import export  # torch.onnx and onnxruntime only for this command

    _check_choice("format", args.format, export.FORMATS)
    try:
        result = export.export_student(args.source, args.format, out=args.out,
                                       stage=args.stage)
    except export.ExportError as exc:
        print(f"n2n: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except checkpoints.CheckpointError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    arch = result.architecture
    c, h, w = arch.input_shape
    print(f"student: {result.source} ({arch.name or 'unnamed'}, {arch.num_params():,} params, "
          f"input {c}x{h}x{w}, {arch.num_classes} classes)")
    kind = {"onnx": f"ONNX opset {export.ONNX_OPSET}, input '{export.INPUT_NAME}' [batch, {c}, "
                    f"{h}, {w}] -> '{export.OUTPUT_NAME}' [batch, {arch.num_classes}]",
            "torchscript": f"TorchScript for torch.jit.load, input [batch, {c}, {h}, {w}]",
            "state_dict": "state_dict + architecture JSON, for n2n_env.load_student"}
    for path in result.files:
        print(f"wrote:   {path}")
    print(f"format:  {kind[result.format]}")
    print(f"check:   {result.checked_with} on a random batch of {result.batch_size}: max abs "
          f"difference {result.max_abs_diff:.2g} (allowed {export.ATOL:g})")
    return 0


def _register_export(commands: argparse._SubParsersAction) -> None:
    parser = _add_command(
        commands, "export", _export,
        "write a run's student as ONNX, TorchScript or a state_dict, checked against it",
    )
    parser.add_argument("source", metavar="RUN_DIR",
                        help="an n2n compress run directory, or a student file NAME.pt "
                             "(with NAME.json beside it)")
    parser.add_argument("--format", required=True, metavar="FORMAT",
                        help="onnx (needs: pip install \"n2n[export]\"), torchscript or "
                             "state_dict")
    parser.add_argument("--out", metavar="PATH",
                        help="file (or folder) to write (default: in the run directory, "
                             "student.onnx, student.torchscript.pt or student.state_dict.pt; "
                             "beside a student file NAME.pt, NAME.onnx, ...)")
    parser.add_argument("--stage", metavar="NAME",
                        help="export the fine-tuned student of this stage (removal or "
                             "shrink) instead of the run's final one")


def _register_data(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("data", help="datasets")
    sub = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = _add_command(sub, "list", _data_list, "list the datasets n2n knows")
    ls.add_argument("--data-root", metavar="DIR", help="folder holding dataset files")
    dl = _add_command(sub, "download", _data_download, "download a dataset's files")
    dl.add_argument("name", help="dataset name (see 'n2n data list')")
    dl.add_argument("--data-root", metavar="DIR", help="folder to download into")


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _version() -> str:
    try:
        return importlib.metadata.version("n2n")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The full ``n2n`` parser; each subcommand stores its handler as ``handler``."""
    parser = _Parser(prog="n2n", description="N2N network-to-network compression (ICLR 2018): "
                     "teachers, model zoo, datasets, compression, export and the paper's "
                     "tables.")
    parser.add_argument("--version", action="version", version=f"n2n {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _register_teacher(commands)
    _register_zoo(commands)
    _register_data(commands)
    _register_export(commands)
    from n2n_env.cli_compress import register as register_compress

    register_compress(commands, _add_command)
    from n2n_env.bench.cli import register as register_bench

    register_bench(commands, _add_command)
    from n2n_env.paper.cli import register as register_paper

    register_paper(commands, _add_command)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _format_warning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, line: str | None = None) -> str:
    """A warning as one line for the command's user: no file, line number or source."""
    return f"n2n: warning: {_one_line(Warning(message))}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``n2n`` command line; returns the exit status. Expected failures (bad
    values, damaged or foreign files, divergence) print one line on stderr; a traceback
    means a bug."""
    args = build_parser().parse_args(argv)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _format_warning
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"n2n: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (*FILE_ERRORS, teacher.TrainingDivergedError, OSError) as exc:
        print(f"n2n: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("n2n: interrupted; nothing was saved, rerun the same command", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    # Run as ``python -m n2n_env.cli``, this file is ``__main__``, a second copy of the
    # module whose UsageError the commands (which import ``n2n_env.cli``) never raise:
    # hand over to the package's copy so that errors are reported, not traced back.
    from n2n_env.cli import main as package_main

    sys.exit(package_main())
