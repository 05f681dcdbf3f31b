"""The paper's baselines (section 4.4), on the same teachers, data and KD recipe as N2N.

* Table 2, filter pruning after Molchanov et al. (2016), with the paper's stopping rule and
  the best of five runs: :func:`prune_filters`, :func:`prune_best_of` (:mod:`.pruning`,
  :mod:`.runs`; needs Torch-Pruning, ``pip install "n2n[pruning]"``).
* Table 3, knowledge distillation into hand-designed students (FitNet-4, VGG-small,
  SqueezeNet 1.1): :func:`distill_student` (:mod:`.students`).

Each takes a loaded teacher, a loaded dataset, its budgets and a seed, and returns a
frozen result with the network, its parameters, FLOPs, validation and test accuracy and
the seconds it took. Torch-side, like :mod:`n2n_env.finetune`: no environment imports it.
docs/baselines.md describes the settings.
"""

from n2n_env.baselines.pruning import PruneStep, PruningConfig, StopRule, pruned_architecture
from n2n_env.baselines.runs import BestOf, PruningResult, best_run, prune_best_of, prune_filters
from n2n_env.baselines.students import (
    STUDENTS,
    StudentResult,
    count_flops,
    distill_student,
    fitnet4,
    make_student,
    squeezenet1_1,
    torch_flops,
    vgg_small,
)

__all__ = ["STUDENTS", "BestOf", "PruneStep", "PruningConfig", "PruningResult", "StopRule",
           "StudentResult", "best_run", "count_flops", "distill_student", "fitnet4",
           "make_student", "prune_best_of", "prune_filters", "pruned_architecture",
           "squeezenet1_1", "torch_flops", "vgg_small"]
