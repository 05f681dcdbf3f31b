"""The two-stage N2N compression pipeline (Ashok et al., ICLR 2018, Algorithm 1, 3.5).

:func:`compress` takes a teacher, searches for a student by layer removal (stage 1,
``N2NRemoval-v0``), then shrinks the best stage-1 student (stage 2, ``N2NShrink-v0``),
and finally trains the chosen students with hard and soft labels (:func:`finetune`) to
report a table like the paper's Table 1. Everything a run produces goes to one run
directory; after every iteration the agent, the metrics and ``state.json`` are saved, so
``compress(out=DIR, resume=True)`` continues an interrupted run, and the SQLite reward
cache (``rewards.sqlite``) means no candidate is ever trained twice.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import n2n_env  # noqa: F401  (registers the environments)
from agents import registry
from agents.observations import env_kind, is_feasible
from n2n_env import data as data_mod
from n2n_env import validate, zoo
from n2n_env.arch import Architecture
from n2n_env.checkpoints import load_teacher, teacher_path
from n2n_env.device import resolve_device
from n2n_env.env_common import check_evaluator_kwargs, check_quantities
from n2n_env.finetune import FinetuneResult
from n2n_env.progress import Progress, progress_bar
from n2n_env.progress import check as check_progress
from n2n_env.recipes import recipe_for
from n2n_env.reward import parse_constraints
from n2n_env.run_files import (
    ROLLOUTS,
    STAGE_LABELS,
    finetuned,
    plot,
    read_metrics,
    write_metrics,
)
from n2n_env.run_files import atomic_json as _atomic_json
from n2n_env.teacher import get_teacher

STAGES = ("removal", "shrink")
AGENTS = registry.AGENT_NAMES
ENV_IDS = {"removal": "N2NRemoval-v0", "shrink": "N2NShrink-v0"}
DEFAULT_ITERATIONS = 40
"""Iterations per stage of the default run, chosen so that conv4 on digits (search, both
fine-tunings and, on first use, the teacher) finishes in under 10 minutes on 2 CPU cores."""
BOARD_FIELDS = ("reward_mean", "reward_best", "accuracy_mean", "accuracy_best",
                "compression_mean", "compression_best", "best_reward_so_far")
"""Metrics also written to TensorBoard (``tensorboard --logdir RUN/tensorboard``)."""
RESUMABLE = ("teacher", "dataset", "data_root", "stages", "agent", "constraints", "evaluator",
             "evaluator_kwargs", "policy_init", "seed", "teacher_width", "teacher_epochs",
             "anneal_episodes")
"""Settings a resumed run takes from ``state.json`` rather than from the call."""


@dataclass(frozen=True)
class ModelRow:
    """One row of the result table."""

    name: str
    test_accuracy: float
    params: int
    architecture: str
    finetune_lr: float | None = None
    """Initial learning rate of the student's final training: the recipe's, or lower after
    a divergence (see n2n_env.finetune). None for the teacher."""

    def cells(self, teacher: ModelRow) -> tuple[str, str, str, str, str]:
        """Model, accuracy, #params, delta accuracy and compression, as printed."""
        delta = 100 * (self.test_accuracy - teacher.test_accuracy)
        return (self.name, f"{100 * self.test_accuracy:.2f}%", f"{self.params:,}",
                "-" if self is teacher else f"{delta:+.2f}",
                f"{teacher.params / self.params:.1f}x" if self.params else "n/a")


