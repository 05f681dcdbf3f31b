"""``n2n paper TABLE... --work DIR``: reproduce the paper's tables, in resumable units.

Registered into the ``n2n`` parser by :func:`register`; the handler imports torch and the
runner only when it runs, so ``n2n --help`` stays quick. Bad values exit with status 2,
a damaged or foreign result file with 1 (see :mod:`n2n_env.cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from n2n_env.cli import UsageError, _positive_float, _positive_int

if TYPE_CHECKING:
    from n2n_env.paper.runner import UnitState
    from n2n_env.paper.settings import PaperSettings

__all__ = ["ESTIMATES", "register"]

AddCommand = Callable[..., argparse.ArgumentParser]
ESTIMATES = """\
tables (TABLE is the number or the name) and the wall time of their default runs on 2 CPU
cores, estimated from component costs measured by benchmarks/paper_unit_costs.py (table
5's measured in its run):
  1 compression   VGG-13 at full width (9.4M parameters) on mnist-10k: the teacher (38
                  min), then REINFORCE and random search x 3 seeds, each 40 + 40
                  iterations and two final trainings (measured for seed 0 with --jobs
                  2, one thread each: 4 h 12 min and 3 h 44 min): about 13 h with
                  --jobs 2; with --teacher-width 0.5 (teacher 24 min, candidates ~13 s)
                  a quarter of the FLOPs
  2 pruning       the teacher and the 3 REINFORCE searches of table 1 (shared with it in
                  the same --work), then 5 pruning runs of ~1 h (each up to ~100
                  pruning steps of 1% of the channels, with 100 fine-tuning steps that
                  cost ~0.9 s at full width and less as it narrows): about 5 h after
                  table 1
  3 distillation  ResNet-18 at width 0.25 on cifar10-14k: the teacher (~1.5 h), 3
                  REINFORCE searches (~2 h each: candidates ~8 s, then two 150-epoch
                  trainings), FitNet-4, VGG-small and SqueezeNet 1.1 trained for 150
                  epochs each: about 12 h
  4 constraints   table 1's teacher, 3 REINFORCE searches under params <= 20,000 (~4 h
                  each): about 12 h after table 1
  5 transfer      vgg11 -> vgg19 and resnet18 -> resnet34 at width 0.125 on cifar10-14k:
                  4 teachers (0.5-2 h each), then per seed a 100-iteration pre-training
                  on each source (16 and 36 min) and 2 x 10 iterations on each target
                  (1.5-5 min each): about 6 h with --jobs 2 (measured)

