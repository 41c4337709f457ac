#!/usr/bin/env bash
# End-to-end test of the Docker Compose cluster (run by .ci/run when a Docker engine answers).
# Works with no images and no registry: cluster/start.sh builds what it needs. Steps:
#   1. start the 2-node cluster from nothing (timed); through the load balancer: a bucket, 100
#      objects and one 50 MiB multipart upload; read back through each node's own port;
#   2. docker stop node2: reads through the LB go on, writes at ALL get a 503, at ONE succeed;
#      docker start node2: what was written meanwhile is readable through node2's own port;
#   3. cut node2 off (docker network disconnect) and reconnect: no acknowledged write lost;
#   4. stop and start the whole stack (timed): all data still there;
#   5. the chaos suite's kill-random, partition and pause against the 3-node cluster (RF 3,
#      QUORUM; one key in four written by conditional writes): a checking client through each
#      node's port and through the LB while containers are killed (docker kill), one is cut off
#      from the others (iptables) and one frozen (docker pause; needs root): nothing acknowledged
#      lost, every key's history linearizable, 100% success on live nodes and through the LB;
#   6. the 3-node variant at RF 2, started from the previous release's build (cluster/previous-release):
#      cluster/rolling-upgrade.sh drains, upgrades, rejoins and resyncs every node in turn while a
#      client reads and writes at QUORUM through the LB: zero failed requests, every node on this build;
#   7. cluster/stop.sh --purge leaves no containers, networks or volumes;
#   8. a cluster that cannot become healthy (a bad ENCRYPTION_KEY): start.sh exits non-zero with
#      the failing containers' log tails.
# IRONBUCKET_PROFILE (default debug here: the binaries the test command already built) picks
# the cargo profile of the image's binaries. FRESH=1 (default under CI) removes the images first.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker info >/dev/null 2>&1; then
  echo "docker end-to-end tests: SKIPPED (no Docker engine answers)"
  exit 0
