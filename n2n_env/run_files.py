"""The files of a ``n2n compress`` run directory besides the search itself: metrics CSVs,
plots, the run state, and the fine-tuned students, kept so that an interrupted run never
trains a finished student again.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from n2n_env.arch import Architecture
from n2n_env.build import build_model
from n2n_env.checkpoints import CheckpointError, _atomic_save, _read_checkpoint
from n2n_env.data import Dataset
from n2n_env.finetune import FinetuneResult, finetune
from n2n_env.progress import Progress
from n2n_env.recipes import Recipe

STAGE_LABELS = {"removal": "Stage1", "shrink": "Stage2"}
ROLLOUTS = 5
"""Episodes per iteration (the paper's batch of m = 5 rollouts)."""
METRIC_FIELDS = ("iteration", "reward_mean", "reward_best", "accuracy_mean", "accuracy_best",
                 "compression_mean", "compression_best", "best_reward_so_far", "evaluations",
                 "cache_hits", "seconds")


def finetuned(arch: Architecture, teacher: torch.nn.Module, data: Dataset, recipe: Recipe,
              device: torch.device, seed: int, progress: Progress, run: Path) -> FinetuneResult:
    """``finetune(arch, ...)``, resumed per epoch from ``run``, and kept there once done
    (``finetune_<signature>.pt``), so a resumed run trains no finished student again."""
    key = arch.signature()
    done = run / f"finetune_{key}.pt"
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


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics CSV (none if it does not exist yet)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


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
        ax.set_title(f"{quantity} per iteration ({ROLLOUTS} rollouts)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(run / f"{quantity}.png", dpi=100)
        plt.close(fig)
