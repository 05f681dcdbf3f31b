"""N2N: network-to-network compression as reinforcement learning (Ashok et al., ICLR 2018).

Importing this package registers the Gymnasium environments ``N2NRemoval-v0`` and
``N2NShrink-v0``, and their N2N-Bench twins with tabulated rewards, ``N2NRemovalBench-v0``
and ``N2NShrinkBench-v0`` (by string entry points, so nothing heavy is imported), and stays
light: no torch import, the architecture model is pure Python. Each id also has a vector
entry point: ``gym.make_vec(env_id, num_envs=N)`` builds an
:class:`~n2n_env.vector_env.N2NVectorEnv` whose N sub-environments share one evaluator
and have their students evaluated as one batch. The modules that build, train or
store networks (``build``, ``data``, ``teacher``, ``checkpoints``, ``distill``, ...) bring
in torch. So does :func:`load_student` (``n2n_env.load_student(path)``: the student of a
run directory or model file as an ``nn.Module``), imported from
:mod:`n2n_env.student_loading` only when first used, and :func:`import_model` (a PyTorch
model as a teacher architecture with its weights, :mod:`n2n_env.model_import`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gymnasium.envs.registration import register, registry

from n2n_env.arch import Architecture, Block, Layer, Projection

if TYPE_CHECKING:
    from n2n_env.model_import import import_model
    from n2n_env.student_loading import load_student

__version__ = "0.1.0"
__all__ = ["Architecture", "Block", "Layer", "Projection", "__version__", "import_model",
           "load_student"]
_LAZY = {"load_student": "n2n_env.student_loading", "import_model": "n2n_env.model_import"}
"""Public names whose module imports torch, imported on first use."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

for _env_id, _name, _nondeterministic in (
    ("N2NRemoval-v0", "removal", True),
    ("N2NShrink-v0", "shrink", True),
    ("N2NRemovalBench-v0", "removal_bench", False),
    ("N2NShrinkBench-v0", "shrink_bench", False),
):
    if _env_id not in registry:
        register(id=_env_id, entry_point=f"n2n_env.env_factory:make_{_name}_env",
                 vector_entry_point=f"n2n_env.env_factory:make_{_name}_vector_env",
                 nondeterministic=_nondeterministic)
