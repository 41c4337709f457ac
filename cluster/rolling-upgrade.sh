#!/usr/bin/env bash
# Rolling upgrade of the running compose cluster, as the plan describes: for each node in turn,
#   1. drain it: its data moves to the other nodes (`cluster drain`), and the script waits until
#      the rebalance is done, so the node holds nothing another node does not also hold;
#   2. upgrade it: its container is replaced by one from the new image (SIGTERM first: it
#      finishes the requests it has; the load balancer sends new ones to the other nodes);
#   3. rejoin: it comes back healthy, its Raft log caught up, seen alive by the others, and is
#      activated (`cluster activate`): it holds data again;
#   4. wait for sync: the rebalance that moves its share back to it is done;
# then the next node. Clients keep working throughout: at any moment every key has its full
# replica set on running nodes.
#
# A node can only be drained while the others can hold every replica: with as many data nodes
# as the replication factor (the 2-node cluster at RF 2, the 3-node one at RF 3) there is
# nowhere for its data to go, and the script says so and upgrades that node without draining:
# its copies stay on its disk, the writes it misses while it restarts are kept as hints by the
# other nodes and replayed, and step 4 waits until anti-entropy finds it in sync with every peer.
#
#   cluster/rolling-upgrade.sh                 new image built from this tree (cargo on the host)
#   IRONBUCKET_NEW_IMAGE=repo/ironbucket:1.2 cluster/rolling-upgrade.sh    an image you already have
#   DRAIN=0 cluster/rolling-upgrade.sh         never drain (faster; relies on hints and anti-entropy)
#   NODE_TIMEOUT_SECS=900                      how long one node's drain or sync may take (default 600)
. "$(dirname "$0")/lib.sh"
[ -f "$ENV_FILE" ] || die "no cluster here (run cluster/start.sh)"
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
n=$(nodes)
limit=${NODE_TIMEOUT_SECS:-600}
case ${DRAIN:-1} in 0|1) ;; *) die "DRAIN must be 0 or 1, not $DRAIN" ;; esac

if [ -n "${IRONBUCKET_NEW_IMAGE:-}" ]; then
  have_image "$IRONBUCKET_NEW_IMAGE" || die "image $IRONBUCKET_NEW_IMAGE is not here (docker pull it first)"
  export IRONBUCKET_IMAGE=$IRONBUCKET_NEW_IMAGE
else
  choose_images
  build_node_image
fi

# The CLI of node $1 (inside its container), with the admin token.
cli() {
  local i=$1
  shift
  docker exec -e IRONBUCKET_ADMIN_TOKEN="$IRONBUCKET_ADMIN_TOKEN" \
    "ironbucket-node$i" ironbucket-cli "$@"
}
# A JSON field (the first number or string named $1) from stdin.
num() { grep -Eo "\"$1\": *[0-9]+" | grep -Eo '[0-9]+$' | head -1; }
other_of() { if [ "$1" = 1 ]; then echo 2; else echo 1; fi; }

# Data nodes (members that hold data) and the replication factor, as node $1 sees them.
data_nodes() { cli "$1" cluster layout show --json 2>/dev/null | grep -Eo '"share": *[0-9.]+' | grep -vEc '"share": *0(\.0+)?$' || true; }
factor() { cli "$1" cluster layout show --json 2>/dev/null | num factor; }

# Waits until node $1 reports the rebalance done at a layout version above $2.
wait_rebalanced() {
  local i=$1 after=$2 deadline=$((SECONDS + limit)) s v
  while :; do
    s=$(cli "$i" cluster rebalance status --json 2>/dev/null || true)
    v=$(printf '%s' "$s" | num layout_version)
    if [ -n "$v" ] && [ "$v" -gt "$after" ] && printf '%s' "$s" | grep -Eq '"done": *true'; then
      return 0
    fi
    [ $SECONDS -lt $deadline ] || die "the rebalance did not finish within ${limit}s: $(printf '%s' "$s" | head -c 600)"
    sleep 1
  done
}

