"""How each kind of unit runs, and the small result it leaves (:mod:`n2n_env.paper.plan`).

Every executor takes the :class:`~n2n_env.paper.plan.Unit` and a :class:`Context` (the work
folder, the loaded data and teachers, the device and the progress style) and returns the
unit's result as plain JSON values. Big files go under ``runs/<unit>/`` (never committed,
but copied to ``carry/<unit>/`` by :mod:`n2n_env.paper.carry` to move to another machine);
a unit interrupted there is resumed, not restarted:

* ``teacher``: :func:`n2n_env.teacher.get_teacher` (cached in ``$N2N_HOME``, resumed per
  epoch from ``resume/<unit>.pt`` in the work folder, so a committed state carries to
  another machine), then a copy in ``teachers/<unit>.pt``, the checkpoint every other
  unit reads.
* ``compress``: :func:`n2n_env.pipeline.compress` into ``runs/<unit>``, or
  :func:`n2n_env.pipeline.resume` when that run directory holds an unfinished run.
* ``prune``: :func:`n2n_env.baselines.prune_best_of` with per-seed files in ``runs/<unit>``.
* ``kd``: :func:`n2n_env.baselines.distill_student`, resumed per epoch.
* ``pretrain``: a REINFORCE removal policy trained on the source teacher, saved in
  ``policies/<unit>.pt`` (about 0.4 MB); its reward cache in ``runs/<unit>`` makes a rerun
  after an interruption replay the finished iterations without training any student.
* ``transfer``: the pre-trained (or a fresh) policy's first updates on the target teacher.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from n2n_env import data as data_mod
from n2n_env.arch import Architecture
from n2n_env.checkpoints import CheckpointError, load_teacher, save_teacher, teacher_path
from n2n_env.paper.plan import Unit
from n2n_env.progress import Progress
from n2n_env.recipes import Recipe, recipe_for
from n2n_env.run_files import curves_of_run
from n2n_env.training import model_fingerprint

__all__ = ["EXECUTORS", "Context", "reference_student"]

Log = Callable[[str], None]


class Context:
    """What executors share within one ``n2n paper`` invocation."""

    def __init__(self, work: Path, data_root: str | None, device: torch.device,
                 progress: Progress, log: Log, ensure: Callable[[str], Mapping[str, Any]]
                 ) -> None:
        self.work, self.data_root, self.device = work, data_root, device
        self.progress, self.log = progress, log
        self.ensure = ensure
        """Run the unit of this id again if its result or its file is missing; its result."""
        self._data: dict[str, data_mod.Dataset] = {}
        self._teachers: dict[str, tuple[torch.nn.Module, Any, str]] = {}

    def dataset(self, name: str) -> data_mod.Dataset:
        """Dataset ``name``, loaded once."""
        if name not in self._data:
            data_mod.check_root(name, self.data_root)
            self._data[name] = data_mod.load(name, root=self.data_root)
        return self._data[name]

    def run_dir(self, unit: Unit) -> Path:
        """``runs/<unit>``: the unit's big, uncommitted files."""
        return self.work / "runs" / unit.id

    def teacher_checkpoint(self, unit_id: str) -> Path:
        """``teachers/<unit>.pt``, trained (or copied from the cache) again if missing."""
        path = teacher_file(self.work, unit_id)
        if not path.is_file():
            self.ensure(unit_id)
        return path

    def teacher(self, unit_id: str, dataset: str) -> tuple[torch.nn.Module, Any, str]:
        """The teacher of ``unit_id`` as a model, its record and its fingerprint."""
        if unit_id not in self._teachers:
            model, record = load_teacher(self.teacher_checkpoint(unit_id),
                                         dataset_fingerprint=self.dataset(dataset).fingerprint,
                                         device=self.device)
            self._teachers[unit_id] = (model, record, model_fingerprint(model))
        return self._teachers[unit_id]

    def policy(self, unit_id: str) -> Path:
        """``policies/<unit>.pt``, pre-trained again if missing."""
        path = policy_file(self.work, unit_id)
        if not path.is_file():
            self.ensure(unit_id)
        return path

    def forget_teacher(self, unit_id: str) -> None:
        """Drop a loaded teacher (its checkpoint was just written again)."""
        self._teachers.pop(unit_id, None)


def result_file(work: Path, unit_id: str) -> Path:
    """``units/<unit>.json``: a finished unit's result."""
    return work / "units" / f"{unit_id}.json"


def teacher_file(work: Path, unit_id: str) -> Path:
    """Where a teacher unit keeps its checkpoint."""
    return work / "teachers" / f"{unit_id}.pt"


def resume_file(work: Path, unit_id: str) -> Path:
    """Where an unfinished teacher unit keeps its per-epoch training state, so that a
    fresh machine continues it from the committed work folder."""
    return work / "resume" / f"{unit_id}.pt"


def policy_file(work: Path, unit_id: str) -> Path:
    """Where a pre-training unit keeps its policy."""
    return work / "policies" / f"{unit_id}.pt"


