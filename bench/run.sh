#!/usr/bin/env bash
# Runs IronBucket's standard benchmark scenarios against a freshly started single node
# (durable writes: fsync on acknowledge) and, for the cluster3-* scenarios, a 3-node dev
# cluster at RF 3 / QUORUM on 127.0.0.1, records each result as JSON (and an SVG plot) under
# bench/results/, and regenerates docs/performance.md.
#
#   bench/run.sh                 # all scenarios, 20 s each
#   DURATION=10s bench/run.sh    # shorter
#   SCENARIOS="put-4k-c16 get-4k-c16" bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d /work/cargo-target ]; then export CARGO_TARGET_DIR=/work/cargo-target; fi
cargo build -q --release -p ironbucket-server -p ironbucket-bench
REL=${CARGO_TARGET_DIR:-target}/release
SERVER=$REL/ironbucket
BENCH=$REL/ironbucket-bench
DURATION=${DURATION:-20s}
OUT=bench/results
WORK=${BENCH_WORKDIR:-bench/tmp}
mkdir -p "$OUT" "$WORK"
export AWS_ACCESS_KEY_ID=bench-access-key AWS_SECRET_ACCESS_KEY=bench-secret-key-0123

PID=""
stop_server() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; PID=""; }
trap 'stop_server; [ -n "${NULLPID:-}" ] && kill $NULLPID 2>/dev/null; true' EXIT

# Plain HTTP, asked for explicitly (a node serves HTTPS by default): the bench client speaks
# HTTP, and the figures stay comparable with earlier runs and with the peer store.
start_server() {
  stop_server
  rm -rf "$WORK/data"
  "$SERVER" server --data-dir "$WORK/data" --bind 127.0.0.1 --port 0 --admin-port 0 --api-tls false \
    --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" >"$WORK/server.out" 2>"$WORK/server.err" &
  PID=$!
  for _ in $(seq 1 100); do grep -q "S3 API listening" "$WORK/server.out" 2>/dev/null && break; sleep 0.1; done
  EP=$(sed -n 's/^S3 API listening on //p' "$WORK/server.out")
  [ -n "$EP" ] || { cat "$WORK/server.err"; exit 1; }
}

# A 3-node dev cluster at RF 3 (QUORUM reads and writes); the bench talks to node 1, which
# coordinates every request (two of three replicas must answer).
start_cluster() {
  stop_server
  rm -rf "$WORK/cluster"
  "$SERVER" dev-cluster --nodes 3 --replication-factor 3 --dir "$WORK/cluster" --plain-http \
    --s3-port 19001 --admin-port 18001 --rpc-port 17001 >"$WORK/cluster.out" 2>"$WORK/cluster.err" &
  PID=$!
  for _ in $(seq 1 300); do grep -q "^ready" "$WORK/cluster.out" 2>/dev/null && break; sleep 0.2; done
  grep -q "^ready" "$WORK/cluster.out" || { cat "$WORK/cluster.out" "$WORK/cluster.err"; exit 1; }
  EP=http://127.0.0.1:19001
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  AWS_ACCESS_KEY_ID=$(sed -n 's/^  access key: //p' "$WORK/cluster.out")
  AWS_SECRET_ACCESS_KEY=$(sed -n 's/^  secret key: //p' "$WORK/cluster.out")
}

run() { # name, then bench arguments
  local name=$1; shift
  echo "== $name: $*"
  "$BENCH" "$@" --endpoint "$EP" --json "$OUT/$name.json" --plot "$OUT/$name.svg" --no-progress || true
}

peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$PID/status"; }

ALL="put-4k-c16 put-4k-c64 get-4k-c16 get-4k-c64 mixed-4k-c64 put-1m-c16 get-1m-c16 multipart-256m list-100k put-1g-c1 get-1g-c1 rss-64x100m cluster3-put-4k-c64 cluster3-cput-4k-c64 cluster3-get-4k-c64 cluster3-put-1m-c16 cluster3-get-1m-c16 client-null"
for s in ${SCENARIOS:-$ALL}; do
  case $s in
    put-4k-c16) start_server; run $s put --size 4KiB -c 16 --duration "$DURATION" ;;
    put-4k-c64) start_server; run $s put --size 4KiB -c 64 --duration "$DURATION" ;;
    get-4k-c16) start_server; run $s get --size 4KiB -c 16 --objects 2000 --duration "$DURATION" ;;
    get-4k-c64) start_server; run $s get --size 4KiB -c 64 --objects 2000 --duration "$DURATION" ;;
    mixed-4k-c64) start_server; run $s mixed --size 4KiB -c 64 --objects 2000 --get 70 --put 30 --duration "$DURATION" ;;
    put-1m-c16) start_server; run $s put --size 1MiB -c 16 --duration "$DURATION" ;;
    get-1m-c16) start_server; run $s get --size 1MiB -c 16 --objects 200 --duration "$DURATION" ;;
    multipart-256m) start_server; run $s multipart --size 256MiB --part-size 16MiB -c 4 --objects 8 --duration 120s ;;
    list-100k) start_server; run $s list -c 8 --objects 100000 --size 1KiB --duration "$DURATION" ;;
    put-1g-c1)
      start_server
      # The disk's own fsync'd sequential write bandwidth, for comparison.
      dd if=/dev/zero of="$WORK/dd.bin" bs=1M count=1024 conv=fsync 2>"$WORK/dd.txt" || true
      rm -f "$WORK/dd.bin"
      tail -1 "$WORK/dd.txt" | tee "$OUT/dd-1g-fsync.txt"
      run $s put --size 1GiB -c 1 --objects 3 --duration 300s ;;
    get-1g-c1) start_server; run $s get --size 1GiB -c 1 --objects 2 --duration "$DURATION" ;;
    rss-64x100m)
      start_server
      run $s put --size 100MiB -c 64 --objects 64 --duration 300s
      echo "peak_rss_kib $(peak_rss_kib)" | tee "$OUT/$s.rss.txt" ;;
    cluster3-put-4k-c64) start_cluster; run $s put --size 4KiB -c 64 --duration "$DURATION" ;;
    cluster3-cput-4k-c64) start_cluster; run $s put --size 4KiB -c 64 --if-none-match --duration "$DURATION" ;;
    put-4k-c64-cond) start_server; run $s put --size 4KiB -c 64 --if-none-match --duration "$DURATION" ;;
    cluster3-get-4k-c64) start_cluster; run $s get --size 4KiB -c 64 --objects 2000 --duration "$DURATION" ;;
    cluster3-put-1m-c16) start_cluster; run $s put --size 1MiB -c 16 --duration "$DURATION" ;;
    cluster3-get-1m-c16) start_cluster; run $s get --size 1MiB -c 16 --objects 200 --duration "$DURATION" ;;
    client-null)
      stop_server
      NULLOUT=$WORK/null.out
      taskset -c 1 "$BENCH" --threads 1 null-server --listen 127.0.0.1:0 >"$NULLOUT" 2>&1 &
      NULLPID=$!
      for _ in $(seq 1 50); do grep -q listening "$NULLOUT" && break; sleep 0.1; done
      EP=$(sed -n 's/^null server listening on //p' "$NULLOUT")
      echo "== $s: bench pinned to CPU 0, null server on CPU 1"
      taskset -c 0 "$BENCH" --threads 1 put --size 0 -c 64 --duration "$DURATION" --endpoint "$EP" --no-cleanup --json "$OUT/$s.json" --no-progress || true
      kill $NULLPID; NULLPID="" ;;
    *) echo "unknown scenario $s"; exit 2 ;;
  esac
done
stop_server
python3 bench/report.py
echo "wrote docs/performance.md"