Each finished unit writes DIR/units/UNIT.json; commit DIR/units, DIR/teachers,
DIR/policies, DIR/carry and DIR/table-N.* (never DIR/runs; python -m n2n_env.paper.carry
DIR first copies unfinished units' runs to DIR/carry), and the same command on another
machine continues where this one stopped. docs/paper.md has the details."""
SETTINGS = ("dataset", "data_root", "teacher", "teacher_width", "teacher_epochs", "seeds",
            "agents", "iterations", "finetune_epochs", "evaluator", "max_params",
            "prune_runs", "prune_fraction", "prune_finetune_steps", "taylor_examples",
            "students", "kd_seeds", "pairs", "pretrain_iterations", "transfer_iterations")
"""The flags that become :class:`~n2n_env.paper.settings.PaperSettings` fields."""


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"expected distinct integers >= 0 separated by commas, got {text!r}")
    return values


def _names(text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return values


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for part in _names(text):
        source, sep, target = part.partition(":")
        if not sep or not source or not target:
            raise argparse.ArgumentTypeError(
                f"expected SOURCE:TARGET pairs separated by commas (vgg11:vgg19), got {text!r}")
        pairs.append((source, target))
    return tuple(pairs)


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _steps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _paper(args: argparse.Namespace) -> int:
    # The modules that write the table are loaded now, not when the hours of units end, so
    # that a process writes its table with the code it ran with, even if the files change.
    from n2n_env.device import resolve_device
    from n2n_env.paper import figures, report, runner  # noqa: F401
    from n2n_env.paper.table_files import write_table

    try:
        tables = _table_settings(args)
        _check_units(tables, args.only, running=not args.report)
        device = resolve_device(args.device)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    work = Path(args.work)
    try:
        if args.report:
            for settings in tables:
                write_table(settings, runner.states(settings, work), work, args.work, show=True)
            return 0
        for settings in tables:
            _check_extras(runner.states(settings, work))
    except (runner.UnitFileError, runner.UnitBusyError) as exc:
        print(f"n2n: error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.jobs > 1:
            try:
                with _honouring_ctrl_c():
                    failed = _jobs(tables, args, str(device))
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM: the workers have saved
                return _interrupted(tables, (), args.work)
            for settings in tables:
                write_table(settings, runner.states(settings, work), work, args.work, show=True)
            return 1 if failed else 0
        with _honouring_ctrl_c():
            return _one_after_another(tables, args, str(device))
    except (runner.UnitFileError, runner.UnitBusyError) as exc:  # at a table's writing
        print(f"n2n: error: {exc}", file=sys.stderr)
        return 1


def _one_after_another(tables: Sequence[PaperSettings], args: argparse.Namespace,
                       device: str) -> int:
    """Run the tables in this process, in the order given, writing each as it ends; one
    whose unit fails on a result file or a lock is reported, written as far as it got and
    left, and the others run (exit status 1). Ctrl-C writes every table not yet written
    and returns 130."""
    from n2n_env.device import use_all_cores
    from n2n_env.paper import runner
    from n2n_env.paper.table_files import write_table

    work = Path(args.work)
    if device == "cpu":
        use_all_cores()
    written: list[PaperSettings] = []
    status = 0
    try:
        for settings in tables:
            try:
                states = (runner.run_table(settings, work, device=device, only=args.only,
                                           progress="lines" if args.no_progress else True,
                                           command=settings.command(args.work)).states
                          if _runs_here(settings, args.only) else runner.states(settings, work))
            except (runner.UnitFileError, runner.UnitBusyError) as exc:
                print(f"n2n: error: {exc}", file=sys.stderr)
                if len(tables) == 1:
                    return 1
                _write_quietly(settings, args.work)
                print(f"n2n: table {settings.table} is left"
                      + ("; the next table runs" if settings != tables[-1] else ""),
                      file=sys.stderr)
                status = 1
            else:
                write_table(settings, states, work, args.work, show=True)
            written.append(settings)
    except KeyboardInterrupt:
        return _interrupted(tables, written, args.work)
    return status


@contextlib.contextmanager
def _honouring_ctrl_c() -> Iterator[None]:
    """Make SIGINT raise KeyboardInterrupt inside, even where this process was started
    with it ignored (``cmd &`` in a non-interactive script starts it so): Ctrl-C is how a
    run is stopped with its state saved, and it is how ``--jobs`` stops its workers;
    ignored, the workers would be killed after the grace period and lose what they held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not set from Python, left in place
            signal.signal(signal.SIGINT, previous)


def _interrupted(tables: Sequence[PaperSettings], written: Sequence[PaperSettings],
                 label: str) -> int:
    """After Ctrl-C (or SIGTERM, with ``--jobs``): write every table not yet written as
    far as its units got, say what the next run resumes, and return 130."""
    for settings in tables:
        if settings not in written:
            _write_quietly(settings, label)
    work = Path(label)
    print("n2n: interrupted; finished units are kept in "
          f"{work / 'units'}, and rerunning the same command resumes the "
          f"unfinished ones from {work / 'runs'}", file=sys.stderr)
    return 130


def _write_quietly(settings: PaperSettings, label: str) -> None:
    """Write a table from what its units hold, without printing it; a result file that
    cannot be read is reported, and the table left unwritten."""
    from n2n_env.paper import runner
    from n2n_env.paper.table_files import write_table

    work = Path(label)
    try:
        write_table(settings, runner.states(settings, work), work, label, show=False)
    except runner.UnitFileError as exc:
        print(f"n2n: error: table {settings.table} not written: {exc}", file=sys.stderr)


def _check_units(tables: Sequence[PaperSettings], only: Sequence[str] | None, *,
                 running: bool) -> None:
    """ValueError, before anything runs, if ``--only`` matches no unit of the tables, or
    if two tables to be run ask one unit for different things (:func:`plan.pool`)."""
    from n2n_env.paper.plan import plan, pool
    from n2n_env.paper.runner import select
    from n2n_env.paper.settings import tables_named

    if len(tables) == 1:
        if only:
            select(plan(tables[0]), only)
        return
    units = ([unit for unit, _ in pool(tables)] if running
             else list({unit.id: unit for settings in tables for unit in plan(settings)}
                       .values()))
    select(units, only or (), tables_named(settings.table for settings in tables))


def _table_settings(args: argparse.Namespace) -> list[PaperSettings]:
    """The settings of each table given: the settings flags it takes, over its recorded
    settings with ``--report``. ValueError for a table given twice; for a flag that no
    table given takes (one table refuses every flag it does not take); and for a flag
    that would replace different defaults of two tables (``--teacher-width`` for Tables 1
    and 5, say), which the tables should be given apart for."""
    from n2n_env.paper.settings import (
        APPLIES,
        PaperSettings,
        flag,
        flag_value,
        parse_table,
        tables_named,
    )
    from n2n_env.paper.table_files import recorded_settings

    numbers = [parse_table(text) for text in args.table]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"give each table once, got {' '.join(args.table)}")
    given = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    if len(numbers) > 1:
        unused = [name for name in given if not set(numbers) & set(APPLIES[name])]
        if unused:
            raise ValueError(f"not a setting of {tables_named(numbers)}: " + "; ".join(
                f"{flag(name)} applies to {tables_named(APPLIES[name])}" for name in unused))
        for name in given:
            defaults = {table: getattr(PaperSettings(table), name) for table in numbers
                        if table in APPLIES[name]}
            if len({repr(value) for value in defaults.values()}) > 1:
                shown = "; ".join(f"table {table}: {'none' if value is None else flag_value(value)}"
                                  for table, value in defaults.items())
                raise ValueError(f"{flag(name)} would replace different defaults of these "
                                 f"tables ({shown}); give them in separate commands")
    tables = []
    for table in numbers:
        own = {name: value for name, value in given.items()
               if len(numbers) == 1 or table in APPLIES[name]}
        recorded = recorded_settings(Path(args.work), table) if args.report else None
        tables.append(PaperSettings.from_dict({**recorded, **own}) if recorded
                      else PaperSettings(table, **own))
    return tables


