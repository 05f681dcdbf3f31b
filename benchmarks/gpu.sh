#!/usr/bin/env bash
# What a session lent a GPU runs first: N2N-Bench table builds on CUDA (docs/rl-benchmark.md).
#
# A CUDA build is its own build (bf16 training, wall seconds): it goes to the *-cuda work
# directories, never into the CPU builds' parts. Several shards share the GPU, each process
# one training at a time; the finished parts come back in $OUT/parts.tgz, to be unpacked in
# the repo root and committed, so that the next GPU session continues them.
#
# Prepare here (once per session; .whl and .data are ignored through .git/info/exclude):
#   echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform any -d .whl \
#     gymnasium==1.2.2 farama-notifications==0.0.4
#   mkdir -p .data && cp -r ../shared/datasets/MNIST .data/
# Then run it through the device tool, carrying .whl and .data, with a timeout that leaves
# a minute for the archive:
#   bash benchmarks/gpu.sh        (env: SECONDS_PER_SPACE=420 SHARDS=12 SPACES=removal)
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
OUT=${OUT:-/tmp/n2n-gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
SHARDS=${SHARDS:-12}
for space in ${SPACES:-removal}; do
  work=benchmarks/n2n-bench/$space-conv3-mnist-10k-cuda
  mkdir -p "$work"
  cp -n benchmarks/n2n-bench/removal-conv3-mnist-10k/teacher.pt "$work/teacher.pt"
  for shard in $(seq 0 $((SHARDS - 1))); do
    timeout "${SECONDS_PER_SPACE:-420}" python3 -m n2n_env.cli bench build "$space" \
      --data-root .data --work "$work" --device cuda --threads 1 \
      --shard "$shard/$SHARDS" --no-progress >"$OUT/build-$space-$shard.log" 2>&1 &
  done
  nvidia-smi dmon -s u -c 30 >"$OUT/utilisation-$space.txt" 2>&1 &
  wait
  echo "$space: $(ls "$work/parts" 2>/dev/null | wc -l) parts done" | tee -a "$OUT/gpu.txt"
done
tar czf "$OUT/parts.tgz" benchmarks/n2n-bench/*-cuda
