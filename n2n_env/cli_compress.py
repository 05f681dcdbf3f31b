"""``n2n compress``: the two-stage search and fine-tuning of :mod:`n2n_env.pipeline` on the
command line, registered into the ``n2n`` parser by :func:`register`.

Bad values exit with status 2 and one line on stderr; damaged, foreign or missing files
with 1 (see :mod:`n2n_env.cli`). Ctrl-C says what rerunning will do.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from n2n_env import checkpoints, data, zoo
from n2n_env.cli import (
    FILE_ERRORS,
    UsageError,
    _check_choice,
    _int_at_least,
    _non_negative_int,
    _positive_float,
    _positive_int,
)
from n2n_env.device import resolve_device, use_all_cores
from n2n_env.teacher_spec import cache_name, check_teacher_name, check_teacher_weights

BACKENDS = ("local", "processes", "ray")
_at_least_two = _int_at_least(2, "an integer >= 2 (batch norm needs two samples)")


CONSTRAINED = ("params", "flops", "latency_ms")
"""Quantities ``--constraint`` may bound."""
COMPRESSION_METRICS = ("params", "flops", "latency")


def _constraint(text: str) -> tuple[str, float]:
    """``QUANTITY<=BOUND`` (params, flops or latency_ms) as a (quantity, bound) pair."""
    name, sep, bound = text.replace(" ", "").partition("<=")
    try:
        value = float(bound)
    except ValueError:
        value = float("nan")
    if not sep or name not in CONSTRAINED or not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected params<=N, flops<=N or latency_ms<=N with N a positive number, got "
            f"{text!r}")
    return name, value


def _compress(args: argparse.Namespace) -> int:
    from agents import registry
    from n2n_env import pipeline
    from n2n_env.run_config import RunConfig

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    for stage in stages:
        _check_choice("stage", stage, pipeline.STAGES)
    _check_choice("agent", args.agent.partition(":")[0].strip(), pipeline.AGENTS)
    try:
        registry.check_spec(args.agent)
    except ValueError as error:
        raise UsageError(str(error)) from None
    _check_choice("evaluator", args.evaluator, ("distill", "mock"))
    _check_choice("backend", args.backend, BACKENDS)
    try:
        check_teacher_name(args.teacher, zoo.names())
        check_teacher_weights(args.teacher, args.teacher_weights, args.teacher_width)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _check_choice("compression metric", args.compression_metric, COMPRESSION_METRICS)
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
    progress = "lines" if args.no_progress else True
    try:
        backend = _backend(args)
        if args.resume is not None:
            result = pipeline.resume(run, iterations=args.iterations,
                                     finetune_epochs=args.finetune_epochs,
                                     backend=backend if _backend_given(args) else None,
                                     device=str(device), progress=progress)
        else:
            config = RunConfig(
                teacher=args.teacher, dataset=args.dataset, data_root=args.data_root,
                stages=stages, agent=args.agent,
                iterations=args.iterations or pipeline.DEFAULT_ITERATIONS,
                constraints=dict(args.constraint), anneal_episodes=args.anneal_episodes,
                evaluator=args.evaluator, recipe=_recipe(args), policy_init=args.policy_init,
                seed=args.seed, teacher_width=args.teacher_width,
                teacher_epochs=args.teacher_epochs, finetune_epochs=args.finetune_epochs,
                backend=backend, teacher_weights=args.teacher_weights,
                compression_metric=args.compression_metric,
                latency=_latency(args), action_wall=args.action_wall)
            result = pipeline.compress(config, out=run, device=str(device), progress=progress)
    except KeyboardInterrupt:
        print(f"n2n: interrupted; {_compress_interrupted(args, run)}", file=sys.stderr)
        return 130
    except ValueError as exc:
        if isinstance(exc, FILE_ERRORS):
            raise
        raise UsageError(str(exc).splitlines()[0]) from None
    print(result.table())
    print(f"wall time:  {result.seconds:.1f} s")
    print(f"run dir:    {result.out}")
    return 0


def _recipe(args: argparse.Namespace) -> Any:
    """The distillation recipe: the default one with the budget the command line gave."""
    from n2n_env.distill import DistillRecipe

    changes = {}
    if args.distill_steps is not None:
        changes["steps"] = args.distill_steps
    if args.distill_batch_size is not None:
        changes["batch_size"] = args.distill_batch_size
    return dataclasses.replace(DistillRecipe(), **changes)


def _latency(args: argparse.Namespace) -> Any:
    """The --latency-* flags as LatencySettings, or None when none was given (RunConfig
    then uses the defaults if latency is rewarded or bounded)."""
    from n2n_env.latency import LatencySettings

    given = {name: getattr(args, f"latency_{name}") for name in
             ("device", "batch_size", "repeats", "table")}
    given = {name: value for name, value in given.items() if value is not None}
    return LatencySettings(**given) if given else None


def _backend_given(args: argparse.Namespace) -> bool:
    return (args.backend != "local" or args.workers is not None
            or args.ray_address is not None or args.gpus_per_student is not None)


def _backend(args: argparse.Namespace) -> Any:
    """--backend, --workers, --ray-address and --gpus-per-student as BackendSettings."""
    from n2n_env.stack import BackendSettings

    workers = args.workers
    if workers is None:
        workers = 1 if args.backend == "local" else max(1, (os.cpu_count() or 1))
    return BackendSettings(args.backend, workers, args.ray_address,
                           args.gpus_per_student or 0.0)


def _compress_interrupted(args: argparse.Namespace, run: Path) -> str:
    """What rerunning does after a Ctrl-C of ``n2n compress``, in words."""
    if (run / "state.json").exists():
        return ("finished search iterations are kept and fine-tuning continues from its "
                f"last epoch; continue with: n2n compress --resume {shlex.quote(str(run))}")
    if not args.teacher.endswith(".pt") and not args.resume:
        partial = checkpoints.partial_path(checkpoints.teacher_path(
            cache_name(args.teacher), args.dataset, args.teacher_width, 0))
        if partial.exists():
            return ("the teacher's training was saved after its last finished epoch; rerun "
                    "the same command to continue it (no search iteration had finished)")
    return "no search iteration had finished, so nothing was saved; rerun the same command"


def register(commands: argparse._SubParsersAction,
             add_command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``n2n compress`` to the parser's ``commands``."""
    from n2n_env.run_config import DEFAULT_ITERATIONS

    cmd = add_command(commands, "compress", _compress,
                       "compress a teacher: layer removal, then layer shrinkage, then "
                       "fine-tuning (paper Algorithm 1 and section 3.5)")
    cmd.add_argument("--teacher", default="conv4", metavar="NAME_OR_CHECKPOINT",
                     help="zoo model (default conv4), a teacher checkpoint (.pt), "
                     "torchvision:NAME (e.g. torchvision:resnet18) or path/to/file.py:FUNCTION "
                     "(your own model); imported models are trained on first use unless "
                     "--teacher-weights is given")
    cmd.add_argument("--teacher-weights", metavar="PATH",
                     help="state_dict of the imported teacher's model, used as it is (read "
                     "with weights_only=True; nothing is downloaded)")
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
                     "recurrent-ppo (these four need the sb3 extra) or random; "
                     "NAME:key=value,... changes settings, e.g. "
                     "actor-critic:entropy_coef=0.01 (config fields, or SB3 constructor "
                     "arguments)")
    cmd.add_argument("--constraint", type=_constraint, action="append", default=[],
                     metavar="Q<=N", help="upper bound, e.g. params<=20000 (repeatable); "
                     "relaxed early in each stage, see --anneal-episodes; a stage "
                     "that finds no student within them hands the next stage the "
                     "nearest one")
    cmd.add_argument("--anneal-episodes", type=_non_negative_int, metavar="N",
                     help="episodes per stage over which eps_t, the share of its reward a "
                     "student over a constraint keeps, falls from 1 to 0 (paper 3.3.1; "
                     "default: half of the stage's episodes; 0: hard from the start)")
    cmd.add_argument("--policy-init", metavar="PATH",
                     help="start stage 1 from a saved removal policy (removal_policy.pt of "
                     "a reinforce or actor-critic run, any teacher)")
    cmd.add_argument("--teacher-width", type=_positive_float, default=1.0, metavar="W",
                     help="width multiplier of a zoo or imported teacher trained on first use "
                     "(default 1)")
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
    cmd.add_argument("--distill-steps", type=_positive_int, metavar="N",
                     help="optimizer steps of distillation per candidate (default 100)")
    cmd.add_argument("--distill-batch-size", type=_at_least_two, metavar="B",
                     help="mini-batch size of distillation per candidate (default 32)")
    cmd.add_argument("--backend", default="local", metavar="NAME",
                     help="where candidates train: local (default, one at a time in this "
                     "process), processes (--workers local processes) or ray (--workers Ray "
                     "actors; pip install \"n2n[ray]\"). With processes or ray the 5 "
                     "episodes of an update are played side by side and trained as a batch")
    cmd.add_argument("--workers", type=_positive_int, metavar="N",
                     help="worker processes or Ray actors (default: the CPU count)")
    cmd.add_argument("--ray-address", metavar="ADDR",
                     help="Ray cluster to join: auto or HOST:PORT (default: start a local Ray)")
    cmd.add_argument("--gpus-per-student", type=_positive_float, metavar="G",
                     help="GPUs per Ray actor; below 1, several students share a GPU "
                     "(for example 0.25)")
    cmd.add_argument("--no-progress", action="store_true",
                     help="no progress bars: one line per iteration and epoch instead")
    cmd.add_argument("--compression-metric", default="params", metavar="M",
                     help="what the reward's compression C measures: params (default, the "
                     "paper), flops or latency (timed per layer, see --latency-*)")
    cmd.add_argument("--latency-device", metavar="D",
                     help="time latency on cpu, cuda or cuda:N (default: the --device "
                     "students are evaluated on)")
    cmd.add_argument("--latency-batch-size", type=_positive_int, metavar="B",
                     help="images per timed forward call (default 1)")
    cmd.add_argument("--latency-repeats", type=_positive_int, metavar="N",
                     help="timed samples per layer shape, whose median is kept (default 20)")
    cmd.add_argument("--latency-table", metavar="PATH",
                     help="per-layer latency table, shared by runs (default "
                     "$N2N_HOME/latency.sqlite)")
    cmd.add_argument("--action-wall", action="store_true",
                     help="mask the actions after which the --constraint upper bounds can no "
                     "longer be met (AMC's action wall), beside the annealing of "
                     "--anneal-episodes")
