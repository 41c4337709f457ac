#!/usr/bin/env bash
# Runs every test IronBucket has: formatting, lints, unit and integration tests (real servers
# driven by aws-sdk-s3), the aws-cli smoke test and the chaos suite's short form. Needs only the Rust toolchain; it installs
# what else it needs (aws cli from PyPI) by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse a cargo target directory outside the clone when one exists (saves build time in CI).
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d /work/cargo-target ]; then
  export CARGO_TARGET_DIR=/work/cargo-target
fi
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== unused dependencies (cargo machete)"
if ! command -v cargo-machete >/dev/null 2>&1; then
  cargo install --locked --quiet cargo-machete --version 0.9.2
fi
cargo machete
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build"
cargo build --workspace --bins
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  echo "(cargo-nextest not installed: using cargo test)"
  cargo test --workspace --no-fail-fast
fi
echo "== aws cli smoke test"
bash scripts/smoke-awscli.sh
echo "== chaos suite, short form (tests/chaos/run.sh; docs/reliability.md)"
bash tests/chaos/run.sh
