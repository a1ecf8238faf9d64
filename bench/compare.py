#!/usr/bin/python3
"""Ratios between two benchmark families measured in the same run.

    bench/compare.py results.json BASELINE_PREFIX CANDIDATE_PREFIX [--counter FLOP/s]

Pairs every run of the candidate family with the baseline run that has the
same arguments (e.g. BM_prefill<128, true>/n:4096/threads:2 with
BM_prefill_eigen<128, true>/n:4096/threads:2: pass the prefixes
'BM_prefill_eigen<128, true>' and 'BM_prefill<128, true>') and prints
candidate / baseline for the counter (default: FLOP/s; 'time' compares
baseline time / candidate time). Medians are used when repetitions exist.
"""

import argparse
import json
import sys


def runs(path):
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"])
        out[name] = b  # the median aggregate, when present, comes after the repetitions
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json")
    ap.add_argument("baseline")
    ap.add_argument("candidate")
    ap.add_argument("--counter", default="FLOP/s")
    a = ap.parse_args()
    r = runs(a.json)
    rows = 0
    for name, cand in sorted(r.items()):
        if not name.startswith(a.candidate + "/"):
            continue
        base = r.get(a.baseline + name[len(a.candidate):])
        if base is None:
            continue
        if a.counter == "time":
            ratio = base["real_time"] / cand["real_time"]
        else:
            ratio = cand[a.counter] / base[a.counter]
        print(f"{name[len(a.candidate) + 1:]:40s} {ratio:6.2f}x")
        rows += 1
    if rows == 0:
        sys.exit(f"no runs of {a.candidate!r} with a matching {a.baseline!r} run")


if __name__ == "__main__":
    main()
