#!/bin/bash
# Runs the node as PID 1 (it gets SIGTERM from `docker stop` and drains), its output going both
# to `docker logs` and to /var/log/ironbucket/ironbucket.log (the node's logs volume).
set -euo pipefail
mkdir -p /var/log/ironbucket
exec > >(tee -a /var/log/ironbucket/ironbucket.log) 2>&1
exec ironbucket server "$@"
