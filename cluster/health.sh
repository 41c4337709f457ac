#!/usr/bin/env bash
# Each node's /health and the cluster's members as node1 sees them.
. "$(dirname "$0")/lib.sh"
[ -f "$ENV_FILE" ] || die "no cluster here (run cluster/start.sh)"
n=$(nodes)
rc=0
for i in $(seq 1 "$n"); do
  echo "Node $i (ironbucket-node$i):"
  if ! docker exec "ironbucket-node$i" ironbucket-cli health; then rc=1; fi
done
echo "Cluster nodes (ironbucket-cli cluster nodes, in node1):"
docker exec ironbucket-node1 ironbucket-cli cluster nodes || rc=1
exit $rc
