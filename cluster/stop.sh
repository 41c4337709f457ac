#!/usr/bin/env bash
# Stops the cluster and keeps its data for the next start. --purge also removes the data,
# configuration, logs, the node certificates and their CA (cluster/tls), cluster/.env, the
# containers, the network and the volumes.
. "$(dirname "$0")/lib.sh"
purge=0
case "${1:-}" in
  --purge) purge=1 ;;
  "") ;;
  *) die "usage: cluster/stop.sh [--purge]" ;;
esac
[ -f "$ENV_FILE" ] || { [ $purge = 1 ] || { echo "no cluster here (cluster/.env is missing)"; exit 0; }; }
[ -f "$ENV_FILE" ] || printf 'ENCRYPTION_KEY=x\nIRONBUCKET_ACCESS_KEY=x\nIRONBUCKET_SECRET_KEY=x\nIRONBUCKET_ADMIN_TOKEN=x\n' >"$ENV_FILE"
if [ $purge = 1 ]; then
  say "stopping the cluster and removing its containers, network, volumes and data"
  compose down -v --remove-orphans
  # The nodes wrote as root: remove through a container when this user cannot.
  if ! rm -rf cluster/data cluster/config cluster/logs cluster/tls 2>/dev/null; then
    docker run --rm --entrypoint rm -v "$ROOT/cluster:/c" "${IRONBUCKET_IMAGE:-ironbucket:cluster}" -rf /c/data /c/config /c/logs /c/tls
  fi
  rm -rf "$ENV_FILE" "$NODES_FILE" "$BUILD/ctx"
  echo "Cluster removed."
else
  say "stopping the cluster (data kept in cluster/data)"
  compose down
  echo "Cluster stopped; cluster/start.sh starts it again with its data."
fi