def _runs_here(settings: PaperSettings, only: Sequence[str] | None) -> bool:
    """Whether ``--only`` (checked to match some table's unit) leaves this table a unit."""
    from n2n_env.paper.plan import plan
    from n2n_env.paper.runner import select

    try:
        select(plan(settings), only or ())
    except ValueError:
        return False
    return True


def _jobs(tables: Sequence[PaperSettings], args: argparse.Namespace, device: str) -> bool:
    """Run the tables' units ``args.jobs`` at a time, in one pool; whether any failed."""
    from n2n_env.paper.parallel import run_jobs
    from n2n_env.thread_budget import available_cores, explicit_threads

    omp = os.environ.get("OMP_NUM_THREADS", "")
    threads = explicit_threads() or (int(omp) if omp.isdigit() and int(omp) > 0
                                     else available_cores())
    result = run_jobs(tables, args.work, jobs=args.jobs, threads=threads, device=device,
                      only=args.only or ())
    for unit_id, status in result.failed:
        print(f"n2n: error: {unit_id} failed (exit status {status}); its lines above say "
              "why", file=sys.stderr)
    if result.blocked:
        print(f"n2n: not run, as a unit they need failed: {', '.join(result.blocked)}",
              file=sys.stderr)
    return bool(result.failed)


def _check_extras(states: Sequence[UnitState]) -> None:
    """Refuse now, not hours later, a table whose pending units need a missing extra."""
    pending = {state.unit.kind for state in states if state.record is None}
    if "prune" in pending:
        try:
            import torch_pruning  # noqa: F401
        except ImportError:
            raise UsageError('table 2 prunes with Torch-Pruning: pip install "n2n[pruning]"'
                             ) from None


