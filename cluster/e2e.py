#!/usr/bin/env python3
"""Client side of cluster/test.sh (boto3): loads objects, verifies them through an endpoint,
probes writes at a consistency level, and runs a bounded read/write client that counts failures
(no retries unless `client --attempts N`: every failed request counts; with N, the SDK's
standard retry mode makes up to N attempts, as a client would, and requests that needed a retry
are counted and listed apart).

  e2e.py load     --endpoint URL --bucket B --count N --multipart-mib M --manifest F
  e2e.py verify   --endpoint URL --manifest F [--consistency L]
  e2e.py put      --endpoint URL --bucket B --key K --consistency L --expect ok|503 [--manifest F]
  e2e.py client   --endpoint URL --bucket B --seconds S --stop-file P --out F [--attempts N]
  e2e.py spoof    --endpoint URL --bucket B --direct URL[,URL...] --admin URL
"""
import argparse, hashlib, io, json, os, random, sys, time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client(endpoint, consistency=None, timeout=60, attempts=1):
    c = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ["IRONBUCKET_ACCESS_KEY"],
        aws_secret_access_key=os.environ["IRONBUCKET_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(
            retries={"total_max_attempts": attempts, "mode": "standard"},
            connect_timeout=10,
            read_timeout=timeout,
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    if consistency:
        def add(request, **_):
            request.headers["x-ironbucket-consistency"] = consistency
        c.meta.events.register("before-sign.s3.*", add)
    return c


def md5(b):
    return hashlib.md5(b).hexdigest()


def load_manifest(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"bucket": None, "objects": {}}


def save_manifest(path, m):
    with open(path + ".tmp", "w") as f:
        json.dump(m, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def cmd_load(a):
    c = client(a.endpoint)
    try:
        c.create_bucket(Bucket=a.bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    m = load_manifest(a.manifest)
    m["bucket"] = a.bucket
    rng = random.Random(42)
    for i in range(a.count):
        body = rng.randbytes(rng.randint(1, 256 * 1024))
        key = f"objects/{i:04d}.bin"
        c.put_object(Bucket=a.bucket, Key=key, Body=body)
        m["objects"][key] = md5(body)
    if a.multipart_mib:
        body = rng.randbytes(a.multipart_mib * 1024 * 1024)
        part = 8 * 1024 * 1024
        up = c.create_multipart_upload(Bucket=a.bucket, Key="big/multipart.bin")
        parts = []
        for n, off in enumerate(range(0, len(body), part), start=1):
            r = c.upload_part(Bucket=a.bucket, Key="big/multipart.bin", UploadId=up["UploadId"],
                              PartNumber=n, Body=body[off:off + part])
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        c.complete_multipart_upload(Bucket=a.bucket, Key="big/multipart.bin", UploadId=up["UploadId"],
                                    MultipartUpload={"Parts": parts})
        m["objects"]["big/multipart.bin"] = md5(body)
    save_manifest(a.manifest, m)
    print(f"loaded {len(m['objects'])} objects into {a.bucket} through {a.endpoint}")


def cmd_verify(a):
    c = client(a.endpoint, a.consistency)
    m = load_manifest(a.manifest)
    bad = []
    for key, want in sorted(m["objects"].items()):
        try:
            got = md5(c.get_object(Bucket=m["bucket"], Key=key)["Body"].read())
            if got != want:
                bad.append(f"{key}: md5 {got}, want {want}")
        except ClientError as e:
            bad.append(f"{key}: {e.response['Error']['Code']} {e.response['Error'].get('Message', '')}")
    listed = set()
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=m["bucket"]):
        listed.update(o["Key"] for o in page.get("Contents", []))
    missing = set(m["objects"]) - listed
    if missing:
        bad.append(f"not listed: {sorted(missing)[:5]}")
    if bad:
        print(f"FAIL verify through {a.endpoint}: {len(bad)} problem(s)", *bad[:10], sep="\n  ")
        sys.exit(1)
    print(f"ok   {len(m['objects'])} objects read back and listed through {a.endpoint}")


def cmd_put(a):
    c = client(a.endpoint, a.consistency)
    body = os.urandom(4096)
    try:
        c.put_object(Bucket=a.bucket, Key=a.key, Body=body)
        got = "ok"
        msg = ""
    except ClientError as e:
        got = str(e.response["ResponseMetadata"]["HTTPStatusCode"])
        msg = f"{e.response['Error']['Code']}: {e.response['Error'].get('Message', '')}"
    if got != a.expect:
        print(f"FAIL put {a.key} at {a.consistency} through {a.endpoint}: {got} {msg}, expected {a.expect}")
        sys.exit(1)
    if got == "ok" and a.manifest:
        m = load_manifest(a.manifest)
        m["objects"][a.key] = md5(body)
        save_manifest(a.manifest, m)
    print(f"ok   put at {a.consistency} through {a.endpoint}: {got} {msg}".rstrip())


def cmd_client(a):
    """Writes and reads through the endpoint until the stop file appears (or the time is up)."""
    c = client(a.endpoint, timeout=120, attempts=a.attempts)
    stats = {"ok": 0, "failed": 0, "retried": 0, "errors": [], "retries": []}
    written = {}
    deadline = time.time() + a.seconds
    i = 0
    while time.time() < deadline and not os.path.exists(a.stop_file):
        i += 1
        key = f"client/{i % 200:03d}"
        try:
            t0 = time.time()
            if i % 2 or key not in written:
                body = os.urandom(random.randint(1, 64 * 1024))
                r = c.put_object(Bucket=a.bucket, Key=key, Body=body)
                written[key] = md5(body)
            else:
                r = c.get_object(Bucket=a.bucket, Key=key)
                got = md5(r["Body"].read())
                if got != written[key]:
                    raise RuntimeError(f"{key}: read {got}, wrote {written[key]}")
            stats["ok"] += 1
            tries = r["ResponseMetadata"].get("RetryAttempts", 0)
            if tries:
                stats["retried"] += 1
                stats["retries"].append(
                    f"{time.strftime('%H:%M:%S', time.localtime(t0))} {key}: {tries} retries, {time.time() - t0:.1f} s")
        except Exception as e:  # every failure counts; nothing is retried
            stats["failed"] += 1
            stats["errors"].append(f"{time.strftime('%H:%M:%S')} {key}: {e}"[:300])
    with open(a.out, "w") as f:
        json.dump(stats, f, indent=1)
    print(f"client: {stats['ok']} requests ok ({stats['retried']} after an SDK retry), {stats['failed']} failed")


def anonymous_get(url, headers):
    import ssl, urllib.error, urllib.request
    req = urllib.request.Request(url, headers=headers)
    # The cluster's CA (AWS_CA_BUNDLE, as boto3 uses it) for https:// URLs.
    ctx = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def cmd_spoof(a):
    """A client cannot claim another address with X-Forwarded-For (only the load balancer's is
    believed), and the admin API wants a token for everything but health."""
    c = client(a.endpoint)
    c.create_bucket(Bucket=a.bucket)
    c.put_object(Bucket=a.bucket, Key="office-only", Body=b"for the office network")
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{a.bucket}/*",
        "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.7/32"}}}]}
    c.put_bucket_policy(Bucket=a.bucket, Policy=json.dumps(policy))
    spoof = {"X-Forwarded-For": "203.0.113.7"}
    for base in [a.endpoint] + a.direct.split(","):
        st = anonymous_get(f"{base}/{a.bucket}/office-only", spoof)
        if st != 403:
            sys.exit(f"spoof: a forged X-Forwarded-For got {st} from {base}, expected 403")
    st = anonymous_get(f"{a.admin}/cluster/status", {})
    if st != 401:
        sys.exit(f"spoof: /cluster/status without a token answered {st}, expected 401")
    st = anonymous_get(f"{a.admin}/cluster/status", {"Authorization": "Bearer " + os.environ["IRONBUCKET_ADMIN_TOKEN"]})
    if st != 200:
        sys.exit(f"spoof: /cluster/status with the admin token answered {st}, expected 200")
    st = anonymous_get(f"{a.admin}/health/ready", {})
    if st != 200:
        sys.exit(f"spoof: /health/ready answered {st}, expected 200 without a token")
    print("spoof: forged X-Forwarded-For refused on the LB and every node; admin reads need a token")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("load", "verify", "put", "client", "spoof"):
        s = sub.add_parser(name)
        s.add_argument("--endpoint", required=True)
        s.add_argument("--manifest")
        s.add_argument("--bucket")
        s.add_argument("--consistency")
        s.add_argument("--count", type=int, default=100)
        s.add_argument("--multipart-mib", type=int, default=0)
        s.add_argument("--key")
        s.add_argument("--expect", default="ok")
        s.add_argument("--seconds", type=int, default=300)
        s.add_argument("--stop-file")
        s.add_argument("--out")
        s.add_argument("--attempts", type=int, default=1)
        s.add_argument("--direct")
        s.add_argument("--admin")
    a = p.parse_args()
    {"load": cmd_load, "verify": cmd_verify, "put": cmd_put, "client": cmd_client, "spoof": cmd_spoof}[a.cmd](a)


if __name__ == "__main__":
    main()
