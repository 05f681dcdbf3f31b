"""The files of an ``n2n compress`` run directory: the run state (``state.json``), the
metrics CSVs, TensorBoard events, plots, the pending-policy protocol that keeps a saved
policy and the state in step, the fine-tuned students, kept so that an interrupted run
never trains a finished student again, and the final student (:func:`save_student`: a
``state_dict`` plus its architecture JSON, the package's model-file format).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from agents.search import EPISODES_PER_UPDATE
from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.checkpoints import CheckpointError, _atomic_save, _read_checkpoint
from n2n_env.data import Dataset
from n2n_env.finetune import FinetuneResult, finetune
from n2n_env.progress import Progress
from n2n_env.recipes import Recipe

STAGE_LABELS = {"removal": "Stage1", "shrink": "Stage2"}
STUDENT_FILE = "student.pt"
"""The final student of a finished run (``student.json`` beside it holds its architecture)."""
METRIC_FIELDS = ("iteration", "reward_mean", "reward_best", "accuracy_mean", "accuracy_best",
                 "compression_mean", "compression_best", "best_reward_so_far", "evaluations",
                 "cache_hits", "seconds")
CURVE_FIELDS = ("reward_mean", "best_reward_so_far", "accuracy_mean", "compression_mean")
"""The per-iteration metrics a finished search keeps in its record (:func:`curves_of_run`)."""


def finetuned(arch: Architecture, teacher: torch.nn.Module, data: Dataset, recipe: Recipe,
              device: torch.device, seed: int, progress: Progress, run: Path) -> FinetuneResult:
    """``finetune(arch, ...)``, resumed per epoch from ``run``, and kept there once done
    (``finetune_<signature>.pt``), so a resumed run trains no finished student again."""
    key = arch.signature()
    done = finetuned_path(run, arch)
    identity = {"recipe": recipe.to_dict(), "seed": seed}
    if done.is_file():
        try:
            saved = _read_checkpoint(done)
        except CheckpointError as exc:
            warnings.warn(f"training the student again: {exc}", stacklevel=2)
            saved = {}
        if saved.get("identity") == identity:
            model = build_model(arch, device=device)
            model.load_state_dict(saved["state_dict"])
            return FinetuneResult(model.eval(), saved["val_accuracy"], saved["test_accuracy"],
                                  saved["epochs"], saved["seconds"], saved["lr"],
                                  saved["diverged"])
    partial = run / f"finetune_{key}.partial"
    result = finetune(arch, teacher, data, recipe, device=device, seed=seed,
                      progress=progress, resume_path=partial)
    _atomic_save({"identity": identity,
                  "state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()},
                  "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
                  "epochs": result.epochs, "seconds": result.seconds, "lr": result.lr,
                  "diverged": result.diverged}, done)
    partial.unlink(missing_ok=True)
    return result


def finetuned_path(run: Path, arch: Architecture) -> Path:
    """Where :func:`finetuned` keeps the fine-tuned student of ``arch`` in ``run``: a dict
    whose ``state_dict`` holds the weights (the architecture is the run's record of it)."""
    return run / f"finetune_{arch.signature()}.pt"


def architecture_path(path: str | os.PathLike[str]) -> Path:
    """The architecture JSON that goes with the model file ``path`` (``X.pt`` -> ``X.json``)."""
    return Path(path).with_suffix(".json")


def save_student(path: str | os.PathLike[str], model: torch.nn.Module,
                 architecture: Architecture | None = None) -> Path:
    """Write ``model`` as a model file: its ``state_dict`` (CPU tensors only) to ``path``,
    which must end in ``.pt``, and its architecture JSON beside it (:func:`architecture_path`).

    This is the format of a run directory's ``student.pt``/``student.json``: plain tensors
    and JSON, so it is read back with ``torch.load(weights_only=True)`` and never unpickled
    (:func:`n2n_env.student_loading.load_student`). ``architecture`` defaults to the one a
    model from :func:`~n2n_env.build.build_model` carries. Both files are written beside their place
    and renamed over it, the JSON first, so a model file never lacks its architecture.
    Returns ``path``.
    """
    target = Path(path)
    if target.suffix != ".pt":
        raise ValueError(f"a model file ends in .pt (its architecture goes beside it in "
                         f".json), got {os.fspath(target)!r}")
    own = getattr(model, "architecture", None)
    if architecture is None:
        if not isinstance(own, Architecture):
            raise TypeError("pass the architecture: the model does not carry one (only models "
                            "from n2n_env.build.build_model do)")
        architecture = own
    elif isinstance(own, Architecture) and own != architecture:
        raise ValueError("the model's own architecture differs from the one given")
    target.parent.mkdir(parents=True, exist_ok=True)
    json_path = architecture_path(target)
    tmp = json_path.with_name(f".{json_path.name}.{os.getpid()}.tmp")
    tmp.write_text(architecture.to_json())
    tmp.replace(json_path)
    _atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, target)
    return target


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics CSV (none if it does not exist yet)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def curves_of_run(run: Path, stages: Sequence[str]) -> dict[str, dict[str, list[float | None]]]:
    """stage -> :data:`CURVE_FIELDS` name -> one value per iteration, from the metrics CSVs
    of the run directory ``run``; stages with no iteration yet are left out, and a NaN
    (no valid student in an iteration) becomes None, so the result is plain JSON."""
    curves = {}
    for stage in stages:
        rows = read_metrics(run / f"metrics_{stage}.csv")
        if rows:
            curves[stage] = {name: [None if math.isnan(row[name]) else row[name]
                                    for row in rows] for name in CURVE_FIELDS}
    return curves


