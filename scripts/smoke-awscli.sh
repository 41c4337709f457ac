#!/usr/bin/env bash
# Smoke test with the real aws cli (installed from PyPI into a private virtualenv): mb, cp of a
# 50 MiB file (multipart), ls, sync, rm against a freshly started single node, over HTTPS with the
# certificate the node makes for itself (the default), trusting the CA it prints; then the same
# node asked for plain HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
BIN="$TARGET/debug/ironbucket"
[ -x "$BIN" ] || cargo build -q -p ironbucket-server
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

VENV=${IRONBUCKET_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ironbucket/venv}
if ! "$VENV/bin/aws" --version >/dev/null 2>&1; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "installing python3 with venv support"
    (apt-get update -qq && apt-get install -y -qq python3 python3-venv python3-pip) >/dev/null
  fi
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check awscli
fi
AWS="$VENV/bin/aws"
$AWS --version

WORK=$(mktemp -d)
cleanup() {
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export AWS_ACCESS_KEY_ID=smoke-access-key AWS_SECRET_ACCESS_KEY=smoke-secret-key-123 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
"$BIN" server --data-dir "$WORK/data" --bind 127.0.0.1 --port 0 --admin-port 0 \
  --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" >"$WORK/out" 2>"$WORK/err" &
PID=$!
for _ in $(seq 1 100); do
  grep -q "S3 API listening" "$WORK/out" 2>/dev/null && break
  sleep 0.1
done
EP=$(sed -n 's/^S3 API listening on //p' "$WORK/out")
[ -n "$EP" ] || { echo "server did not start:"; cat "$WORK/err"; exit 1; }
case "$EP" in https://*) ;; *) echo "FAIL the node's default is not HTTPS: $EP"; exit 1 ;; esac
for _ in $(seq 1 50); do grep -q "AWS_CA_BUNDLE=" "$WORK/out" && break; sleep 0.1; done
export AWS_CA_BUNDLE=$(sed -n 's/^TLS: .*AWS_CA_BUNDLE=//p' "$WORK/out")
[ -f "$AWS_CA_BUNDLE" ] || { echo "FAIL the node printed no CA to trust:"; cat "$WORK/out"; exit 1; }
S3="$AWS --endpoint-url $EP"

passed=0
failed=0
check() {
  local name=$1; shift
  if "$@" >"$WORK/last" 2>&1; then passed=$((passed+1)); echo "ok   $name";
  else failed=$((failed+1)); echo "FAIL $name"; sed 's/^/     /' "$WORK/last"; fi
}

head -c $((50*1024*1024)) /dev/urandom >"$WORK/big.bin"
mkdir -p "$WORK/dir/sub" "$WORK/back"
for i in 1 2 3; do echo "file $i" >"$WORK/dir/f$i.txt"; done
echo "nested" >"$WORK/dir/sub/n.txt"

check "mb" $S3 s3 mb s3://smoke
check "cp 50 MiB (multipart)" $S3 s3 cp "$WORK/big.bin" s3://smoke/big.bin
check "multipart ETag" bash -c "$S3 s3api head-object --bucket smoke --key big.bin | grep -q '\-[0-9]*\\\\\"'"
check "ls" bash -c "$S3 s3 ls s3://smoke/ | grep -q 'big.bin'"
check "cp back and compare" bash -c "$S3 s3 cp s3://smoke/big.bin '$WORK/back/big.bin' && cmp '$WORK/big.bin' '$WORK/back/big.bin'"
check "sync up" $S3 s3 sync "$WORK/dir" s3://smoke/dir
check "ls --recursive after sync" bash -c "[ \$($S3 s3 ls --recursive s3://smoke/dir/ | wc -l) -eq 4 ]"
check "sync down and compare" bash -c "$S3 s3 sync s3://smoke/dir '$WORK/back/dir' && diff -r '$WORK/dir' '$WORK/back/dir'"
check "sync is idempotent" bash -c "[ -z \"\$($S3 s3 sync '$WORK/dir' s3://smoke/dir)\" ]"
check "rm" $S3 s3 rm s3://smoke/big.bin
check "rm --recursive" $S3 s3 rm --recursive s3://smoke/dir
check "bucket empty" bash -c "[ -z \"\$($S3 s3 ls s3://smoke/ --recursive)\" ]"
check "rb" $S3 s3 rb s3://smoke
check "error for missing bucket" bash -c "$S3 s3 ls s3://no-such-bucket 2>&1 | grep -q NoSuchBucket"
check "a CA not given is not trusted" bash -c "! AWS_CA_BUNDLE= $S3 s3 ls 2>/dev/null"

# Plain HTTP, asked for explicitly, on the same data.
kill "$PID"; wait "$PID" 2>/dev/null || true
"$BIN" server --data-dir "$WORK/data" --bind 127.0.0.1 --port 0 --admin-port 0 --api-tls false \
  --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" >"$WORK/out" 2>"$WORK/err" &
PID=$!
for _ in $(seq 1 100); do grep -q "S3 API listening" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
EP=$(sed -n 's/^S3 API listening on //p' "$WORK/out")
unset AWS_CA_BUNDLE
check "plain HTTP when asked for" bash -c "case '$EP' in http://*) ;; *) echo 'not http: $EP'; exit 1 ;; esac && $AWS --endpoint-url $EP s3 mb s3://plain && $AWS --endpoint-url $EP s3 ls | grep -q plain"
check "plain HTTP warns" grep -q "WARNING: the S3 and admin APIs speak plain HTTP" "$WORK/err"

echo "smoke: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
