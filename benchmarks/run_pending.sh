#!/usr/bin/env bash
# Continue every long experiment of this project on this machine, in the issues' order,
# committing finished pieces every 10 minutes (benchmarks/commit_results.sh). Each step skips
# what is already committed, so a new session (or a fresh clone with ../shared/datasets)
# runs this same command and goes on where the last one stopped:
#   nohup bash benchmarks/run_pending.sh [DATA_ROOT] > /tmp/run_pending.log 2>&1 &
# 1. both N2N-Bench tables (issue 12; benchmarks/n2n-bench/build_all.sh);
# 2. the real-environment confirmations on conv4 (issue 12, item 5;
#    benchmarks/real_env_agents.py): actor-critic against random search on the removal MDP,
#    REINFORCE against random search on the shrink MDP;
# 3. the paper's tables 5, 1, 2, 4 and 3 (issue 15; `n2n paper`, docs/paper.md): Table 5,
#    a few hours, first, so that one whole table is done while Table 1's six full-width
#    searches (about 4 hours each) go on over many sittings. One invocation for all five,
#    so that their units share one pool of two workers of one thread each (docs/paper.md,
#    "Several units at once"): Table 4's searches run while Table 2's pruning waits for
#    Table 1, and no core idles at the end of a table.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/commit_results.sh
only_one run_pending.sh  # two would train the same parts
data_root=${1:-../shared/datasets}

bash benchmarks/n2n-bench/build_all.sh "$data_root" || exit 1

export OMP_NUM_THREADS=2
with_commits "Real-environment agents (conv4, mnist-10k)" \
  nice -n 5 python benchmarks/real_env_agents.py --data-root "$data_root" \
    --agents actor-critic random --seeds 5 --workers 2 \
    --teacher benchmarks/results/real-env-conv4-mnist-10k/teacher.pt \
    --out benchmarks/results/real-env-conv4-mnist-10k || exit 1
with_commits "Real-environment agents, shrink (conv4, mnist-10k)" \
  nice -n 5 python benchmarks/real_env_agents.py --env shrink --data-root "$data_root" \
    --agents reinforce random --seeds 10 --workers 2 \
    --teacher benchmarks/results/real-env-conv4-mnist-10k/teacher.pt \
    --out benchmarks/results/real-env-shrink-conv4-mnist-10k || exit 1

with_commits "n2n paper 5 1 2 4 3" \
  nice -n 5 n2n paper 5 1 2 4 3 --work benchmarks/paper --data-root "$data_root" \
    --no-progress --jobs 2 || exit 1