@dataclass(frozen=True)
class CompressionResult:
    """What :func:`compress` found: the table rows (teacher first) and the run directory."""

    rows: tuple[ModelRow, ...]
    out: Path
    seconds: float

    @property
    def teacher(self) -> ModelRow:
        return self.rows[0]

    @property
    def student(self) -> ModelRow:
        """The final student (the last stage's)."""
        return self.rows[-1]

    def table(self) -> str:
        """The Table-1-like text table."""
        rows = [("Model", "Accuracy", "#Params", "dAccuracy", "Compression"),
                *(row.cells(self.teacher) for row in self.rows)]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def compress(teacher: str = "conv4", dataset: str = "digits", *,
             data_root: str | os.PathLike[str] | None = None,
             stages: Sequence[str] = STAGES, iterations: int | None = None,
             agent: str = "reinforce", constraints: Mapping[str, float] | None = None,
             evaluator: str = "distill", evaluator_kwargs: Mapping[str, Any] | None = None,
             policy_init: str | os.PathLike[str] | None = None,
             out: str | os.PathLike[str] | None = None, resume: bool = False,
             finetune_epochs: int | None = None, device: str | None = None, seed: int = 0,
             progress: Progress = True, teacher_width: float = 1.0,
             teacher_epochs: int | None = None,
             anneal_episodes: int | None = None) -> CompressionResult:
    """Compress ``teacher`` (a zoo name or a teacher checkpoint ``.pt``) on ``dataset``.

    Runs ``agent`` for ``iterations`` iterations (default 40) of 5 rollouts on each of
    ``stages`` (stage 2 starts from stage 1's best student), fine-tunes each stage's best
    student for ``finetune_epochs`` (default: the teacher recipe's) and writes everything
    to ``out`` (default ``n2n-runs/<teacher>-<dataset>-<time>``). With ``resume=True`` the
    settings in ``out/state.json`` are used; ``iterations`` and ``finetune_epochs`` default
    to the interrupted run's and may be given to extend it; ``device`` and ``progress``
    come from the call.
    ``teacher_width``/``teacher_epochs`` only matter when a zoo teacher is trained. The
    teacher is always real (trained, or loaded from its cache), also with
    ``evaluator="mock"``: the final fine-tuning distils from it.

    ``constraints`` (upper bounds such as ``{"params": 20000}``) are relaxed as in the
    paper's section 3.3.1: a violating student scores eps_t(R+1)-1, eps_t falling from 1 to
    0 over ``anneal_episodes`` episodes of each stage (default: the first half of the
    stage's episodes; 0: hard from the start). Only students that meet every constraint
    can become a stage's best student.
    """
    started = time.perf_counter()
    settings: dict[str, Any] = {
        "teacher": os.fspath(teacher), "dataset": dataset,
        "data_root": None if data_root is None else os.fspath(data_root),
        "stages": list(stages), "agent": agent, "constraints": dict(constraints or {}),
        "evaluator": evaluator, "evaluator_kwargs": dict(evaluator_kwargs or {}),
        "policy_init": None if policy_init is None else os.fspath(policy_init), "seed": seed,
        "teacher_width": teacher_width, "teacher_epochs": teacher_epochs,
        "anneal_episodes": anneal_episodes}
    run = _run_dir(out, teacher, dataset)
    state_path = run / "state.json"
    if resume:
        state = _read_state(state_path)
        settings.update({k: state["settings"][k] for k in RESUMABLE if k in state["settings"]})
    elif state_path.exists():
        raise ValueError(f"{run} already holds a run; resume it or choose another directory")
    else:
        state = {"settings": settings, "stages": {}}
    budget = state.get("budget", {})
    iterations = budget.get("iterations", DEFAULT_ITERATIONS) if iterations is None else (
        iterations)
    if finetune_epochs is None:
        finetune_epochs = budget.get("finetune_epochs")
    iterations = validate.integer("iterations", iterations, minimum=1)
    if settings["anneal_episodes"] is None:
        settings["anneal_episodes"] = iterations * ROLLOUTS // 2
    _validate(settings, iterations, finetune_epochs)
    check_progress(progress)
    state["budget"] = {"iterations": iterations, "finetune_epochs": finetune_epochs}
    dev = resolve_device(device)
    data_mod.check_root(settings["dataset"], settings["data_root"])
    data = data_mod.load(settings["dataset"], root=settings["data_root"])
    teacher_model, record, checkpoint = _teacher(settings, data, dev, progress)
    run.mkdir(parents=True, exist_ok=True)
    env_kwargs = {"teacher": os.fspath(checkpoint), "dataset": settings["dataset"],
                  "data_root": settings["data_root"], "evaluator": settings["evaluator"],
                  "evaluator_kwargs": settings["evaluator_kwargs"],
                  "constraints": settings["constraints"] or None,
                  "anneal_episodes": settings["anneal_episodes"],
                  "cache": os.fspath(run / "rewards.sqlite"), "device": str(dev)}
    start = record.architecture
    bests: list[tuple[str, Architecture]] = []
    for index, stage in enumerate(settings["stages"]):
        start = _search(stage, index, start, env_kwargs, settings, iterations, run, state,
                        progress)
        bests.append((stage, start))
    recipe = recipe_for(settings["dataset"])
    if finetune_epochs is not None:
        recipe = recipe.with_epochs(finetune_epochs)
    rows = [ModelRow("Teacher", record.test_accuracy, record.architecture.num_params(),
                     record.architecture.to_json())]
    trained: dict[str, FinetuneResult] = {}
    for index, (_, arch) in enumerate(bests):
        key = arch.signature()
        if key not in trained:
            trained[key] = finetuned(arch, teacher_model, data, recipe, dev, settings["seed"],
                                     progress, run)
        label = "+".join(STAGE_LABELS[s] for s, _ in bests[: index + 1])
        rows.append(ModelRow(f"Student ({label})", trained[key].test_accuracy,
                             arch.num_params(), arch.to_json(), trained[key].lr))
    if bests:
        final = bests[-1][1]
        torch.save({k: v.cpu() for k, v in trained[final.signature()].model.state_dict().items()},
                   run / "student.pt")
        (run / "student.json").write_text(final.to_json())
    result = CompressionResult(tuple(rows), run, time.perf_counter() - started)
    plot(run, settings["stages"])
    (run / "result.json").write_text(json.dumps({
        "settings": settings, "iterations": iterations, "finetune_epochs": recipe.epochs,
        "seconds": result.seconds, "teacher_checkpoint": os.fspath(checkpoint),
        "rows": [asdict(row) for row in rows], "table": result.table(),
        "stages": state["stages"]}, indent=2))
    return result


