#!/usr/bin/env bash
# Commit the finished pieces of this project's long experiments (results, never caches):
# N2N-Bench build parts and tables, the real-environment agent logs, and n2n paper's units,
# teachers, policies, tables with their settings and figures, unfinished teachers' resume states up to RESUME_LIMIT bytes
# (default 20,000,000) and copies of unfinished units' run folders (carry/, refreshed at most
# every CARRY_EVERY seconds, default 1800, and at the end of with_commits; $PYTHON, default
# python3, -m n2n_env.paper.carry; with CARRY_LOOPS=1, as at the end of with_commits, the
# copies also hold pruning loops' per-step checkpoints). Commits only these
# paths, and only when one changed.
#   bash benchmarks/commit_results.sh "MESSAGE"
# Sourced, it defines `with_commits MESSAGE CMD...`: run CMD, committing every 10 minutes
# while it runs (COMMIT_EVERY seconds) and once when it ends; returns CMD's status. And
# `only_one NAME`: exit unless no other script holding NAME's lock runs on this machine.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

commit_results() {
  local candidates=(n2n_env/bench/tables
                    benchmarks/results/real-env-conv4-mnist-10k/episodes
                    benchmarks/results/real-env-conv4-mnist-10k/teacher.pt
                    benchmarks/results/real-env-shrink-conv4-mnist-10k/episodes
                    benchmarks/paper/units benchmarks/paper/teachers benchmarks/paper/policies)
  local paths=() path
  # Copies of unfinished units' run folders, so that a fresh machine continues them.
  if [ -d benchmarks/paper/runs ]; then
    local loops=()
    [ "${CARRY_LOOPS:-0}" = 1 ] && loops=(--loops)
    "${PYTHON:-python3}" -m n2n_env.paper.carry benchmarks/paper --every "${CARRY_EVERY:-1800}" \
      --limit "${RESUME_LIMIT:-20000000}" "${loops[@]}" || echo "commit_results: carry failed" >&2
  fi
  [ -d benchmarks/paper/carry ] && paths+=(benchmarks/paper/carry)
  for path in "${candidates[@]}" benchmarks/n2n-bench/*-mnist-10k benchmarks/paper/table-*.md \
              benchmarks/paper/table-*.settings.json benchmarks/paper/figure-*.png; do
    [ -e "$path" ] && paths+=("$path")
  done
  # An unfinished teacher's per-epoch state (n2n paper's resume/), when small enough to
  # commit every 10 minutes, and the removal of those a finished teacher deleted.
  for path in benchmarks/paper/resume/*.pt; do
    [ -f "$path" ] && [ "$(stat -c %s "$path")" -le "${RESUME_LIMIT:-20000000}" ] && paths+=("$path")
  done
  mapfile -t -O ${#paths[@]} paths < <(
    git ls-files --deleted -- benchmarks/paper/resume benchmarks/paper/carry \
      'benchmarks/paper/figure-*.png')
  [ ${#paths[@]} -eq 0 ] && return 0
  git add -- "${paths[@]}" || return 1
  local changed=()
  mapfile -t changed < <(git diff --cached --name-only -- "${paths[@]}")
  # a resume state's removal staged earlier (by hand, or by a commit that failed)
  mapfile -t -O ${#changed[@]} changed < <(
    git diff --cached --name-only --diff-filter=D -- benchmarks/paper/resume \
      benchmarks/paper/carry 'benchmarks/paper/figure-*.png')
  # Only what changed: a folder with nothing to add would make `git commit -- PATH` fail.
  [ ${#changed[@]} -eq 0 ] || git commit -q -m "$1" -- "${changed[@]}"
}

only_one() {
  exec 9> "${TMPDIR:-/tmp}/n2n-$1.lock"  # held until this script and its children end
  flock -n 9 || { echo "$1 is already running on this machine" >&2; exit 1; }
}

with_commits() {
  local message=$1 loop status parent=$$
  shift
  if [ -z "$(git config user.email)" ]; then
    echo "with_commits: git has no user.email here, so nothing could be committed;" \
      "set one (git config user.email ...) and start again" >&2
    return 1
  fi
  (
    exec 9>&-  # not the caller's only_one lock: a stray loop must not keep it
    trap 'kill "$sleeper" 2> /dev/null; exit 0' TERM  # and its sleep, which holds stdout
    while kill -0 "$parent" 2> /dev/null; do  # ends with its script, even a killed one
      sleep "${COMMIT_EVERY:-600}" & sleeper=$!
      wait "$sleeper"
      kill -0 "$parent" 2> /dev/null && commit_results "$message: finished pieces so far"
    done
  ) &
  loop=$!
  "$@"
  status=$?
  kill "$loop" 2> /dev/null
  wait "$loop" 2> /dev/null  # a commit under way finishes before the last one starts
  CARRY_EVERY=0 CARRY_LOOPS=1 commit_results "$message: finished pieces"  # the state it stopped in
  return "$status"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  commit_results "${1:-Long experiments: finished pieces so far}"
fi