# Waits until node $1 is healthy, ready, its Raft log applied as far as node $2's, and node $2
# sees it alive.
wait_back() {
  local i=$1 o=$2 deadline=$((SECONDS + limit)) mine theirs
  until node_health "$i" | grep -Eq '"status": *"ok"' && docker exec "ironbucket-node$i" ironbucket-cli ready >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "node$i did not come back healthy and ready"
    sleep 1
  done
  while :; do
    mine=$(cli "$i" cluster status --json 2>/dev/null | num last_applied)
    theirs=$(cli "$o" cluster status --json 2>/dev/null | num last_applied)
    [ -n "$mine" ] && [ -n "$theirs" ] && [ "$mine" -ge "$theirs" ] && break
    [ $SECONDS -lt $deadline ] || die "node$i did not catch up (applied ${mine:-?}, node$o ${theirs:-?})"
    sleep 0.5
  done
  until cli "$o" cluster nodes 2>/dev/null | grep -E "^node-$i " | grep -q " alive "; do
    [ $SECONDS -lt $deadline ] || die "node$i is not seen alive by node$o"
    sleep 0.5
  done
}

# Waits until a comparison round that began after now finds node $1 in sync with every peer
# (nothing out of sync, no hints kept for it).
wait_in_sync() {
  local i=$1 deadline=$((SECONDS + limit)) s
  cli "$i" cluster repair start >/dev/null 2>&1 || true
  sleep 2
  while :; do
    s=$(cli "$i" cluster repair status --json 2>/dev/null || true)
    if [ -n "$s" ] && ! printf '%s' "$s" | grep -Eq '"(out_of_sync|hints_pending|items_behind)": *[1-9]' \
      && ! printf '%s' "$s" | grep -Eq '"progress": *\[' && ! printf '%s' "$s" | grep -q '"unreachable"'; then
      return 0
    fi
    [ $SECONDS -lt $deadline ] || die "node$i is not in sync with its peers within ${limit}s"
    cli "$i" cluster repair start >/dev/null 2>&1 || true
    sleep 2
  done
}

image_id=$(docker image inspect -f '{{.Id}}' "${IRONBUCKET_IMAGE:-ironbucket:cluster}" | cut -c1-19)
say "rolling upgrade of $n node(s) to ${IRONBUCKET_IMAGE:-ironbucket:cluster} ($image_id)"
for i in $(seq 1 "$n"); do
  o=$(other_of "$i")
  drained=0
  if [ "${DRAIN:-1}" = 1 ]; then
    dn=$(data_nodes "$o")
    rf=$(factor "$o")
    if [ -n "$dn" ] && [ -n "$rf" ] && [ "$dn" -gt "$rf" ]; then
      v=$(cli "$o" cluster rebalance status --json | num layout_version)
      say "node$i: draining (its data moves to the other $((dn - 1)) node(s))"
      cli "$o" cluster drain "node-$i" >/dev/null || die "could not drain node-$i"
      wait_rebalanced "$o" "$v"
      drained=1
      say "node$i: drained"
    else
      say "node$i: not drained: ${dn:-?} data node(s) at replication factor ${rf:-?} leave nowhere to move its data; its copies stay on its disk and it catches up after the restart"
    fi
  fi
  say "node$i: stopping it and starting it from the new image"
  compose up -d --no-deps --force-recreate "ironbucket-node$i" >"$BUILD/upgrade-node$i.log" 2>&1 \
    || { cat "$BUILD/upgrade-node$i.log" >&2; die "could not replace node$i"; }
  wait_back "$i" "$o"
  if [ $drained = 1 ]; then
    v=$(cli "$o" cluster rebalance status --json | num layout_version)
    cli "$o" cluster activate "node-$i" >/dev/null || die "could not activate node-$i"
    say "node$i: back and active; its share moves back to it"
    wait_rebalanced "$o" "$v"
  else
    wait_in_sync "$i"
  fi
  say "node$i: upgraded, rejoined and in sync"
done
wait_healthy "$limit" || die "the cluster is not healthy after the upgrade"
echo "Rolling upgrade done: $n node(s) run ${IRONBUCKET_IMAGE:-ironbucket:cluster} ($image_id)"