def write_metrics(path: Path, rows: Sequence[Mapping[str, float]]) -> None:
    """Replace the metrics CSV at ``path`` with ``rows`` (written beside it, then renamed)."""
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, METRIC_FIELDS)
        writer.writeheader()
        counts = ("iteration", "evaluations", "cache_hits")
        writer.writerows({**row, **{k: int(row[k]) for k in counts}} for row in rows)
    tmp.replace(path)


def atomic_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON beside ``path``, then rename it over ``path``."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)


def plot(run: Path, stages: Sequence[str]) -> None:
    """reward.png, accuracy.png, compression.png: mean and best per iteration and stage,
    like the paper's Figure 3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for quantity in ("reward", "accuracy", "compression"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for stage in stages:
            rows = read_metrics(run / f"metrics_{stage}.csv")
            x = [row["iteration"] for row in rows]
            for kind, style in (("mean", "-"), ("best", "--")):
                ax.plot(x, [row[f"{quantity}_{kind}"] for row in rows], style,
                        label=f"{STAGE_LABELS[stage]} ({stage}) {kind}")
        ax.set_xlabel("iteration")
        ax.set_ylabel(quantity)
        ax.set_title(f"{quantity} per iteration ({EPISODES_PER_UPDATE} rollouts)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(run / f"{quantity}.png", dpi=100)
        plt.close(fig)


def default_run_dir(teacher: str | os.PathLike[str], dataset: str) -> Path:
    """``n2n-runs/<teacher>-<dataset>-<local time>``: a new directory per run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = Path(os.fspath(teacher).replace(":", "-")).stem
    return Path("n2n-runs") / f"{name}-{dataset}-{stamp}"


def read_state(path: Path) -> dict[str, Any]:
    """The run state ``state.json`` of an interrupted run, or a ValueError saying why not."""
    if not path.is_file():
        raise ValueError(f"nothing to resume: {path} does not exist")
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot resume: run state {path} is damaged ({exc}); start a new "
                         "run with --out") from None
    if not (isinstance(state, dict) and isinstance(state.get("stages"), dict) and (
            isinstance(state.get("config"), dict) or isinstance(state.get("settings"), dict))):
        raise ValueError(f"cannot resume: {path} is not an n2n run state (no config and "
                         "stages); start a new run with --out")
    return state


def pending_policy(policy_path: Path, iteration: int) -> Path:
    """Where iteration ``iteration``'s policy waits until ``state.json`` records it."""
    return policy_path.with_name(f"{policy_path.name}.{iteration}")


def settle_policy(policy_path: Path, iteration: int) -> None:
    """Make ``policy_path`` the policy of saved iteration ``iteration``.

    Each iteration writes its policy to a pending file, then ``state.json``, then renames
    the pending file. A kill between the last two leaves the pending file of the saved
    iteration (promoted here); a kill before ``state.json`` leaves one of an iteration the
    state never recorded (deleted here, so that update is not applied twice).
    """
    recorded = pending_policy(policy_path, iteration)
    if iteration > 0 and recorded.exists():
        recorded.replace(policy_path)
    for stale in policy_path.parent.glob(f"{policy_path.name}.*"):
        stale.unlink()


def board(run: Path, stage: str, done: int) -> Any:
    """A TensorBoard writer for one stage under ``run/tensorboard/<stage>``; on resume,
    events after the last saved iteration (written before a kill) are dropped."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=os.fspath(run / "tensorboard" / stage),
                         purge_step=done + 1 if done else None)
