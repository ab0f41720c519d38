#!/usr/bin/env bash
# mfad's own work per login, counted: bench_work (tests/src/bin/bench_work.rs)
# runs code logins through mfad's library in one process (no socket, no other
# process), and valgrind's callgrind counts the instructions it executes in
# user space. The count is the same from run to run, so it compares two
# builds exactly where timings are noisy; it leaves out what the kernel does
# (system calls, task switches), which bench/run.sh and bench/profile.sh
# measure.
#
#   bench/work.sh [--against REV]
#
#   --against REV  the same for commit REV, built in a git worktree with
#                  this tree's bench_work.rs, printed beside this tree's
#
# Instructions per login = (count at 4,000 logins - count at 1,000) / 3,000:
# the difference leaves out the start, the set-up of the user (its recovery
# codes' PBKDF2) and the 1,100 warm-up logins. It also prints the user and
# system CPU time per login of three plain runs of 10,000 (getrusage; these
# are as noisy as the machine). The store is on tmpfs (BENCH_DIR, default
# /dev/shm), where a sync costs next to nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

AGAINST=
while (($#)); do
  case $1 in
    --against) AGAINST=${2:?--against needs a commit}; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done

. "$ROOT/tests/ensure-packages.sh"
ensure_packages valgrind libpam0g-dev libclang-dev

SCRATCH=$(mktemp -d "${BENCH_DIR:-/dev/shm}/mfa-work.XXXXXX")
cleanup() {
  if [[ -n $AGAINST && -d $SCRATCH/tree ]]; then git worktree remove --force "$SCRATCH/tree" || true; fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

echo "== build (release)"
cargo build --release --locked -p e2e --bin bench_work
BUILT=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')
BINS=("${CARGO_TARGET_DIR:-$ROOT/target}/release/bench_work")
LABELS=("$BUILT")
if [[ -n $AGAINST ]]; then
  git worktree add --detach --force "$SCRATCH/tree" "$AGAINST" >/dev/null
  cp tests/src/bin/bench_work.rs "$SCRATCH/tree/tests/src/bin/"
  (cd "$SCRATCH/tree" && CARGO_TARGET_DIR=$SCRATCH/target cargo build --release --locked -p e2e --bin bench_work)
  BINS=("$SCRATCH/target/release/bench_work" "${BINS[@]}")
  LABELS=("$(git rev-parse --short "$AGAINST")" "${LABELS[@]}")
fi

# timed BIN: one plain run of 10,000 logins, in a store directory of its own
timed() {
  local dir
  dir=$(mktemp -d "$SCRATCH/run.XXXXXX")
  "$1" "$dir" --logins 10000
  rm -rf "$dir"
}
# instructions BIN LOGINS: what callgrind counted for one run of LOGINS
instructions() {
  local dir said count
  dir=$(mktemp -d "$SCRATCH/run.XXXXXX")
  if ! said=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$dir" --logins "$2" 2>&1 >/dev/null); then
    echo "$1 failed under valgrind ($2 logins):" >&2
    echo "$said" | grep -v '^==' >&2
    exit 1
  fi
  rm -rf "$dir"
  count=$(sed -n 's/.*Collected : //p' <<<"$said")
  [[ $count =~ ^[0-9]+$ ]] || { echo "callgrind gave no count for $1" >&2; exit 1; }
  echo "$count"
}
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) x $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "| build | instructions per login | user µs per login (3 runs) | system µs per login (3 runs) |"
echo "|---|---:|---|---|"
for i in "${!BINS[@]}"; do
  bin=${BINS[$i]}
  low=$(instructions "$bin" 1000) || exit 1
  high=$(instructions "$bin" 4000) || exit 1
  users=() systems=()
  for _ in 1 2 3; do
    line=$(timed "$bin")
    users+=("$(field "$line" user_us)")
    systems+=("$(field "$line" system_us)")
  done
  printf '| %s | %s | %s | %s |\n' "${LABELS[$i]}" "$(((high - low) / 3000))" "${users[*]}" "${systems[*]}"
done
