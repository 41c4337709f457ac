#!/usr/bin/env python3
"""Regenerates docs/performance.md from bench/results/*.json (written by bench/run.sh)."""
import glob, json, os, platform, subprocess, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RES = os.path.join(ROOT, "bench", "results")

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"

def load(name):
    p = os.path.join(RES, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None

def main_op(r):
    ops = r["operations"]
    return max(ops.items(), key=lambda kv: kv[1]["count"]) if ops else (None, None)

rows = []
order = ["put-4k-c16", "put-4k-c64", "get-4k-c16", "get-4k-c64", "mixed-4k-c64", "put-1m-c16", "get-1m-c16",
         "multipart-256m", "list-100k", "put-1g-c1", "get-1g-c1", "rss-64x100m",
         "cluster3-put-4k-c64", "cluster3-get-4k-c64", "cluster3-put-1m-c16", "cluster3-get-1m-c16", "client-null"]
for name in order:
    r = load(name)
    if not r:
        continue
    for op, s in sorted(r["operations"].items()):
        l = s["latency_ms"]
        rows.append(f"| {name} | {op} | {s['count']} | {s['errors']} | {s['ops_per_sec']:.1f} | {s['mib_per_sec']:.1f} | "
                    f"{l['p50']:.2f} | {l['p90']:.2f} | {l['p99']:.2f} | {l['p999']:.2f} | {l['max']:.2f} |")

def get(name, op, field, sub=None):
    r = load(name)
    if not r or op not in r["operations"]:
        return None
    v = r["operations"][op][field]
    return v[sub] if sub else v

def fmt(v, unit=""):
    return "not measured" if v is None else f"{v:,.1f}{unit}"

dd = open(os.path.join(RES, "dd-1g-fsync.txt")).read().strip() if os.path.exists(os.path.join(RES, "dd-1g-fsync.txt")) else "not measured"
rss = open(os.path.join(RES, "rss-64x100m.rss.txt")).read().strip() if os.path.exists(os.path.join(RES, "rss-64x100m.rss.txt")) else None
rss_mib = int(rss.split()[1]) / 1024 if rss else None

def dd_bytes_per_sec(text):
    import re
    m = re.search(r"([0-9.]+) ([KMG])B/s", text)
    if not m:
        return None
    return float(m.group(1)) * {"K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]

def verdict(v, target, higher=True):
    if v is None:
        return "not measured"
    ok = v >= target if higher else v <= target
    return "met" if ok else "NOT met"

put64 = get("put-4k-c64", "PUT", "ops_per_sec")
get64 = get("get-4k-c64", "GET", "ops_per_sec")
p99g16 = get("get-4k-c16", "GET", "latency_ms", "p99")
put1g = get("put-1g-c1", "PUT", "mib_per_sec")
disk = dd_bytes_per_sec(dd)
ratio = (put1g * 1048576 / disk) if (put1g is not None and disk) else None
ratio_txt = "not measured" if ratio is None else f"{ratio * 100:.0f}%"
disk_txt = "not measured" if not disk else f"{disk / 1e6:.0f} MB/s"
get1g = get("get-1g-c1", "GET", "mib_per_sec")
client = get("client-null", "PUT", "ops_per_sec")

machine = f"""- CPU: {sh("nproc")} cores ({sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()})
- Memory: {sh("free -h | awk '/Mem:/ {print $2}'")}
- Disk: {sh("df -h " + ROOT + " | awk 'NR==2 {print $1, $2}'")} ({sh("findmnt -n -o FSTYPE --target " + ROOT)}); fsync'd sequential write (`dd bs=1M count=1024 conv=fsync`): {dd}
- OS: {platform.system()} {platform.release()}
- Client and server on the same machine, over loopback."""

doc = f"""# Performance

Measured with `bench/run.sh` on {datetime.date.today().isoformat()}: each scenario starts a fresh
single node (`ironbucket server`, release build, **durable writes: data and metadata fsynced before
every acknowledgement**, no encryption) and drives it with `ironbucket-bench` (release build) on the
same machine. Raw results: `bench/results/*.json`; plots: `bench/results/*.svg`.

## Machine
{machine}

## Targets
| target | measured | verdict |
| --- | --- | --- |
| 4 KiB PUT >= 2,000 ops/s at concurrency 64 (durable) | {fmt(put64, " ops/s")} | {verdict(put64, 2000)} |
| 4 KiB GET >= 8,000 ops/s at concurrency 64 | {fmt(get64, " ops/s")} | {verdict(get64, 8000)} |
| GET p99 < 10 ms at concurrency 16 | {fmt(p99g16, " ms")} | {verdict(p99g16, 10, higher=False)} |
| 1 GiB single-stream PUT >= 80% of the disk's fsync'd sequential write | {fmt(put1g, " MiB/s")} = {ratio_txt} of the disk's {disk_txt} | {verdict(ratio, 0.8)} |
| 1 GiB single-stream GET >= 1 GB/s | {fmt(get1g, " MiB/s")} | {verdict(get1g, 1000 / 1.048576)} |
| server RSS < 200 MiB while 64 clients each upload 100 MiB | {fmt(rss_mib, " MiB peak")} | {verdict(rss_mib, 200, higher=False)} |
| ironbucket-bench >= 30,000 signed requests/s on one core (null server) | {fmt(client, " req/s")} | {verdict(client, 30000)} |

## All scenarios
| scenario | op | count | errors | ops/s | MiB/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

## What the measurements showed (and what changed because of them)
- **First baseline** (every body in its own file): 4 KiB PUT at concurrency 64 reached only
  ~1,090 ops/s and got *slower* than at concurrency 16 (~1,730 ops/s): each PUT paid a file
  create, a file fsync, a rename and a directory fsync, and those do not share. 4 KiB GET:
  ~7,050 ops/s. Peak server RSS with 64 concurrent 100 MiB uploads: ~310 MiB. 1 GiB GET: ~450 MiB/s.
- **Small bodies inline** (ADR 0002): bodies up to 64 KiB are stored in the metadata database in
  the same verified/encrypted chunk format, so a small PUT is one group-committed write shared
  with every concurrent writer, and a small GET one database read.
- **Memory per upload**: file IO moved to blocking threads with owned buffers (no second copy in
  tokio's file buffer), 256 KiB write batches, hyper's default read buffer and a bounded redb
  cache (`META_CACHE_MIB`, 64 MiB; redb's default is 1 GiB). The bench client now streams GET
  bodies instead of collecting them.
- **Bounded memory for huge bodies**: one 5 GiB PUT (`ironbucket-bench put --size 5GiB -c 1
  --objects 1` against a fresh release server) peaked at 12 MiB server RSS (`VmHWM`), measured
  2026-11-26; bodies are streamed, never held whole.
- **S3 breadth (versioning etc.)**: every write now also stores a version record, updates
  per-bucket counters and is checked against quotas and access keys. Re-measured after that work
  (`SCENARIOS="put-4k-c64 get-4k-c64" DURATION=10s bench/run.sh`): 4 KiB PUT c64 ~4,070 ops/s
  (from ~5,940), GET c64 ~14,160 ops/s (from ~16,670); both targets still met. The other
  scenarios in the table were measured before that work. Run-to-run variation on this shared
  2-core machine is large (the same build measured 4,040 to 6,780 PUT ops/s).
- **Single-stream PUT is MD5-bound**: a profile of a 1 GiB upload shows `md5::compress` at ~43%
  of all samples on the 2 cores (about 85% of the core doing the hashing); MD5 (the S3 ETag) is
  inherently sequential and the `md-5` crate reaches roughly 270 MiB/s on this CPU, below 80% of
  the disk's fsync'd bandwidth. Meeting that target needs a faster MD5 (an assembly or
  multi-buffer implementation) or hashing on a core of its own; writes are already pipelined.

## Reproduce
```bash
bench/run.sh                                  # all scenarios (about 10 minutes)
SCENARIOS="put-4k-c64 get-4k-c64" bench/run.sh
cargo bench -p ironbucket-meta -p ironbucket-storage -p ironbucket-s3   # criterion micro-benchmarks
```
One scenario by hand:
```bash
ironbucket server --data-dir /tmp/ib --access-key k --secret-key secret123 --api-tls false &   # the bench speaks HTTP
AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=secret123 ironbucket-bench put --size 4KiB -c 64 --duration 20s --plot put.svg
```
"""
plots = [n for n in order if os.path.exists(os.path.join(RES, n + ".svg"))]
if plots:
    doc += "\n## Plots\nThroughput over time (top) and the latency histogram of the main operation (bottom):\n\n"
    for n in plots:
        doc += f"- {n}: ![{n}](../bench/results/{n}.svg)\n"

micro = os.path.join(RES, "criterion.txt")
if os.path.exists(micro):
    doc += "\n## Criterion micro-benchmarks\n```\n" + open(micro).read().strip() + "\n```\n"
open(os.path.join(ROOT, "docs", "performance.md"), "w").write(doc)
