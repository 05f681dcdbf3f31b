"""N2N: network-to-network compression as reinforcement learning (Ashok et al., ICLR 2018).

Importing this package registers the Gymnasium environments ``N2NRemoval-v0`` and
``N2NShrink-v0``, and their N2N-Bench twins with tabulated rewards, ``N2NRemovalBench-v0``
and ``N2NShrinkBench-v0`` (by string entry points, so nothing heavy is imported), and stays
light: no torch import, the architecture model is pure Python. The modules that build, train or
store networks (``build``, ``data``, ``teacher``, ``checkpoints``, ``distill``, ...) bring
in torch.
"""

from gymnasium.envs.registration import register, registry

from n2n_env.arch import Architecture, Block, Layer, Projection

__version__ = "0.1.0"
__all__ = ["Architecture", "Block", "Layer", "Projection", "__version__"]

for _env_id, _entry_point, _nondeterministic in (
    ("N2NRemoval-v0", "n2n_env.env_factory:make_removal_env", True),
    ("N2NShrink-v0", "n2n_env.env_factory:make_shrink_env", True),
    ("N2NRemovalBench-v0", "n2n_env.env_factory:make_removal_bench_env", False),
    ("N2NShrinkBench-v0", "n2n_env.env_factory:make_shrink_bench_env", False),
):
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point, nondeterministic=_nondeterministic)
