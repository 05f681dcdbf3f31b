"""Does this torch still corrupt the heap in a strided 1x1 convolution's backward pass?

torch 2.14's CPU convolution (oneDNN 3.12) aborts the process ("corrupted double-linked
list", "double free or corruption") when it trains a 1x1 convolution with stride > 1 and
2 to 6 input channels: narrow ResNets' projection shortcuts. ``n2n_env.build`` computes
those convolutions with ``SubsampledConv2d`` instead (the same function). This script runs
the bare torch convolution in a child process for each input width and says which abort,
so that the workaround can be dropped once a torch release fixes the kernel.

Run: ``python benchmarks/torch_conv_crash.py`` (about 30 s on 2 CPU cores). On this
project's machine with torch 2.14.1: widths 2, 3, 4, 5 and 6 abort; 1, 7, 8, 9, 12, 16 run.
"""

from __future__ import annotations

import subprocess
import sys

import torch

CHILD = """
import torch
from torch import nn
layout = torch.channels_last
channels = {channels}
conv = nn.Conv2d(channels, 16, 1, 2, bias=False).to(memory_format=layout)
for _ in range(300):
    x = torch.randn(32, channels, 8, 8).contiguous(memory_format=layout)
    conv(x).square().mean().backward()
print("ran")
"""


def aborts(channels: int) -> bool:
    """Whether training the bare strided 1x1 convolution kills its process."""
    done = subprocess.run([sys.executable, "-c", CHILD.format(channels=channels)],
                          capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": ""})
    return done.returncode != 0 or "ran" not in done.stdout


def main() -> None:
    print(f"torch {torch.__version__}, oneDNN available: {torch.backends.mkldnn.is_available()}")
    print("| input channels | strided 1x1 conv backward |")
    print("|---|---|")
    for channels in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16):
        print(f"| {channels} | {'ABORTS' if aborts(channels) else 'runs'} |", flush=True)


if __name__ == "__main__":
    main()
