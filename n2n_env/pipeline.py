"""The two-stage N2N compression pipeline (Ashok et al., ICLR 2018, Algorithm 1, 3.5).

:func:`compress` takes a :class:`~n2n_env.run_config.RunConfig`, searches for a student by
layer removal (stage 1, ``N2NRemoval-v0``), then shrinks the best stage-1 student (stage 2,
``N2NShrink-v0``), and finally trains the chosen students with hard and soft labels
(:func:`~n2n_env.finetune.finetune`) to report a table like the paper's Table 1.

This module is the driver: the only place, with the CLI, that imports both the
environments and the agents. It loads the teacher and the data once, assembles one
evaluator stack (:mod:`n2n_env.stack`) that both stages share, and hands it to the
environments. Everything a run produces goes to one run directory
(:mod:`n2n_env.run_files`); after every iteration the agent, the metrics and
``state.json`` are saved, so :func:`resume` continues an interrupted run, and the SQLite
reward cache (``rewards.sqlite``) means no candidate is ever trained twice.

With the ``local`` backend an iteration plays its m episodes one after another (each
student trained as its episode ends). With ``processes`` or ``ray`` it plays them side by
side in a vector environment, whose finished students train as one batch on the workers;
the agent then samples the m episodes in another order, so a given seed finds other
students than with ``local``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import n2n_env  # noqa: F401  (registers the environments)
from agents import registry
from agents.agent_spec import AgentSpec
from agents.observations import env_kind
from agents.search import EPISODES_PER_UPDATE, BestStudent, NearestStudent
from n2n_env import data as data_mod
from n2n_env.arch import Architecture
from n2n_env.device import resolve_device
from n2n_env.env_common import MAX_LAYERS
from n2n_env.evaluators import Evaluator
from n2n_env.finetune import FinetuneResult
from n2n_env.progress import Progress, progress_bar
from n2n_env.progress import check as check_progress
from n2n_env.recipes import recipe_for
from n2n_env.reward import parse_constraints, total_excess
from n2n_env.run_config import DEFAULT_ITERATIONS, STAGES, RunConfig
from n2n_env.run_files import (
    STAGE_LABELS,
    STUDENT_FILE,
    atomic_json,
    board,
    default_run_dir,
    finetuned,
    pending_policy,
    plot,
    read_metrics,
    read_state,
    save_student,
    settle_policy,
    write_metrics,
)
from n2n_env.stack import BackendSettings, assemble, load_teacher

AGENTS = registry.AGENT_NAMES
ENV_IDS = {"removal": "N2NRemoval-v0", "shrink": "N2NShrink-v0"}
BOARD_FIELDS = ("reward_mean", "reward_best", "accuracy_mean", "accuracy_best",
                "compression_mean", "compression_best", "best_reward_so_far")
"""Metrics also written to TensorBoard (``tensorboard --logdir RUN/tensorboard``)."""
__all__ = ["AGENTS", "DEFAULT_ITERATIONS", "STAGES", "CompressionResult", "ModelRow",
           "RunConfig", "compress", "default_run_dir", "resume"]


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
    val_accuracy: float | None = None
    """Validation accuracy (after the final training, for a student): what a comparison
    that must not look at the test split, such as the pruning baseline's stopping rule,
    reads. None in rows written before it was recorded."""

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


def compress(config: RunConfig | None = None, *, out: str | os.PathLike[str] | None = None,
             device: str | None = None, progress: Progress = True) -> CompressionResult:
    """Compress ``config.teacher`` on ``config.dataset`` as ``config`` says.

    Runs ``config.agent`` for ``config.iterations`` iterations of ``EPISODES_PER_UPDATE``
    episodes on each of ``config.stages`` (stage 2 starts from stage 1's best student),
    fine-tunes each stage's best student and writes everything to ``out`` (default
    ``n2n-runs/<teacher>-<dataset>-<time>``), which must not hold a run yet. The teacher
    is always real (trained, or loaded from its cache), also with ``evaluator="mock"``:
    the final fine-tuning distils from it.

    Constraints are relaxed as in the paper's section 3.3.1: a violating student scores
    eps_t(R+1)-1, eps_t falling from 1 to 0 over ``config.anneal_episodes`` episodes of
    each stage. Only students that meet every constraint can become a stage's best. A
    stage that found none hands the next stage the valid student nearest to meeting them
    (:class:`agents.search.NearestStudent`), which shrinking may still bring within them;
    the last stage then keeps its start.
    """
    config = (config or RunConfig()).resolved()
    check_progress(progress)
    run = Path(out) if out is not None else default_run_dir(config.teacher, config.dataset)
    if (run / "state.json").exists():
        raise ValueError(f"{run} already holds a run; resume it or choose another directory")
    return _run(config, run, {"config": config.to_dict(), "stages": {}}, device, progress)


def resume(out: str | os.PathLike[str], *, iterations: int | None = None,
           finetune_epochs: int | None = None, backend: BackendSettings | None = None,
           device: str | None = None, progress: Progress = True) -> CompressionResult:
    """Continue the interrupted run in ``out`` with the configuration it stored.

    ``iterations`` and ``finetune_epochs`` may be raised to extend a run; ``backend``
    moves its remaining work elsewhere (a local run stays local: see the module's note
    on sampling order); ``device`` and ``progress`` are this call's.
    """
    check_progress(progress)
    run = Path(out)
    state = read_state(run / "state.json")
    try:
        config = (RunConfig.from_dict(state["config"]) if "config" in state
                  else RunConfig.from_legacy(state["settings"], state.get("budget", {})))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot resume {run}: its configuration is not valid ({exc}); "
                         "start a new run with --out") from None
    changes: dict[str, Any] = {}
    if iterations is not None:
        changes["iterations"] = iterations
    if finetune_epochs is not None:
        changes["finetune_epochs"] = finetune_epochs
    if backend is not None and backend != config.backend:
        if (backend.kind == "local") != (config.backend.kind == "local"):
            keep = "local" if config.backend.kind == "local" else "processes or ray"
            raise ValueError(f"{run} was run with backend {config.backend.kind!r}; a resumed "
                             f"run keeps local or parallel sampling (choose {keep})")
        changes["backend"] = backend
    config = dataclasses.replace(config, **changes).resolved()
    state = {"config": config.to_dict(), "stages": state["stages"]}
    return _run(config, run, state, device, progress)


def _run(config: RunConfig, run: Path, state: dict[str, Any], device: str | None,
         progress: Progress) -> CompressionResult:
    started = time.perf_counter()
    dev = resolve_device(device)
    settings = config.evaluator_settings(device=str(dev))
    data_mod.check_root(config.dataset, config.data_root)
    data = data_mod.load(config.dataset, root=config.data_root)
    teacher, record = load_teacher(settings, data, epochs=config.teacher_epochs,
                                   progress=progress)
    checkpoint = settings.checkpoint
    run.mkdir(parents=True, exist_ok=True)
    evaluator = assemble(dataclasses.replace(settings, teacher=os.fspath(checkpoint),
                                             teacher_weights=None,
                                             cache=os.fspath(run / "rewards.sqlite")),
                         teacher=teacher, data=data)
    start = record.architecture
    bests: list[tuple[str, Architecture]] = []
    try:
        for index, stage in enumerate(config.stages):
            start = _search(stage, index, start, evaluator, config, run, state, progress)
            bests.append((stage, start))
    finally:
        evaluator.close()
    recipe = recipe_for(config.dataset)
    if config.finetune_epochs is not None:
        recipe = recipe.with_epochs(config.finetune_epochs)
    rows = [ModelRow("Teacher", record.test_accuracy, record.architecture.num_params(),
                     record.architecture.to_json(), val_accuracy=record.val_accuracy)]
    trained: dict[str, FinetuneResult] = {}
    for index, (_, arch) in enumerate(bests):
        key = arch.signature()
        if key not in trained:
            trained[key] = finetuned(arch, teacher.model, data, recipe, dev, config.seed,
                                     progress, run)
        label = "+".join(STAGE_LABELS[s] for s, _ in bests[: index + 1])
        rows.append(ModelRow(f"Student ({label})", trained[key].test_accuracy,
                             arch.num_params(), arch.to_json(), trained[key].lr,
                             trained[key].val_accuracy))
    final = bests[-1][1]
    save_student(run / STUDENT_FILE, trained[final.signature()].model, final)
    result = CompressionResult(tuple(rows), run, time.perf_counter() - started)
    plot(run, config.stages)
    (run / "result.json").write_text(json.dumps({
        "config": config.to_dict(), "finetune_epochs": recipe.epochs,
        "seconds": result.seconds, "teacher_checkpoint": os.fspath(checkpoint),
        "rows": [asdict(row) for row in rows], "table": result.table(),
        "stages": state["stages"]}, indent=2))
    return result


def _search(stage: str, index: int, start: Architecture, evaluator: Evaluator,
            config: RunConfig, run: Path, state: dict[str, Any],
            progress: Progress) -> Architecture:
    """Run one stage's search (resuming it if ``state`` has it) and return its best student.

    A stage saved with a different start (stage 1 found a better student after a resume)
    starts over, as does a stage that would hand on its nearest student but was saved
    without it (by an earlier version, before any student met the constraints). The
    reward cache still answers every candidate seen before, so the same seeds replay the
    same students without training them again; only students whose training failed are
    not cached, and are trained again. The replayed students count as cache hits.
    """
    policy_path = run / f"{stage}_policy.pt"
    metrics_path = run / f"metrics_{stage}.csv"
    saved = state["stages"].get(stage)
    if saved is not None and saved["start"] != start.to_json():
        saved = None
    hands_on = bool(config.constraints) and index + 1 < len(config.stages)
    if (saved is not None and hands_on and saved["best_architecture"] is None
            and "nearest" not in saved):
        saved = None
    if saved is None:
        saved = {"start": start.to_json(), "iteration": 0, "best_reward": None,
                 "best_architecture": None, "nearest": None, "evaluations": 0,
                 "cache_hits": 0}
        metrics_path.unlink(missing_ok=True)
        shutil.rmtree(run / "tensorboard" / stage, ignore_errors=True)
    env = _environment(stage, start, evaluator, config,
                       episodes_played=saved["evaluations"] + saved["cache_hits"])
    settle_policy(policy_path, saved["iteration"])
    learner = _agent(config, env, policy_path, resumed=saved["iteration"] > 0)
    best = BestStudent(-math.inf if saved["best_reward"] is None else saved["best_reward"],
                       saved["best_architecture"])
    nearest = NearestStudent(**saved.get("nearest") or {})
    rows = read_metrics(metrics_path)[: saved["iteration"]]
    writer = board(run, stage, saved["iteration"])
    bar = progress_bar(progress, total=config.iterations,
                       initial=min(saved["iteration"], config.iterations),
                       desc=f"stage {index + 1} ({stage})", unit="iteration")
    try:
        for iteration in range(saved["iteration"] + 1, config.iterations + 1):
            tick = time.perf_counter()
            learner.reseed(_iteration_seed(config.seed, index, iteration))
            outcomes = learner.iterate(env)
            for reward, info in outcomes:
                saved["cache_hits" if info.get("cache_hit") else "evaluations"] += 1
                if best.offer(reward, info):
                    saved["best_reward"], saved["best_architecture"] = (best.reward,
                                                                        best.architecture)
                if hands_on and nearest.offer(info):
                    saved["nearest"] = asdict(nearest)
            row = _metrics_row(iteration, outcomes, saved, time.perf_counter() - tick)
            rows.append(row)
            pending = pending_policy(policy_path, iteration)
            learner.save(pending)
            write_metrics(metrics_path, rows)
            for name in BOARD_FIELDS:
                writer.add_scalar(f"{stage}/{name}", row[name], iteration)
            writer.flush()
            saved["iteration"] = iteration
            state["stages"][stage] = saved
            atomic_json(run / "state.json", state)
            if pending.exists():  # random search writes no policy
                pending.replace(policy_path)
            bar.set_postfix(best=f"{saved['best_reward']:.4f}"
                            if saved["best_reward"] is not None else "-")
            bar.update(1)
    finally:
        bar.close()
        writer.close()
    if saved["best_architecture"] is not None:
        return Architecture.from_json(saved["best_architecture"])
    if (saved.get("nearest") and index + 1 < len(config.stages)
            and saved["nearest"]["excess"] < _start_excess(start, config)):
        student = Architecture.from_json(saved["nearest"]["architecture"])
        warnings.warn(f"stage {stage}: no valid student within the constraints was found; "
                      f"the next stage starts from the nearest one ({student.num_params():,} "
                      f"parameters, relative excess {saved['nearest']['excess']:.2f})",
                      stacklevel=3)
        return student
    warnings.warn(f"stage {stage}: no valid student within the constraints was found; "
                  f"keeping its start", stacklevel=3)
    return start


def _start_excess(start: Architecture, config: RunConfig) -> float:
    """The relative excess of a stage's start over the constraints (inf when a row reads
    something the architecture alone does not give, such as accuracy or latency): a
    nearest student is handed on only when it is nearer than that. Removing poolings can
    make every valid student larger than its teacher."""
    measured = {"params": float(start.num_params()), "flops": float(start.flops())}
    rows = parse_constraints(config.constraints)
    if any(quantity not in measured for row in rows for quantity in row.coefficients):
        return math.inf
    return total_excess(rows, measured)


def _environment(stage: str, start: Architecture, evaluator: Evaluator,
                 config: RunConfig, episodes_played: int) -> Any:
    """One stage's environment on the run's shared evaluator: a plain one for the local
    backend, a vector one of EPISODES_PER_UPDATE sub-environments (one batch of students
    per update) for a parallel backend. It is not closed after the stage: the next stage
    shares its evaluator, which the run closes at its end."""
    options: dict[str, Any] = {
        "evaluator": evaluator, "constraints": config.constraints or None,
        "anneal_episodes": config.anneal_episodes, "episodes_played": episodes_played,
        "compression_metric": config.compression_metric, "action_wall": config.action_wall}
    if stage == "shrink":
        options["start"] = start
    # Observations pad the layer table to 128 rows; deeper teachers (an imported
    # ResNet-50 has 151 layers) get a table as long as they are.
    options["max_layers"] = max(MAX_LAYERS, len(evaluator.teacher_architecture))
    if config.backend.kind == "local":
        return gym.make(ENV_IDS[stage], **options)
    return gym.make_vec(ENV_IDS[stage], num_envs=EPISODES_PER_UPDATE,
                        vectorization_mode="vector_entry_point", **options)


def _agent(config: RunConfig, env: gym.Env, policy_path: Path,
           resumed: bool) -> registry.SearchAgent:
    """A fresh agent, the saved one of an interrupted stage, or the ``policy_init`` one."""
    spec = AgentSpec.parse(config.agent)
    if resumed:
        return registry.restore(spec.name, env, policy_path, seed=config.seed,
                                settings=spec.settings)
    init = config.policy_init if env_kind(env) == "removal" else None
    return registry.make(spec.name, env, seed=config.seed, policy_init=init,
                         settings=spec.settings)


def _iteration_seed(seed: int, stage: int, iteration: int) -> int:
    """The sampling seed of one iteration, so a resumed run samples as an unbroken one."""
    return (seed * 1_000_003 + stage * 10_007 + iteration) % 2**31


def _metrics_row(iteration: int, outcomes: Sequence[tuple[float, Mapping[str, Any]]],
                 saved: Mapping[str, Any], seconds: float) -> dict[str, float]:
    rewards = [r for r, _ in outcomes]
    # Students scored without training (larger than the teacher: reward 0) have no accuracy.
    accuracies = [float(i.get("accuracy", 0.0)) for _, i in outcomes if i.get("trained", True)]
    compressions = [float(i.get("compression", 0.0)) for _, i in outcomes]
    best = saved["best_reward"]
    return {"iteration": iteration, "reward_mean": float(np.mean(rewards)),
            "reward_best": max(rewards),
            "accuracy_mean": float(np.mean(accuracies)) if accuracies else math.nan,
            "accuracy_best": max(accuracies, default=math.nan),
            "compression_mean": float(np.mean(compressions)),
            "compression_best": max(compressions),
            "best_reward_so_far": math.nan if best is None else best,
            "evaluations": saved["evaluations"], "cache_hits": saved["cache_hits"],
            "seconds": round(seconds, 3)}
