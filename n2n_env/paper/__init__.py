"""Reproducing the paper's Tables 1-5 (``n2n paper TABLE --work DIR``, docs/paper.md).

A table is a plan of independent units (:mod:`.plan`): a teacher, one search per agent and
seed, the pruning baseline, one hand-designed student, a policy's pre-training or one
transfer comparison. :func:`~n2n_env.paper.runner.run_table` runs the unfinished ones in a
work folder, each leaving one small JSON result (committed, so that another machine
continues) and resuming from its run folder after an interruption;
:func:`~n2n_env.paper.report.render` prints the paper's numbers (:mod:`.reference`)
beside ours. Settings are typed (:class:`~n2n_env.paper.settings.PaperSettings`).

This package is driver code: it runs the pipeline, the baselines and the transfer
experiment, which import both the agents and the environments. Importing it imports
nothing heavy; :mod:`.runner` and :mod:`.units` bring in torch.
"""

from n2n_env.paper.settings import TABLE_NAMES, PaperSettings, parse_table

__all__ = ["TABLE_NAMES", "PaperSettings", "parse_table"]
