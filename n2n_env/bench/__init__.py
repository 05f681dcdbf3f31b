"""N2N-Bench: both N2N MDPs with every reward precomputed by real training.

``spaces`` numbers every episode of a search space; ``build`` trains every distinct student
of a space at several seeds (``n2n bench build``); ``table`` stores the results in one
compact file; ``lookup`` serves them through the evaluator protocol; ``envs`` holds the
benchmark environments ``N2NRemovalBench-v0`` and ``N2NShrinkBench-v0``. See
docs/rl-benchmark.md.
"""
