#!/usr/bin/env bash
# Rolling upgrade of the running cluster, one node at a time: builds the new node image from
# this tree (binaries with cargo on the host), then for each node: stops it (SIGTERM: it finishes
# the requests it has), replaces its container with one from the new image, starts it, and waits
# until it is healthy and caught up (alive to the others, Raft applied as far as the leader)
# before the next. With 3 nodes at QUORUM, clients going through the load balancer see no
# failure: the balancer sends each request to a live node, and two replicas answer every request.
#
#   NODES=3 cluster/upgrade.sh
. "$(dirname "$0")/lib.sh"
[ -f "$ENV_FILE" ] || die "no cluster here (run cluster/start.sh)"
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
n=$(nodes)
[ "$n" -ge 3 ] || say "warning: with $n nodes a node being replaced leaves writes at ALL (the 2-node default) refused; use NODES=3 for zero-downtime upgrades"
choose_images
build_node_image
status_of() { docker exec "ironbucket-node$1" ironbucket-cli cluster status --json 2>/dev/null || true; }
field() { grep -Eo "\"$1\": *[0-9]+" | grep -Eo '[0-9]+$' | head -1; }
for i in $(seq 1 "$n"); do
  say "node$i: stopping it and starting it from the new image"
  compose up -d --no-deps --force-recreate "ironbucket-node$i" >"$BUILD/upgrade-node$i.log" 2>&1 \
    || { cat "$BUILD/upgrade-node$i.log" >&2; die "could not replace node$i"; }
  wait_healthy 120 || die "node$i did not come back healthy"
  deadline=$((SECONDS + 60))
  while :; do
    other=$(( i == 1 ? 2 : 1 ))
    mine=$(status_of "$i" | field last_applied)
    theirs=$(status_of "$other" | field last_applied)
    [ -n "$mine" ] && [ -n "$theirs" ] && [ "$mine" -ge "$theirs" ] && break
    [ $SECONDS -lt $deadline ] || die "node$i did not catch up (applied ${mine:-?}, node$other ${theirs:-?})"
    sleep 0.5
  done
  # Alive to the failure detector again before the next node goes.
  deadline=$((SECONDS + 60))
  until docker exec "ironbucket-node$other" ironbucket-cli cluster nodes 2>/dev/null | grep -E "^node-$i " | grep -q " alive "; do
    [ $SECONDS -lt $deadline ] || die "node$i is not seen alive"
    sleep 0.5
  done
  say "node$i: upgraded, healthy and caught up"
done
echo "Rolling upgrade done: $n node(s) run $(docker image inspect -f '{{.Id}}' "${IRONBUCKET_IMAGE:-ironbucket:cluster}" | cut -c1-19)"
