#!/usr/bin/env bash
# Continue both N2N-Bench table builds on this machine: two shards, one torch thread each,
# each shard building its share of the removal table and then of the shrink table; finished
# parts are committed every 10 minutes, so a session that ends loses at most the parts in
# progress. Runs until both tables are built. From the repo root, after
# `pip install -e ".[dev]"`:
#   nohup bash benchmarks/n2n-bench/build_all.sh [DATA_ROOT] &     (default ../shared/datasets)
# Logs: /tmp/build-SPACE-SHARD.log (tqdm: read with `tr '\r' '\n' < LOG | tail -2`).
# Pause with `pkill -STOP -f "n2n bench build"`, resume with `pkill -CONT -f "n2n bench build"`.
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/commit_results.sh
only_one build_all.sh  # two would train the same parts
data_root=${1:-../shared/datasets}
export OMP_NUM_THREADS=1
# Both tables distil from the one teacher (and two shards must not train it at once).
mkdir -p benchmarks/n2n-bench/shrink-conv3-mnist-10k
cp -n benchmarks/n2n-bench/removal-conv3-mnist-10k/teacher.pt \
  benchmarks/n2n-bench/shrink-conv3-mnist-10k/teacher.pt

shard() {
  local space out
  for space in removal shrink; do
    out="n2n_env/bench/tables/$space-conv3-mnist-10k.npz"
    [ -e "$out" ] && continue  # built (a rerun would only rewrite it); delete it to rebuild
    nice -n 5 n2n bench build "$space" --data-root "$data_root" \
      --work "benchmarks/n2n-bench/$space-conv3-mnist-10k" \
      --out "$out" \
      --threads 1 --shard "$1/2" > "/tmp/build-$space-$1.log" 2>&1 || return 1
  done
}

both_shards() {
  shard 0 & local first=$!
  shard 1 & local second=$!
  wait "$first"; local status=$?
  wait "$second" || status=$?
  return "$status"
}

with_commits "N2N-Bench build" both_shards
