#!/usr/bin/env bash
# The chaos suite: a 3-node cluster of real `ironbucket` processes per scenario, a checking S3
# client, and faults (SIGKILL, SIGSTOP, network cuts, delay and loss, a full disk, clock skew).
# See docs/reliability.md.
#
#   tests/chaos/run.sh            the short form on debug builds (what scripts/test.sh runs; about
#                                 1.5 minutes): no faults, random kills, a partitioned minority,
#                                 one key in four written by conditional writes (--conditional)
#   tests/chaos/run.sh --long     every scenario at full length on release builds (about 9 min);
#                                 the report goes to target/chaos/chaos-report.{json,md}
#   tests/chaos/run.sh --broken   builds the deliberately broken server (feature
#                                 unsafe-ack-before-quorum: writes acknowledged by one replica)
#                                 and passes only if the checker catches it
#   tests/chaos/run.sh --compose  the same client and checker against the Docker Compose cluster
#                                 (3 nodes; started with cluster/start.sh if it is not running,
#                                 stopped again afterwards if this started it): docker kill, docker
#                                 pause, iptables cuts and tc netem (where the kernel has it) in the
#                                 nodes' network namespaces, the load also through the load
#                                 balancer. Needs root (nsenter). Short form unless --long is given
#                                 after it; the report goes to target/chaos/compose/. The disk and
#                                 clock scenarios (--scenarios disk-full,read-only-disk,fsync-errors,
#                                 clock-ahead) recreate node-3 for the scenario (its data on a tmpfs,
#                                 fault points, a clock offset) and put it back afterwards
#
# Further arguments go to ironbucket-chaos (`--help` lists them: --scenarios, --seed, ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d /work/cargo-target ]; then
  export CARGO_TARGET_DIR=/work/cargo-target
fi
target=${CARGO_TARGET_DIR:-target}
export RUST_BACKTRACE=${RUST_BACKTRACE:-0}

mode=short
if [ "${1:-}" = "--long" ] || [ "${1:-}" = "--broken" ] || [ "${1:-}" = "--compose" ]; then
  mode=${1#--}
  shift
fi

case $mode in
  short)
    cargo build --quiet -p ironbucket-server -p ironbucket-chaos
    # One key in four written by conditional writes only (If-Match / If-None-Match), checked too.
    exec "$target/debug/ironbucket-chaos" --conditional --report-dir target/chaos "$@"
    ;;
  long)
    cargo build --quiet --release -p ironbucket-server -p ironbucket-chaos
    exec "$target/release/ironbucket-chaos" --long --report-dir target/chaos "$@"
    ;;
  compose)
    [ "$(id -u)" = 0 ] || { echo "the compose faults need root (nsenter and iptables in the containers' network namespaces): run with sudo" >&2; exit 1; }
    docker info >/dev/null 2>&1 || { echo "the Docker engine does not answer" >&2; exit 1; }
    # The network faults run iptables (and tc, where the kernel has netem) in the containers'
    # network namespaces with nsenter: install them from Debian's packages if they are missing.
    if ! command -v iptables >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1 || ! command -v nsenter >/dev/null 2>&1; then
      (apt-get update -qq && apt-get install -y -qq iptables iproute2 util-linux) >/dev/null
    fi
    cargo build --quiet -p ironbucket-chaos
    started=""
    if [ "$(docker inspect -f '{{.State.Running}}' ironbucket-node3 2>/dev/null)" != true ]; then
      NODES=3 bash cluster/start.sh
      started=1
    fi
    rc=0
    "$target/debug/ironbucket-chaos" --compose . --report-dir target/chaos/compose "$@" || rc=$?
    if [ -n "$started" ]; then
      NODES=3 bash cluster/stop.sh
    fi
    exit $rc
    ;;
  broken)
    # The broken server replaces target/debug/ironbucket while it is built: keep a copy under
    # another name, then build the real one again (cargo keeps both variants, so that is quick).
    cargo build --quiet -p ironbucket-server --features unsafe-ack-before-quorum
    cp "$target/debug/ironbucket" "$target/debug/ironbucket-broken"
    cargo build --quiet -p ironbucket-server -p ironbucket-chaos
    if cmp -s "$target/debug/ironbucket" "$target/debug/ironbucket-broken"; then
      echo "the rebuilt server is still the broken one" >&2
      exit 1
    fi
    exec "$target/debug/ironbucket-chaos" --binary "$target/debug/ironbucket-broken" \
      --expect-violations --report-dir target/chaos/broken "$@"
    ;;
esac