def _read_state(path: Path) -> dict[str, Any]:
    """The run state ``state.json`` of an interrupted run, or a ValueError saying why not."""
    if not path.is_file():
        raise ValueError(f"nothing to resume: {path} does not exist")
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot resume: run state {path} is damaged ({exc}); start a new "
                         "run with --out") from None
    if not (isinstance(state, dict) and isinstance(state.get("settings"), dict)
            and isinstance(state.get("stages"), dict)):
        raise ValueError(f"cannot resume: {path} is not an n2n run state (no settings and "
                         "stages); start a new run with --out")
    return state


def _validate(settings: Mapping[str, Any], iterations: int,
              finetune_epochs: int | None) -> None:
    """Reject bad settings early, before any teacher is trained, naming what is allowed."""
    validate.integer("iterations", iterations, minimum=1)
    if finetune_epochs is not None:
        validate.integer("finetune_epochs", finetune_epochs, minimum=1)
    if settings["teacher_epochs"] is not None:
        validate.integer("teacher_epochs", settings["teacher_epochs"], minimum=1)
    validate.integer("seed", settings["seed"], minimum=0)
    validate.integer("anneal_episodes", settings["anneal_episodes"], minimum=0)
    validate.number("teacher_width", settings["teacher_width"], above=0)
    validate.choice("evaluator", settings["evaluator"], ("distill", "mock"))
    check_quantities(parse_constraints(settings["constraints"] or None), settings["evaluator"])
    check_evaluator_kwargs(settings["evaluator"], settings["evaluator_kwargs"])
    registry.check_available(settings["agent"])
    bad = [s for s in settings["stages"] if s not in STAGES]
    if bad or not settings["stages"] or len(set(settings["stages"])) != len(settings["stages"]):
        raise ValueError(f"stages must be distinct names from {', '.join(STAGES)}, in order; "
                         f"got {list(settings['stages'])}")
    if list(settings["stages"]) != [s for s in STAGES if s in settings["stages"]]:
        raise ValueError("stage 'removal' must come before 'shrink'")
    if settings["policy_init"] is not None and (
            settings["agent"] not in registry.TRANSFERABLE or settings["stages"][0] != "removal"):
        raise ValueError(f"policy_init needs the removal stage and an agent among "
                         f"{', '.join(registry.TRANSFERABLE)}")
    if settings["policy_init"] is not None:
        registry.check_policy_init(settings["agent"], settings["policy_init"])
    if settings["dataset"] not in data_mod.names():
        raise ValueError(f"unknown dataset {settings['dataset']!r}; allowed: "
                         f"{', '.join(data_mod.names())}")
    teacher = settings["teacher"]
    if not teacher.endswith(".pt") and teacher not in zoo.names():
        raise ValueError(f"unknown teacher {teacher!r}; use a zoo name "
                         f"({', '.join(zoo.names())}) or a checkpoint path ending in .pt")


