"""Does this torch still corrupt the heap in a strided 1x1 convolution's backward pass?

torch 2.14's CPU convolution (oneDNN 3.12) aborts the process ("corrupted double-linked
list", "double free or corruption") when it trains a 1x1 convolution with stride > 1 and
2 to 6 input channels: narrow ResNets' projection shortcuts. ``n2n_env.build`` computes
those convolutions with ``SubsampledConv2d`` instead (the same function). This script runs
the bare torch convolution in a child process for each input width and says which abort,
so that the workaround can be dropped once a torch release fixes the kernel.

Run: ``python benchmarks/torch_conv_crash.py`` (about 1.5 minutes on 2 CPU cores). On this
project's machine with torch 2.14.1: widths 2, 3, 4, 5 and 6 abort; 1, 7, 8, 9, 12, 16 run.

``--through-build`` trains instead every convolution the package builds over a grid (input
widths 1-7 and 9, kernel 1 or 3, stride 1-3, plain or depthwise, 4x4 or 9x9 maps) through
``n2n_env.build``'s choice of class, after a 3x3 conv as in a network, and lists the
combinations that abort (about 10 minutes; none did with torch 2.14.1).
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


THROUGH_BUILD = """
import torch
from torch import nn
from n2n_env.build import _conv_class
layout = torch.channels_last
channels, kernel, stride, depthwise, size = {case}
out = channels if depthwise else 16
conv = _conv_class(channels, kernel, stride, kernel // 2)(
    channels, out, kernel, stride, kernel // 2, groups=channels if depthwise else 1,
    bias=False).to(memory_format=layout)
before = nn.Conv2d(channels, channels, 3, 1, 1).to(memory_format=layout)
for _ in range(200):
    x = before(torch.randn(32, channels, size, size).contiguous(memory_format=layout))
    conv(x).square().mean().backward()
print("ran")
"""


def aborts(code: str) -> bool:
    """Whether running ``code`` in a child process kills it before it prints "ran"."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    return done.returncode != 0 or "ran" not in done.stdout


def through_build() -> None:
    cases = [(channels, kernel, stride, depthwise, size)
             for channels in (1, 2, 3, 4, 5, 6, 7, 9) for kernel in (1, 3)
             for stride in (1, 2, 3) for depthwise in (False, True) for size in (4, 9)]
    failed = [case for case in cases if aborts(THROUGH_BUILD.format(case=case))]
    print(f"{len(cases)} convolutions built by n2n_env.build trained; "
          f"{len(failed)} aborted{': ' + str(failed) if failed else ''}")


def main() -> None:
    if "--through-build" in sys.argv[1:]:
        through_build()
        return
    print(f"torch {torch.__version__}, oneDNN available: {torch.backends.mkldnn.is_available()}")
    print("| input channels | strided 1x1 conv backward |")
    print("|---|---|")
    for channels in (1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16):
        verdict = "ABORTS" if aborts(CHILD.format(channels=channels)) else "runs"
        print(f"| {channels} | {verdict} |", flush=True)


if __name__ == "__main__":
    main()