fi
export IRONBUCKET_PROFILE=${IRONBUCKET_PROFILE:-debug}
WORK=$(mktemp -d)
MANIFEST=$WORK/manifest.json
# Every port speaks TLS with certificates of the cluster's CA (cluster/start.sh makes it); boto3
# and urllib trust it through AWS_CA_BUNDLE.
LB=https://127.0.0.1:9000 N1=https://127.0.0.1:9001 N2=https://127.0.0.1:9002
export AWS_CA_BUNDLE=$PWD/cluster/tls/ca.pem
step() { echo; echo "=== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# Everything this script prints goes to $WORK/out.log as well: after a failure, the failing
# step's own last lines are printed again below the containers' logs, so that the end of the
# output (all a CI summary may show) says what failed.
exec > >(tee -a "$WORK/out.log") 2>&1
cleanup() {
  local rc=$?
  if [ $rc != 0 ]; then
    local why
    why=$(awk '/^=== /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$WORK/out.log" | tail -n 40)
    echo "--- container logs (tails) after the failure"
    for c in ironbucket-node1 ironbucket-node2 ironbucket-node3 ironbucket-lb; do
      docker logs --tail 20 "$c" 2>&1 | sed "s/^/$c | /" || true
    done
    # HAProxy logs only the requests that went wrong (dontlog-normal); their termination state
    # (the 4 letters after the status and size) says who ended them.
    echo "--- the load balancer's last logged requests"
    docker logs ironbucket-lb 2>&1 | grep -E '^[0-9a-f.:]+:[0-9]+ \[' | tail -n 15 || true
    echo "--- the failed step's last lines (again)"
    printf '%s\n' "$why"
  fi
  NODES=3 bash cluster/stop.sh --purge >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

# boto3 in a private virtualenv (from PyPI), as the other test scripts install the aws cli.
VENV=${IRONBUCKET_E2E_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ironbucket/venv-e2e}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import boto3' 2>/dev/null; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip) >/dev/null
  fi
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check boto3
fi
PY="$VENV/bin/python cluster/e2e.py"

NODES=3 bash cluster/stop.sh --purge >/dev/null 2>&1 || true
if [ "${FRESH:-${CI:-}}" = 1 ] || [ "${FRESH:-${CI:-}}" = true ]; then
  docker image rm -f ironbucket:cluster ironbucket/debian-base:bookworm-haproxy >/dev/null 2>&1 || true
fi

step "1. start the 2-node cluster from nothing"
t=$SECONDS
NODES=2 bash cluster/start.sh
first=$((SECONDS - t))
set -a; . cluster/.env; set +a
[ "$(stat -c %a cluster/.env)" = 600 ] || fail "cluster/.env is not mode 600"
bash cluster/health.sh >/dev/null || fail "health.sh failed"
$PY load --endpoint $LB --bucket e2e --count 100 --multipart-mib 50 --manifest "$MANIFEST"
$PY verify --endpoint $N1 --manifest "$MANIFEST"
$PY verify --endpoint $N2 --manifest "$MANIFEST"
$PY spoof --endpoint $LB --bucket spoof --direct "$N1,$N2" --admin "https://127.0.0.1:8001"
# The nodes run as the unprivileged user ironbucket (uid 10001), and so does everything they wrote.
for i in 1 2; do
  ids=$(docker exec "ironbucket-node$i" awk '/^Uid:|^Gid:/ {print $2, $3, $4, $5}' /proc/1/status | tr '\n' ' ')
  [ "$ids" = "10001 10001 10001 10001 10001 10001 10001 10001 " ] || fail "node$i runs with uid/gid [$ids], not ironbucket (10001)"
  others=$(docker exec "ironbucket-node$i" find /var/lib/ironbucket /var/log/ironbucket ! -user 10001 | head -3)
  [ -z "$others" ] || fail "node$i has files not owned by ironbucket: $others"
done
echo "ok   the nodes run as the unprivileged user ironbucket (uid 10001) and own their data"
# Mutual TLS between the nodes is on: a node with the cluster secret but without a certificate of
# the cluster's CA cannot join.
docker run -d --name ironbucket-rogue --hostname ironbucket-rogue --network ironbucket-cluster \
  -e CLUSTER_ENABLED=true -e CLUSTER_NAME=test-cluster -e CLUSTER_SEEDS=ironbucket-node1:7000 \
  -e NODE_RPC_ADDRESS=ironbucket-rogue:7000 -e CLUSTER_SECRET="$CLUSTER_SECRET" -e NODE_ID=rogue \
  -e IRONBUCKET_ACCESS_KEY=ROGUEKEY -e IRONBUCKET_SECRET_KEY=rogue-secret-key \
  ironbucket:cluster >/dev/null
sleep 15
rogue_seen=$(docker exec ironbucket-node1 ironbucket-cli cluster nodes --json 2>/dev/null | grep -c '"rogue"' || true)
rogue_ready=0
docker exec ironbucket-rogue ironbucket-cli ready >/dev/null 2>&1 && rogue_ready=1
docker logs ironbucket-rogue 2>&1 | tail -3
docker rm -f ironbucket-rogue >/dev/null
[ "$rogue_seen" = 0 ] || fail "a node without a certificate became a member"
[ "$rogue_ready" = 0 ] || fail "a node without a certificate says it is ready"
echo "ok   a node without the cluster CA's certificate was not let in"

liveness_of() { # node-name: its liveness as node1 sees it
  docker exec ironbucket-node1 ironbucket-cli cluster nodes --json 2>/dev/null | "$VENV/bin/python" -c '
import json, sys
print(next((m["liveness"] for m in json.load(sys.stdin) if m["name"] == sys.argv[1]), ""))' "$1" 2>/dev/null || true
}
wait_liveness() { # node-name state
  local deadline=$((SECONDS + 60))
  until [ "$(liveness_of "$1")" = "$2" ]; do
    [ $SECONDS -lt $deadline ] || fail "$1 is not $2 after 60 s (it is $(liveness_of "$1"))"
    sleep 0.5
  done
}

step "2. node2 stopped: reads go on, ALL writes refused (503), ONE writes accepted"
docker stop ironbucket-node2 >/dev/null
wait_liveness node-2 down
$PY verify --endpoint $LB --manifest "$MANIFEST"
$PY put --endpoint $LB --bucket e2e --key while-away/all --consistency ALL --expect 503
for i in 1 2 3 4 5; do
  $PY put --endpoint $LB --bucket e2e --key "while-away/one-$i" --consistency ONE --expect ok --manifest "$MANIFEST"
done
docker start ironbucket-node2 >/dev/null
bash -c '. cluster/lib.sh; wait_healthy 120'
wait_liveness node-2 alive
$PY verify --endpoint $N2 --manifest "$MANIFEST"

step "3. node2 cut off from the network and reconnected: no acknowledged write lost"
docker network disconnect ironbucket-cluster ironbucket-node2
wait_liveness node-2 down
for i in 1 2 3 4 5; do
  $PY put --endpoint $N1 --bucket e2e --key "cut-off/one-$i" --consistency ONE --expect ok --manifest "$MANIFEST"
done
$PY put --endpoint $N1 --bucket e2e --key cut-off/all --consistency ALL --expect 503
docker network connect --ip 10.5.0.6 ironbucket-cluster ironbucket-node2
wait_liveness node-2 alive
$PY verify --endpoint $LB --manifest "$MANIFEST"
$PY verify --endpoint $N1 --manifest "$MANIFEST"
$PY verify --endpoint $N2 --manifest "$MANIFEST"

step "4. the whole stack stopped and started again: all data still there"
bash cluster/stop.sh
[ -z "$(docker ps -q --filter name=ironbucket-)" ] || fail "containers still running after stop.sh"
t=$SECONDS
NODES=2 bash cluster/start.sh >/dev/null
second=$((SECONDS - t))
$PY verify --endpoint $LB --manifest "$MANIFEST"
$PY verify --endpoint $N2 --manifest "$MANIFEST"
bash cluster/stop.sh --purge >/dev/null

step "5. the chaos suite against the 3-node cluster: random kills, a node cut off from the others, a frozen node; checked"
if [ "$(id -u)" = 0 ]; then
  NODES=3 bash cluster/start.sh >/dev/null
  bash tests/chaos/run.sh --compose --conditional --scenarios kill-random,partition,pause
  NODES=3 bash cluster/stop.sh --purge >/dev/null
else
  echo "SKIPPED: the chaos suite's compose faults need root (nsenter, iptables)"
fi

step "6. rolling upgrade from the previous release to this build: 3 nodes at RF 2, each drained, upgraded, rejoined and synced in turn while a QUORUM client runs: zero failed requests (SDK retries, counted)"
# The previous release's binaries, built from its commit with cargo (sharing this tree's target
# directory, so only IronBucket's own crates compile) into the image ironbucket:previous.
read -r PREV_TAG PREV_COMMIT < <(grep -v '^#' cluster/previous-release | head -1)
prev_ref=""
for r in "$PREV_TAG" "$PREV_COMMIT"; do
  if git rev-parse -q --verify "$r^{commit}" >/dev/null 2>&1; then prev_ref=$r; break; fi
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$( [ -d /work/cargo-target ] && echo /work/cargo-target || echo "$PWD/target")}
export IRONBUCKET_REPLICATION_FACTOR=2
# The previous release served S3 and admin over plain HTTP: the upgrade keeps the nodes on plain
# HTTP (IRONBUCKET_API_TLS=false, as docs/deployment.md tells) while the load balancer's own port
# stays HTTPS.
export IRONBUCKET_API_TLS=false
if [ -n "$prev_ref" ]; then
  mkdir -p "$WORK/prev"
  git archive "$prev_ref" | tar -x -C "$WORK/prev"
  # Its own package version (naming the commit), so that cargo keeps its crates apart from this
  # tree's, and from another release's, in the shared target directory (same version and
  # relative paths would make cargo take their artifacts for these sources).
  sed -i "0,/^version = \".*\"/s//version = \"0.0.0-prev-${PREV_COMMIT:0:12}\"/" "$WORK/prev/Cargo.toml"
  t=$SECONDS
  (cd "$WORK/prev" && IRONBUCKET_IMAGE=ironbucket:previous bash -c '. cluster/lib.sh; choose_images; build_node_image') \
    || fail "could not build the previous release ($PREV_TAG)"
  echo "built ironbucket:previous from $PREV_TAG ($prev_ref) in $((SECONDS - t)) s"
  IRONBUCKET_IMAGE=ironbucket:previous NODES=3 bash cluster/start.sh >/dev/null
  from="$PREV_TAG"
else
  echo "NOTE: the previous release $PREV_TAG ($PREV_COMMIT) is not in this clone's history (a shallow clone?):"
  echo "      the rolling upgrade runs from this build to itself"
  NODES=3 bash cluster/start.sh >/dev/null
  from="this build"
fi
set -a; . cluster/.env; set +a
$PY load --endpoint $LB --bucket roll --count 200 --manifest "$WORK/roll.json"
# Up to 3 attempts per request (the SDK's standard retry mode), as a client would: a node of
# the previous release stops abruptly (it has no drain), cutting what it was serving. Requests
# that needed a retry are reported.
$PY client --endpoint $LB --bucket roll --seconds 900 --stop-file "$WORK/stop" --out "$WORK/client.json" --attempts 3 &
CLIENT=$!
sleep 3
t=$SECONDS
NODES=3 bash cluster/rolling-upgrade.sh
took=$((SECONDS - t))
sleep 3
touch "$WORK/stop"
wait $CLIENT
cat "$WORK/client.json"
"$VENV/bin/python" - "$WORK/client.json" <<'PYEOF'
import json, sys
s = json.load(open(sys.argv[1]))
if s["failed"] or s["ok"] < 20:
    sys.exit(f"FAIL: {s['failed']} failed requests, {s['ok']} ok during the rolling upgrade: " + "; ".join(s["errors"][:5]))
print(f"{s['retried']} request(s) needed an SDK retry" + (": " + "; ".join(s["retries"][:5]) if s["retried"] else ""))
PYEOF
$PY verify --endpoint $LB --manifest "$WORK/roll.json"
bin_sum() { docker run --rm --entrypoint md5sum "$1" /usr/local/bin/ironbucket | cut -d' ' -f1; }
if [ -n "$prev_ref" ] && [ "$(bin_sum ironbucket:previous)" = "$(bin_sum ironbucket:cluster)" ]; then
  fail "the previous release's image holds the same ironbucket binary as this build's"
fi
for i in 1 2 3; do
  # The previous release ran as root: its data was handed to the unprivileged user.
  others=$(docker exec "ironbucket-node$i" find /var/lib/ironbucket ! -user 10001 | head -3)
  [ -z "$others" ] || fail "node$i kept files of the root-run release not owned by ironbucket: $others"
  img=$(docker inspect -f '{{.Image}}' "ironbucket-node$i")
  [ "$img" = "$(docker image inspect -f '{{.Id}}' ironbucket:cluster)" ] || fail "node$i does not run this build after the upgrade"
done
echo "ok   rolling upgrade from $from to this build in ${took} s, no failed request"
unset IRONBUCKET_REPLICATION_FACTOR IRONBUCKET_API_TLS

step "7. stop.sh --purge leaves nothing behind"
NODES=3 bash cluster/stop.sh --purge
left_c=$(docker ps -aq --filter name=ironbucket-)
left_n=$(docker network ls -q --filter name=ironbucket-cluster)
left_v=$(docker volume ls -q --filter label=com.docker.compose.project=ironbucket)
[ -z "$left_c$left_n$left_v" ] || fail "left behind: containers [$left_c] networks [$left_n] volumes [$left_v]"
[ ! -e cluster/data ] && [ ! -e cluster/.env ] || fail "purge left cluster/data or cluster/.env"

step "8. a cluster that cannot become healthy: start.sh fails, naming why"
mkdir -p cluster
umask 077
printf 'CLUSTER_SECRET=%s\nENCRYPTION_KEY=not-a-key\nIRONBUCKET_ACCESS_KEY=E2EBROKENKEY0000\nIRONBUCKET_SECRET_KEY=e2e-broken-secret-0123456789\n' \
  "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >cluster/.env
umask 022
if START_TIMEOUT_SECS=20 NODES=2 bash cluster/start.sh >"$WORK/broken.out" 2>&1; then
  fail "start.sh succeeded with a bad ENCRYPTION_KEY"
fi
grep -q "did not become healthy" "$WORK/broken.out" || fail "start.sh did not say the cluster is unhealthy: $(tail -5 "$WORK/broken.out")"
grep -q "ENCRYPTION_KEY" "$WORK/broken.out" || fail "start.sh did not show the failing node's log: $(tail -5 "$WORK/broken.out")"
echo "ok   start.sh exited non-zero and showed: $(grep -m1 ENCRYPTION_KEY "$WORK/broken.out" | cut -c1-160)"
bash cluster/stop.sh --purge >/dev/null

echo
echo "docker end-to-end tests: PASSED (start.sh to healthy: first run ${first} s with image builds, second run ${second} s)"