def register(commands: argparse._SubParsersAction, add_command: AddCommand) -> None:
    """Add ``n2n paper`` to the parser's ``commands``."""
    cmd = add_command(commands, "paper", _paper,
                      "reproduce the paper's Tables 1-5 on the data here, in units "
                      "that resume and can be committed piece by piece")
    cmd.formatter_class = argparse.RawDescriptionHelpFormatter
    cmd.description = textwrap.fill(cmd.description or "", width=88)
    cmd.epilog = ESTIMATES
    cmd.add_argument("table", metavar="TABLE", nargs="+",
                     help="1 (compression), 2 (pruning), 3 (distillation), 4 (constraints) "
                     "or 5 (transfer); several, listed together (1 4), run in the order "
                     "given (with --jobs, in one pool of workers), each with the settings "
                     "flags it takes")
    cmd.add_argument("--work", required=True, metavar="DIR",
                     help="work folder: unit results, teachers, policies, run folders and "
                     "table-N.md (for example benchmarks/paper); tables may share one")
    cmd.add_argument("--report", action="store_true",
                     help="run nothing: print and write each table from the finished units, "
                          "with the settings it was last written with (table-N.settings.json"
                          "), changed by any settings flags given")
    cmd.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                     help="run up to N units at once, each in its own process with its "
                     "share of the threads (default 1); on a CPU, 2 one-thread units "
                     "train 13-30%% faster than one of 2 threads")
    cmd.add_argument("--only", action="append", metavar="PATTERN",
                     help="run only the units whose id matches this glob (and what they "
                     "need); repeatable. Without it, every unfinished unit runs")
    group = cmd.add_argument_group("settings (default: the table's real run)")
    group.add_argument("--dataset", metavar="NAME",
                       help="mnist-10k for tables 1, 2, 4; cifar10-14k for 3, 5")
    group.add_argument("--data-root", metavar="DIR", help="folder holding dataset files")
    group.add_argument("--teacher", metavar="NAME",
                       help="zoo teacher of tables 1-4: vgg13 (1, 2, 4), resnet18 (3)")
    group.add_argument("--teacher-width", type=_positive_float, metavar="W",
                       help="width of the teachers: 1 (1, 2, 4), 0.25 (3), 0.125 (5)")
    group.add_argument("--teacher-epochs", type=_positive_int, metavar="N",
                       help="epochs of each teacher (default: the recipe's, 50 or 150)")
    group.add_argument("--seeds", type=_ints, metavar="LIST",
                       help="seeds of the searches and policies (default 0,1,2)")
    group.add_argument("--agents", type=_names, metavar="LIST",
                       help="agents of tables 1, 3, 4: reinforce,random (1), reinforce (3, 4)")
    group.add_argument("--iterations", type=_positive_int, metavar="N",
                       help="search iterations of 5 students per stage, tables 1-4 "
                       "(default 40)")
    group.add_argument("--finetune-epochs", type=_positive_int, metavar="N",
                       help="epochs of every final training, tables 1-4 (default: the "
                       "recipe's, 50 or 150)")
    group.add_argument("--evaluator", metavar="NAME",
                       help="distill (default, real) or mock (instant, NOT REAL: tests only)")
    group.add_argument("--max-params", type=_positive_int, metavar="N",
                       help="table 4's constraint (default 20000)")
    group.add_argument("--prune-runs", type=_positive_int, metavar="N",
                       help="table 2's pruning runs, best reported (default 5)")
    group.add_argument("--prune-fraction", type=_fraction, metavar="F",
                       help="table 2: channels removed per step, of the teacher's "
                       "(default 0.01)")
    group.add_argument("--prune-finetune-steps", type=_steps, metavar="N",
                       help="table 2: KD updates after each pruning step (default 100)")
    group.add_argument("--taylor-examples", type=_positive_int, metavar="N",
                       help="table 2: examples of the Taylor criterion per step (default 64)")
    group.add_argument("--students", type=_names, metavar="LIST",
                       help="table 3: fitnet4,vgg-small,squeezenet1_1 (default all)")
    group.add_argument("--kd-seeds", type=_ints, metavar="LIST",
                       help="table 3: seeds of each hand-designed student (default 0)")
    group.add_argument("--pairs", type=_pairs, metavar="LIST",
                       help="table 5: SOURCE:TARGET teachers (default "
                       "vgg11:vgg19,resnet18:resnet34)")
    group.add_argument("--pretrain-iterations", type=_positive_int, metavar="N",
                       help="table 5: policy updates on the source (default 100)")
    group.add_argument("--transfer-iterations", type=_positive_int, metavar="N",
                       help="table 5: policy updates compared on the target (default 10)")
    cmd.add_argument("--device", default="auto", metavar="D",
                     help="auto (default), cpu, cuda or cuda:N")
    cmd.add_argument("--no-progress", action="store_true",
                     help="no progress bars: one line per epoch and iteration instead")
