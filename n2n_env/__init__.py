"""N2N: network-to-network compression as reinforcement learning (Ashok et al., ICLR 2018).

Importing this package stays light (no torch import): the architecture model is pure
Python. The modules that build, train or store networks (``build``, ``data``, ``teacher``,
``checkpoints``, ``distill``, ...) bring in torch.
"""

from n2n_env.arch import Architecture, Block, Layer, Projection

__version__ = "0.1.0"
__all__ = ["Architecture", "Block", "Layer", "Projection", "__version__"]
