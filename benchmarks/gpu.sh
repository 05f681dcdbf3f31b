#!/usr/bin/env bash
# What a session lent a GPU runs first: the paper's Table 1 at full width (VGG-13, 9.4M
# parameters, on mnist-10k; issue 15), which costs about 13 hours on the 2 CPU cores, two
# searches at a time.
#
# The table's units (docs/paper.md) run in their own work folder, benchmarks/paper-cuda,
# never mixed with a CPU run's (CUDA trains in bf16). First the teacher, then the six
# searches (REINFORCE and random search, seeds 0-2) side by side: each distils batches of
# 32 images, far from filling the GPU. The finished units come back. A search still
# running at the budget is stopped, and a copy of its run folder comes back in carry/
# (n2n_env.paper.carry): committed, it travels to the next GPU session, which continues
# the search from there. How long a search takes on the GPU is not measured yet; the
# logs say how far each got.
#
# What comes back in $OUT: gpu.txt (the GPU, the units finished and carried),
# results.tgz (units/, carry/, table-1.md with its settings and figure, and logs/ of the
# work folder; unpack it in the repo root and commit all but logs/; over 15 MB it comes in
# pieces, results.tgz.part-aa, -ab, ..., to join with cat), and the teacher's checkpoint in 15 MB
# pieces, UNIT.pt.part-aa, -ab, ... (join them with cat into
# benchmarks/paper-cuda/teachers/UNIT.pt and commit it), so that a later session keeps
# the same teacher. Only gymnasium is missing there (the searches need neither SB3 nor
# Ray).
#
# Measured in the one GPU session so far (2026-12-04; docs/results.md, "On a GPU"): Table
# 1's CIFAR-10 row instead, with DATA_ROOT=.data (cifar10-subset.npz copied there) and
#   PAPER_ARGS="--dataset cifar10-14k --teacher resnet18 --teacher-width 1" (and
#   WORK=benchmarks/paper-cuda-cifar10, where its results are committed):
# the full-width ResNet-18 teacher took 2.6 min, stage 1 of the six searches about 2 min,
# stage 2 6-9 s per iteration; at BUDGET=470 none reached its final training (about 3 min
# each, two per search: benchmarks/final_training_cost.py), so the row needs about 18
# minutes of one session. That row
# cannot continue in a later session (its 45 MB teacher and the 40 MB of data exceed the
# 64 MiB a call carries), and between two calls of one session the device keeps only
# git-ignored folders (runs/ survived; units/ and teachers/ did not). Table 1 on MNIST,
# the default here, is finished on the CPU (benchmarks/paper).
#
# The device tool sends the working tree, which must stay under 64 MiB: in December 2026
# the tracked files alone were 78 MB (the CPU run's full-width teacher in
# benchmarks/paper/teachers is 38 MB). Check with
#   git ls-files -z | xargs -0 du -cb | tail -1
# and leave the CPU runs' folders out of the working tree for the call:
#   git sparse-checkout set --no-cone '/*' '!/benchmarks/paper/' '!/benchmarks/results/'
# then, after the call, git sparse-checkout disable. Stop benchmarks/run_pending.sh first
# and start it again after: while the tree is sparse its teachers are off the disk and
# its commits of benchmarks/paper fail. Checked in a sparse clone (December 2026): 6.1 MB
# of files (find . -path ./.git -prune -o -type f -print0 | xargs -0 du -cb | tail -1),
# plus 1.6 MB of .data/MNIST and the wheels, and the tiny CPU run below passes there;
# not yet tried through the device tool.
#
# Prepare here (once per session; .whl and .data are ignored through .git/info/exclude):
#   echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform any -d .whl \
#     gymnasium==1.4.0 farama-notifications==0.0.6
#   mkdir -p .data && cp -r ../shared/datasets/MNIST .data/
#   (and, if benchmarks/paper-cuda/teachers holds no teacher yet but an earlier GPU
#   session sent one back, its pieces joined there)
# Then run it through the device tool, carrying .whl and .data, with timeout_s=600:
#   bash benchmarks/gpu.sh          (env: BUDGET=500 seconds for teacher and searches)
# Checked on the CPU with a tiny table (tests/test_gpu_script.py):
#   DEVICE=cpu WORK=/tmp/w OUT=/tmp/o PAPER_ARGS="--dataset digits ..." bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
OUT=${OUT:-/tmp/n2n-gpu-out}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-benchmarks/paper-cuda}
DATA_ROOT=${DATA_ROOT:-.data}
BUDGET=${BUDGET:-500}
read -r -a extra <<< "${PAPER_ARGS:-}"
paper=(python3 -m n2n_env.cli paper 1 --work "$WORK" --data-root "$DATA_ROOT"
       --device "$DEVICE" --no-progress "${extra[@]}")
logs=$WORK/logs
mkdir -p "$OUT" "$logs"
started=$SECONDS
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt"
else
  echo "device: $DEVICE" > "$OUT/gpu.txt"
fi

status=0
timeout -k 10 "$BUDGET" "${paper[@]}" --only 'teacher-*' > "$logs/teacher.log" 2>&1
left=$((BUDGET - (SECONDS - started)))
if ! ls "$WORK"/units/teacher-*.json > /dev/null 2>&1; then
  echo "no teacher: see logs/teacher.log" >> "$OUT/gpu.txt"
  status=1  # six searches would each train it at once
elif [ "$left" -gt 0 ]; then
  searches=()
  for agent in reinforce random; do
    for seed in 0 1 2; do
      timeout -k 10 "$left" "${paper[@]}" --only "compress-*-$agent-seed$seed" \
        > "$logs/$agent-seed$seed.log" 2>&1 &
      searches+=($!)
    done
  done
  for search in "${searches[@]}"; do
    wait "$search"
    code=$?
    [ "$code" -eq 0 ] || [ "$code" -eq 124 ] || status=1  # 124: stopped at the budget
  done
fi

"${paper[@]}" --report > "$logs/table-1.log" 2>&1 || status=1
echo "units finished: $(ls "$WORK/units" 2>/dev/null | tr '\n' ' ')" >> "$OUT/gpu.txt"
# the searches stopped at the budget, to go on in the next GPU session
python3 -m n2n_env.paper.carry "$WORK" --limit 15000000 >> "$OUT/gpu.txt" 2>&1 || status=1
echo "seconds: $((SECONDS - started))" >> "$OUT/gpu.txt"
archive=("$WORK/units" "$WORK"/table-* "$logs")
[ -e "$WORK/figure-1.png" ] && archive+=("$WORK/figure-1.png")
[ -d "$WORK/carry" ] && archive+=("$WORK/carry")
tar czf "$OUT/results.tgz" "${archive[@]}" || status=1
if [ "$(stat -c %s "$OUT/results.tgz")" -gt 15000000 ]; then
  split -b 15m "$OUT/results.tgz" "$OUT/results.tgz.part-" && rm "$OUT/results.tgz"
fi
for teacher in "$WORK"/teachers/*.pt; do
  [ -e "$teacher" ] && split -b 15m "$teacher" "$OUT/$(basename "$teacher").part-"
done
cat "$OUT/gpu.txt"
exit "$status"