def artefact(work: Path, unit: Unit) -> Path | None:
    """The file other units read from ``unit``, if any (committed beside its result)."""
    if unit.kind == "teacher":
        return teacher_file(work, unit.id)
    if unit.kind == "pretrain":
        return policy_file(work, unit.id)
    return None


def _recipe(dataset: str, epochs: int | None) -> Recipe:
    recipe = recipe_for(dataset)
    return recipe if epochs is None else recipe.with_epochs(epochs)


def run_teacher(unit: Unit, ctx: Context) -> dict[str, Any]:
    from n2n_env.teacher import get_teacher

    spec = unit.spec
    data = ctx.dataset(spec["dataset"])
    resume = resume_file(ctx.work, unit.id)
    model, record = get_teacher(spec["model"], spec["dataset"], width=spec["width"],
                                seed=spec["seed"], device=ctx.device, epochs=spec["epochs"],
                                progress=ctx.progress, data=data, resume_path=resume)
    resume.unlink(missing_ok=True)  # stale when the teacher came from the N2N_HOME cache
    with contextlib.suppress(OSError):  # no empty folder left behind
        resume.parent.rmdir()
    if record.recipe.epochs != spec["epochs"]:
        cached = teacher_path(spec["model"], spec["dataset"], spec["width"], spec["seed"])
        raise CheckpointError(
            f"the cached teacher {cached} was trained for {record.recipe.epochs} epochs, this "
            f"table asks for {spec['epochs']}; move it away (or set N2N_HOME elsewhere), or "
            f"pass --teacher-epochs {record.recipe.epochs}")
    path = teacher_file(ctx.work, unit.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_teacher(path, model, record)
    ctx.forget_teacher(unit.id)
    arch = record.architecture
    return {"model": spec["model"], "width": spec["width"], "dataset": spec["dataset"],
            "params": arch.num_params(), "flops": arch.flops(), "layers": len(arch),
            "val_accuracy": record.val_accuracy, "test_accuracy": record.test_accuracy,
            "epochs": record.recipe.epochs, "train_seconds": record.seconds,
            "fingerprint": model_fingerprint(model),
            "checkpoint": path.relative_to(ctx.work).as_posix(),
            "splits": [len(data.train), len(data.val), len(data.test)]}


def run_compress(unit: Unit, ctx: Context) -> dict[str, Any]:
    from n2n_env import pipeline
    from n2n_env.run_config import RunConfig

    spec = unit.spec
    run = ctx.run_dir(unit)
    checkpoint = ctx.teacher_checkpoint(spec["teacher"])
    if (run / "state.json").is_file():
        ctx.log(f"  resuming the run in {run}")
        result = pipeline.resume(run, device=str(ctx.device), progress=ctx.progress)
    else:
        config = RunConfig(
            teacher=os.fspath(checkpoint.absolute()), dataset=spec["dataset"],
            data_root=ctx.data_root, stages=tuple(spec["stages"]), agent=spec["agent"],
            iterations=spec["iterations"], constraints=spec["constraints"],
            evaluator=spec["evaluator"], seed=spec["seed"],
            finetune_epochs=spec["finetune_epochs"])
        result = pipeline.compress(config, out=run, device=str(ctx.device),
                                   progress=ctx.progress)
    rows = [{"name": row.name, "test_accuracy": row.test_accuracy,
             "val_accuracy": row.val_accuracy, "params": row.params,
             "flops": Architecture.from_json(row.architecture).flops(),
             "finetune_lr": row.finetune_lr} for row in result.rows]
    stages = _stage_summary(run)
    return {"rows": rows, "stages": stages, "student": result.student.architecture,
            "curves": curves_of_run(run, spec["stages"]),
            "run_dir": run.relative_to(ctx.work).as_posix()}


def _stage_summary(run: Path) -> dict[str, Any]:
    """Best reward, students trained and cache hits of each stage (``state.json``)."""
    state = json.loads((run / "state.json").read_text())
    return {stage: {key: saved[key] for key in ("iteration", "best_reward", "evaluations",
                                                "cache_hits")}
            for stage, saved in state["stages"].items()}


def reference_student(results: Mapping[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The stage-1 student the pruning baseline is held to: of the REINFORCE searches
    ``results`` (unit id -> result), the one with the highest validation accuracy, then
    the fewest parameters, then the first. Returns its unit id and its stage-1 row."""
    def stage1(result: Mapping[str, Any]) -> dict[str, Any]:
        return next(row for row in result["rows"] if row["name"] == "Student (Stage1)")

    ranked = sorted(results.items(), key=lambda item: (-stage1(item[1])["val_accuracy"],
                                                       stage1(item[1])["params"]))
    unit_id, result = ranked[0]
    return unit_id, stage1(result)


def run_prune(unit: Unit, ctx: Context) -> dict[str, Any]:
    from n2n_env.baselines import PruningConfig, StopRule, prune_best_of

    spec = unit.spec
    reference_id, reference = reference_student(
        {uid: ctx.ensure(uid) for uid in spec["reference"]})
    stop = StopRule(reference["val_accuracy"], reference["params"],
                    accuracy_drop=spec["accuracy_drop"])
    teacher, _, _ = ctx.teacher(spec["teacher"], spec["dataset"])
    config = PruningConfig(prune_fraction=spec["prune_fraction"],
                           taylor_examples=spec["taylor_examples"],
                           finetune_steps=spec["finetune_steps"],
                           recipe=_recipe(spec["dataset"], spec["finetune_epochs"]))
    ctx.log(f"  stopping rule: not below {reference['params']:,} parameters nor "
            f"{100 * stop.min_accuracy:.2f}% validation accuracy ({reference_id})")
    outcome = prune_best_of(teacher, ctx.dataset(spec["dataset"]), stop, config,
                            seeds=tuple(range(spec["runs"])), device=ctx.device,
                            progress=ctx.progress, directory=ctx.run_dir(unit))
    runs = [{"seed": run.seed, "params": run.params, "flops": run.flops,
             "val_accuracy": run.val_accuracy, "test_accuracy": run.test_accuracy,
             "pruned_val_accuracy": run.pruned_val_accuracy, "steps": run.steps,
             "stop_reason": run.stop_reason, "seconds": run.seconds, "lr": run.lr,
             "diverged": run.diverged} for run in outcome.runs]
    return {"reference": {"unit": reference_id, **reference}, "best_seed": outcome.best.seed,
            "runs": runs}


def run_kd(unit: Unit, ctx: Context) -> dict[str, Any]:
    from n2n_env.baselines import distill_student

    spec = unit.spec
    teacher, _, _ = ctx.teacher(spec["teacher"], spec["dataset"])
    run = ctx.run_dir(unit)
    run.mkdir(parents=True, exist_ok=True)
    partial = run / "finetune.partial"
    result = distill_student(spec["student"], teacher, ctx.dataset(spec["dataset"]),
                             recipe=_recipe(spec["dataset"], spec["finetune_epochs"]),
                             seed=spec["seed"], device=ctx.device, progress=ctx.progress,
                             resume_path=os.fspath(partial))
    partial.unlink(missing_ok=True)
    return {"student": spec["student"], "seed": spec["seed"], "params": result.params,
            "flops": result.flops, "val_accuracy": result.val_accuracy,
            "test_accuracy": result.test_accuracy, "train_seconds": result.seconds,
            "lr": result.lr, "diverged": result.diverged}


def _env(ctx: Context, teacher_unit: str, spec: Mapping[str, Any], run: Path) -> Any:
    from n2n_env.transfer import removal_env

    run.mkdir(parents=True, exist_ok=True)
    return removal_env(ctx.teacher_checkpoint(teacher_unit), spec["dataset"],
                       data_root=ctx.data_root, evaluator=spec["evaluator"], seed=spec["seed"],
                       cache=run / "rewards.sqlite")


def run_pretrain(unit: Unit, ctx: Context) -> dict[str, Any]:
    from n2n_env.transfer import pretrain, summarize

    spec = unit.spec
    env = _env(ctx, spec["teacher"], spec, ctx.run_dir(unit))
    try:
        agent, episodes = pretrain(env, spec["iterations"], seed=spec["seed"],
                                   report_every=10, report=ctx.log)
        layers = env.unwrapped.num_layers
    finally:
        env.close()
    path = policy_file(ctx.work, unit.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    pending = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    agent.save(pending)
    pending.replace(path)
    row = summarize("Pre-training", episodes, per_update=agent.config.rollouts_per_update)
    return {"layers": layers, "iterations": agent.iterations,
            "policy": path.relative_to(ctx.work).as_posix(), **_no_nan(row.to_dict())}


def _no_nan(row: Mapping[str, Any]) -> dict[str, Any]:
    """A summary row without NaNs (JSON has none)."""
    return {key: (None if isinstance(value, float) and math.isnan(value) else value)
            for key, value in row.items()}


def run_transfer(unit: Unit, ctx: Context) -> dict[str, Any]:
    from n2n_env.transfer import learn, load_pretrained, scratch, summarize

    spec = unit.spec
    env = _env(ctx, spec["target"], spec, ctx.run_dir(unit))
    try:
        if spec["policy"] == "pretrained":
            agent = load_pretrained(ctx.policy(spec["pretrain"]))
        else:
            agent = scratch(env, seed=spec["seed"])
        episodes = learn(agent, env, spec["iterations"], report_every=5, report=ctx.log)
        layers = env.unwrapped.num_layers
    finally:
        env.close()
    name = "Pre-trained" if spec["policy"] == "pretrained" else "Scratch"
    row = summarize(name, episodes, per_update=agent.config.rollouts_per_update)
    return {"layers": layers, **_no_nan(row.to_dict())}


EXECUTORS: Mapping[str, Callable[[Unit, Context], dict[str, Any]]] = {
    "teacher": run_teacher, "compress": run_compress, "prune": run_prune, "kd": run_kd,
    "pretrain": run_pretrain, "transfer": run_transfer}
"""The executor of each kind of unit."""