def default_run_dir(teacher: str | os.PathLike[str], dataset: str) -> Path:
    """``n2n-runs/<teacher>-<dataset>-<local time>``: a new directory per run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("n2n-runs") / f"{Path(os.fspath(teacher)).stem}-{dataset}-{stamp}"


def _run_dir(out: str | os.PathLike[str] | None, teacher: str, dataset: str) -> Path:
    return Path(out) if out is not None else default_run_dir(teacher, dataset)


def _teacher(settings: Mapping[str, Any], data: data_mod.Dataset, dev: torch.device,
             progress: Progress) -> tuple[torch.nn.Module, Any, Path]:
    """The teacher model, its record and its checkpoint path (trained on first use)."""
    name = settings["teacher"]
    if name.endswith(".pt"):
        model, record = load_teacher(name, dataset_fingerprint=data.fingerprint, device=dev)
        return model, record, Path(name)
    model, record = get_teacher(name, settings["dataset"], width=settings["teacher_width"],
                                data_root=settings["data_root"], device=dev,
                                epochs=settings["teacher_epochs"], progress=progress)
    return model, record, teacher_path(name, settings["dataset"], settings["teacher_width"])


def _search(stage: str, index: int, start: Architecture, env_kwargs: Mapping[str, Any],
            settings: Mapping[str, Any], iterations: int, run: Path,
            state: dict[str, Any], progress: Progress) -> Architecture:
    """Run one stage's search (resuming it if ``state`` has it) and return its best student.

    A stage saved with a different start (stage 1 found a better student after a resume)
    starts over; the reward cache still answers every candidate seen before.
    """
    extra = {"start": start} if stage == "shrink" else {}
    env = gym.make(ENV_IDS[stage], **env_kwargs, **extra)
    policy_path = run / f"{stage}_policy.pt"
    metrics_path = run / f"metrics_{stage}.csv"
    saved = state["stages"].get(stage)
    if saved is not None and saved["start"] != start.to_json():
        saved = None
    if saved is None:
        saved = {"start": start.to_json(), "iteration": 0, "best_reward": None,
                 "best_architecture": None, "evaluations": 0, "cache_hits": 0}
        metrics_path.unlink(missing_ok=True)
    _settle_policy(policy_path, saved["iteration"])
    learner = _agent(settings, env, policy_path, resumed=saved["iteration"] > 0)
    env.unwrapped.scorer.schedule.episode = saved["evaluations"] + saved["cache_hits"]
    rows = read_metrics(metrics_path)[: saved["iteration"]]
    board = _board(run, stage, saved["iteration"])
    bar = progress_bar(progress, total=iterations, initial=min(saved["iteration"], iterations),
                       desc=f"stage {index + 1} ({stage})", unit="iteration")
    try:
        for iteration in range(saved["iteration"] + 1, iterations + 1):
            tick = time.perf_counter()
            learner.reseed(_iteration_seed(settings["seed"], index, iteration))
            outcomes = learner.iterate(env)
            for reward, info in outcomes:
                hit = bool(info.get("cache_hit"))
                saved["cache_hits" if hit else "evaluations"] += 1
                better = saved["best_reward"] is None or reward > saved["best_reward"]
                if is_feasible(info) and better:
                    saved["best_reward"], saved["best_architecture"] = reward, info[
                        "architecture"]
            row = _metrics_row(iteration, outcomes, saved, time.perf_counter() - tick)
            rows.append(row)
            pending = _pending(policy_path, iteration)
            learner.save(pending)
            write_metrics(metrics_path, rows)
            for name in BOARD_FIELDS:
                board.add_scalar(f"{stage}/{name}", row[name], iteration)
            board.flush()
            saved["iteration"] = iteration
            state["stages"][stage] = saved
            _atomic_json(run / "state.json", state)
            if pending.exists():  # random search writes no policy
                pending.replace(policy_path)
            bar.set_postfix(best=f"{saved['best_reward']:.4f}"
                            if saved["best_reward"] is not None else "-")
            bar.update(1)
    finally:
        bar.close()
        board.close()
        env.close()
    if saved["best_architecture"] is None:
        warnings.warn(f"stage {stage}: no valid student within the constraints was found; "
                      f"keeping its start", stacklevel=3)
        return start
    return Architecture.from_json(saved["best_architecture"])


def _pending(policy_path: Path, iteration: int) -> Path:
    """Where iteration ``iteration``'s policy waits until ``state.json`` records it."""
    return policy_path.with_name(f"{policy_path.name}.{iteration}")


