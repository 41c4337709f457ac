#!/usr/bin/env bash
# Starts the IronBucket Docker Compose cluster: 2 nodes and an HAProxy load balancer (NODES=3 for
# three nodes at RF 3 / QUORUM). First run: generates cluster/.env (cluster secret, encryption
# key, root credentials; mode 600), picks the images (debian:bookworm-slim and haproxy:lts-alpine where
# a registry answers, local Debian images built with debootstrap otherwise), builds the binaries
# with cargo and the node image. Waits for real health, then prints endpoints and credentials.
#
#   cluster/start.sh          NODES=3 cluster/start.sh          IRONBUCKET_BIND=0.0.0.0 cluster/start.sh
#   IRONBUCKET_IMAGE=repo/ironbucket:1.2 cluster/start.sh   (an image you have or can pull; else
#                                                            this tree is built into that tag)
#   IRONBUCKET_REPLICATION_FACTOR=2 NODES=3 cluster/start.sh (3 nodes at RF 2: nodes can be drained)
. "$(dirname "$0")/lib.sh"
t0=$SECONDS
command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (is it running? may you use it?)"
n=$(nodes)
echo "$n" >"$NODES_FILE"
say "starting the $n-node IronBucket cluster"
ensure_env
choose_images
if [ -n "${IRONBUCKET_IMAGE:-}" ] && [ "$IRONBUCKET_IMAGE" != ironbucket:cluster ] && have_or_pull "$IRONBUCKET_IMAGE"; then
  say "nodes run $IRONBUCKET_IMAGE (IRONBUCKET_IMAGE; not built from this tree)"
else
  build_node_image
fi
ensure_certs
compose up -d --remove-orphans >"$BUILD/compose-up.log" 2>&1 || { cat "$BUILD/compose-up.log" >&2; die "docker compose up failed"; }
say "waiting for the nodes to be healthy and to form one cluster"
wait_healthy "${START_TIMEOUT_SECS:-180}" || exit 1
bind=${IRONBUCKET_BIND:-127.0.0.1}
[ "$bind" = 0.0.0.0 ] && bind=localhost
echo "IronBucket cluster is up ($n nodes, healthy after $((SECONDS - t0)) s)"
sc=$IRONBUCKET_API_SCHEME
echo "  Load balancer (S3): https://$bind:9000"
for i in $(seq 1 "$n"); do
  echo "  Node $i: S3 $sc://$bind:900$i  admin $sc://$bind:800$i  RPC $bind:700$i"
done
echo "  CA of every certificate: $ROOT/cluster/tls/ca.pem"
echo "  Access key: $IRONBUCKET_ACCESS_KEY"
echo "  Secret key: $IRONBUCKET_SECRET_KEY"
echo "  (kept in cluster/.env)"
echo "  Try: AWS_CA_BUNDLE=$ROOT/cluster/tls/ca.pem AWS_ACCESS_KEY_ID=$IRONBUCKET_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$IRONBUCKET_SECRET_KEY aws s3 ls --endpoint-url https://$bind:9000"
