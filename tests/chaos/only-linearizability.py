#!/usr/bin/env python3
"""Exit 0 when every scenario of a chaos report that missed a threshold missed only the
linearizability one ("keys not linearizable"): the signature of the violation not fixed yet
(docs/reliability.md, "Not fixed yet": a read can return a write still under way and a read begun
just after it the older value). Exit 1 otherwise (another threshold missed, or nothing missed).
Used by scripts/test.sh and cluster/test.sh to run the short form once more in that case only."""
import json
import sys

report = json.load(open(sys.argv[1]))
failed = [s for s in report["scenarios"] if not s["pass"]]
if not failed:
    sys.exit(1)
for s in failed:
    missed = [t["name"] for t in s["thresholds"] if not t["pass"]]
    if missed != ["keys not linearizable (or undecided)"]:
        print(f"{s['name']} missed {missed}: not only the known violation")
        sys.exit(1)
    print(f"{s['name']} missed only linearizability: {s['verdict']['not_linearizable'][:3]}")
sys.exit(0)