def _settle_policy(policy_path: Path, iteration: int) -> None:
    """Make ``policy_path`` the policy of saved iteration ``iteration``.

    Each iteration writes its policy to a pending file, then ``state.json``, then renames
    the pending file. A kill between the last two leaves the pending file of the saved
    iteration (promoted here); a kill before ``state.json`` leaves one of an iteration the
    state never recorded (deleted here, so that update is not applied twice).
    """
    recorded = _pending(policy_path, iteration)
    if iteration > 0 and recorded.exists():
        recorded.replace(policy_path)
    for stale in policy_path.parent.glob(f"{policy_path.name}.*"):
        stale.unlink()


def _agent(settings: Mapping[str, Any], env: gym.Env, policy_path: Path,
           resumed: bool) -> registry.SearchAgent:
    """A fresh agent, the saved one of an interrupted stage, or the ``policy_init`` one."""
    name, seed = settings["agent"], settings["seed"]
    if resumed:
        return registry.restore(name, env, policy_path, seed=seed)
    init = settings["policy_init"] if env_kind(env) == "removal" else None
    return registry.make(name, env, seed=seed, policy_init=init)


def _iteration_seed(seed: int, stage: int, iteration: int) -> int:
    """The sampling seed of one iteration, so a resumed run samples as an unbroken one."""
    return (seed * 1_000_003 + stage * 10_007 + iteration) % 2**31


def _board(run: Path, stage: str, done: int) -> Any:
    """A TensorBoard writer for one stage under ``run/tensorboard/<stage>``; on resume,
    events after the last saved iteration (written before a kill) are dropped."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=os.fspath(run / "tensorboard" / stage),
                         purge_step=done + 1 if done else None)


def _metrics_row(iteration: int, outcomes: Sequence[tuple[float, Mapping[str, Any]]],
                 saved: Mapping[str, Any], seconds: float) -> dict[str, float]:
    rewards = [r for r, _ in outcomes]
    accuracies = [float(i.get("accuracy", 0.0)) for _, i in outcomes]
    compressions = [float(i.get("compression", 0.0)) for _, i in outcomes]
    best = saved["best_reward"]
    return {"iteration": iteration, "reward_mean": float(np.mean(rewards)),
            "reward_best": max(rewards), "accuracy_mean": float(np.mean(accuracies)),
            "accuracy_best": max(accuracies), "compression_mean": float(np.mean(compressions)),
            "compression_best": max(compressions),
            "best_reward_so_far": math.nan if best is None else best,
            "evaluations": saved["evaluations"], "cache_hits": saved["cache_hits"],
            "seconds": round(seconds, 3)}
