#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo fuzz, libFuzzer) for FUZZ_SECONDS each (default 20),
# starting from the seed corpus in fuzz/corpus/<target>; new inputs go to a scratch directory,
# never into the tree. A crash, a panic, a timeout or memory beyond the limit fails the run and
# leaves the input under fuzz/artifacts/<target>/. Installs cargo-fuzz from crates.io if missing.
#
#   scripts/fuzz.sh                      every target, 20 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh xml_bodies aws_chunked
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-20}
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install -q cargo-fuzz --locked
fi
# Its own target directory (instrumented builds must not mix with the workspace's); one outside
# the clone is reused when it exists, to save build time.
if [ -z "${FUZZ_TARGET_DIR:-}" ]; then
  if [ -d /work/cargo-target ]; then FUZZ_TARGET_DIR=/work/cargo-target-fuzz; else FUZZ_TARGET_DIR=$PWD/fuzz/target; fi
fi
export CARGO_TARGET_DIR=$FUZZ_TARGET_DIR
# libFuzzer's instrumentation flags are nightly-only options of rustc; the stable compiler
# accepts them with RUSTC_BOOTSTRAP (no sanitizer runtime is needed: `-s none`).
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
echo "fuzz: building the targets"
if ! (cd fuzz && cargo fuzz build -s none -O >"$scratch/build.log" 2>&1); then
  tail -30 "$scratch/build.log" >&2
  echo "fuzz: the targets do not build" >&2
  exit 1
fi
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  set +e
  (cd fuzz && cargo fuzz run -s none -O "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) >"$scratch/$t.log" 2>&1
  rc=$?
  set -e
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$scratch/$t.log" | grep -Eo '[0-9]+$' || echo "?")
  rss=$(grep -Eo 'stat::peak_rss_mb: *[0-9]+' "$scratch/$t.log" | grep -Eo '[0-9]+$' || echo "?")
  if [ $rc -ne 0 ]; then
    grep -E "panicked|ERROR|SUMMARY|Test unit written|==[0-9]+==" "$scratch/$t.log" | head -20 >&2 || tail -30 "$scratch/$t.log" >&2
    echo "fuzz: $t FAILED after $runs runs; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  echo "fuzz: $t: $runs runs in ${secs} s, peak RSS ${rss} MB, no crash"
done
echo "fuzz: every target ran ${secs} s without a crash"
