#!/bin/bash
# Runs the node as PID 1 (it gets SIGTERM from `docker stop` and drains), as the unprivileged user
# `ironbucket` (uid 10001), its output going both to `docker logs` and to
# /var/log/ironbucket/ironbucket.log (the node's logs volume).
#
# Started as root (the image's default), it first gives that user what the node writes and reads:
#   - the data and log directories (often bind mounts): every entry not the user's yet (a fresh
#     directory, data written by an earlier release that ran as root, or by one rolled back to)
#     is handed over; the walk only reads metadata when everything is the user's already;
#   - read access to /etc/ironbucket (secrets, certificates): group ironbucket and g+r, the owner
#     kept, so the host user who made the files can still replace them;
# then drops to the user with setpriv and runs itself again. Started as another user (`docker run
# --user`), it runs the node as that user without these steps.
set -euo pipefail
if [ "$(id -u)" = 0 ]; then
  uid=$(id -u ironbucket)
  gid=$(id -g ironbucket)
  mkdir -p /var/lib/ironbucket /var/log/ironbucket
  find /var/lib/ironbucket /var/log/ironbucket \( ! -user "$uid" -o ! -group "$gid" \) \
    -exec chown -h "$uid:$gid" {} + \
    || { echo "ironbucket-entrypoint: error: cannot hand /var/lib/ironbucket and /var/log/ironbucket to the user ironbucket (uid $uid); give them to that uid on the host, or run the container with --user" >&2; exit 1; }
  if [ -d /etc/ironbucket ]; then
    { chgrp -R "$gid" /etc/ironbucket && chmod -R g+rX /etc/ironbucket; } 2>/dev/null \
      || echo "ironbucket-entrypoint: note: cannot let the user ironbucket read /etc/ironbucket (read-only?); its files must be readable by uid $uid or gid $gid" >&2
  fi
  exec setpriv --reuid="$uid" --regid="$gid" --init-groups -- "$0" "$@"
fi
exec > >(tee -a /var/log/ironbucket/ironbucket.log) 2>&1
exec ironbucket server "$@"
