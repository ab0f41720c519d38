#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that take outside input (fuzz/,
# see fuzz/README.md), on the stable toolchain: cargo fuzz with `-s none`
# (no sanitizer: the -Z flag ASan needs is refused on stable; coverage and
# the targets' own assertions still work). Builds every target, runs each
# from its seed corpus for a bounded time, and fails if one crashes, hangs
# (a single input over FUZZ_TIMEOUT seconds) or leaves an artifact.
#
#   FUZZ_SECONDS  time per target (default 30)
#   FUZZ_RUNS     also stop a target after this many executions (default: none)
#   FUZZ_TARGETS  targets to run, space-separated (default: all)
#   FUZZ_TIMEOUT  seconds one input may take before it counts as a hang (default 10)
#
# Inputs the runs discover go to a temporary directory, never to
# fuzz/corpus/ (it holds the hand-made seeds only). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
runs=${FUZZ_RUNS:-}
hang=${FUZZ_TIMEOUT:-10}

# libfuzzer-sys compiles libFuzzer (C++).
. tests/ensure-packages.sh
ensure_packages g++

# cargo-fuzz 0.13 builds with `-s none` on stable (TESTING.md).
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version '^0.13' --quiet
fi
cargo_stable=(cargo)
if command -v rustup >/dev/null; then
  cargo_stable=(cargo +stable)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd fuzz
targets=(${FUZZ_TARGETS:-$("${cargo_stable[@]}" fuzz list)})
echo "== fuzz: building ${targets[*]}"
"${cargo_stable[@]}" fuzz build -s none >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
limits=(-max_total_time="$seconds" -timeout="$hang" -print_final_stats=1)
[ -n "$runs" ] && limits+=(-runs="$runs")

failed=()
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "artifacts/$target"
  touch "$work/stamp"
  log="$work/$target.log"
  start=$(date +%s%N)
  status=0
  # The outer timeout is a backstop for a run that stops answering
  # altogether; libFuzzer's own -timeout catches one slow input.
  timeout --kill-after=10 $((seconds + hang + 120)) \
    "${cargo_stable[@]}" fuzz run -s none "$target" "$work/$target" "corpus/$target" -- "${limits[@]}" \
    >"$log" 2>&1 || status=$?
  tenths=$((($(date +%s%N) - start) / 100000000))
  execs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
  [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+[[:space:]]+DONE' "$log" | grep -oE '[0-9]+' || true)
  rate=$(grep -oE '^stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
  artifacts=$(find "artifacts/$target" -type f -newer "$work/stamp")
  printf 'fuzz %s: %s executions in %d.%d s (%s exec/s)' "$target" "${execs:-?}" $((tenths / 10)) $((tenths % 10)) "${rate:-?}"
  if [ "$status" -ne 0 ] || [ -n "$artifacts" ] || [ -z "$execs" ]; then
    echo ", FAILED (exit status $status)"
    # The panic, then libFuzzer's report (the input, the artifact); or the
    # end of the log when neither is there.
    {
      grep -m1 -A1 'panicked at' "$log" || true
      sed -n '/ERROR: libFuzzer/,/^Stack backtrace:/p' "$log" | grep -vE '^(Stack backtrace:)?$' ||
        tail -20 "$log"
    } | sed 's/^/    /' >&2
    [ -z "$artifacts" ] || echo "    artifacts (under fuzz/): $artifacts" >&2
    failed+=("$target")
  else
    echo ", no failure"
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no failure"
