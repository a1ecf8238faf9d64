#!/usr/bin/python3
"""Plot Google Benchmark JSON results on log-log axes.

    bench/plot.py results.json [more.json ...] -o out.png [--x ARG_INDEX] [--counter NAME]

Input: files written with --benchmark_format=json or --benchmark_out=FILE.
One line per benchmark family (the name before the first '/'), split further
by the label (the arch) and by the other arguments when those vary, plotted
against the family's ARG_INDEX-th numeric argument (default 0). When a run was
repeated (--benchmark_repetitions), its median aggregate is used; other
aggregates (mean, stddev, cv, BigO, RMS) are skipped.
"""

import argparse
import json
import os
import re
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # no display needed: we only write files
import matplotlib.pyplot as plt  # noqa: E402  (must follow matplotlib.use)

# Counters tried in order when --counter is not given: throughput first, so
# "higher is better" holds for the default plot.
DEFAULT_COUNTERS = ("FLOP/s", "tokens/s", "bytes_per_second", "items_per_second")

# Name components Google Benchmark appends that are not benchmark arguments.
NON_ARGUMENT_KEYS = {"threads", "repeats", "iterations", "min_time",
                     "min_warmup_time", "real_time", "manual_time", "process_time"}

NS_PER_UNIT = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

ARG_RE = re.compile(r"^(?:(?P<key>[A-Za-z_][\w]*):)?(?P<value>-?\d+(?:\.\d+)?)$")


def parse_name(run_name):
    """'BM_attn/n:1024/64/real_time' -> ('BM_attn', [('n', 1024.0), ('', 64.0)])."""
    family, *parts = run_name.split("/")
    args = []
    for part in parts:
        m = ARG_RE.match(part)
        if m and m.group("key") not in NON_ARGUMENT_KEYS:
            args.append((m.group("key") or "", float(m.group("value"))))
    return family, args


def load_runs(path):
    """The runs of one file to plot: medians where repeated, else iterations."""
    with open(path) as f:
        runs = json.load(f).get("benchmarks", [])
    runs = [r for r in runs if not r.get("error_occurred")]
    repeated = {r.get("run_name", r["name"]) for r in runs
                if r.get("run_type") == "aggregate"}
    chosen = []
    for r in runs:
        run_name = r.get("run_name", r["name"])
        if r.get("run_type") == "aggregate":
            if r.get("aggregate_name") == "median":
                chosen.append((run_name, r))
        elif run_name not in repeated:
            chosen.append((run_name, r))
    return chosen


def pick_counter(runs, requested):
    if requested:
        if not any(requested in r for _, r in runs):
            sys.exit(f"plot.py: no run has counter '{requested}'")
        return requested
    for name in DEFAULT_COUNTERS:
        if any(name in r for _, r in runs):
            return name
    return "real_time"


def value_of(run, counter):
    if counter in ("real_time", "cpu_time"):
        return run[counter] * NS_PER_UNIT.get(run.get("time_unit", "ns"), 1.0)
    return run.get(counter)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="Google Benchmark JSON files")
    ap.add_argument("-o", "--output", required=True, help="PNG file to write")
    ap.add_argument("--x", type=int, default=0, metavar="ARG_INDEX",
                    help="which numeric benchmark argument is the x axis (default 0)")
    ap.add_argument("--counter", help="counter to plot (default: first of "
                    + ", ".join(DEFAULT_COUNTERS) + ", else real_time)")
    opts = ap.parse_args()

    per_file = [(path, load_runs(path)) for path in opts.inputs]
    all_runs = [run for _, runs in per_file for run in runs]
    if not all_runs:
        sys.exit("plot.py: no benchmark runs in the input")
    counter = pick_counter(all_runs, opts.counter)

    # (file, family, label, other args) -> [(x, y)]
    lines = defaultdict(list)
    x_names = set()
    skipped = 0
    for path, runs in per_file:
        source = os.path.splitext(os.path.basename(path))[0] if len(per_file) > 1 else ""
        for run_name, run in runs:
            family, args = parse_name(run_name)
            y = value_of(run, counter)
            if opts.x >= len(args) or y is None or args[opts.x][1] <= 0 or y <= 0:
                skipped += 1
                continue
            x_names.add(args[opts.x][0])
            x = args[opts.x][1]
            others = tuple(a for i, a in enumerate(args) if i != opts.x)
            lines[(source, family, run.get("label", ""), others)].append((x, y))
    if not lines:
        sys.exit(f"plot.py: no run has a positive numeric argument {opts.x} and counter '{counter}'")
    if skipped:
        print(f"plot.py: skipped {skipped} runs without argument {opts.x} or '{counter}'",
              file=sys.stderr)

    # Only mention the other arguments for families where they vary.
    variants = defaultdict(set)
    for source, family, label, others in lines:
        variants[(source, family, label)].add(others)

    fig, ax = plt.subplots(figsize=(9, 6))
    for key in sorted(lines):
        source, family, label, others = key
        points = sorted(lines[key])
        name = " ".join(p for p in (source, family) if p)
        if label:
            name += f" [{label}]"
        if len(variants[(source, family, label)]) > 1:
            name += " " + ",".join(f"{k}={v:g}" if k else f"{v:g}" for k, v in others)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    # ArgNames({"n", ...}) gives the axis a name; plain Args do not.
    ax.set_xlabel(x_names.pop() if len(x_names) == 1 and "" not in x_names
                  else f"argument {opts.x}")
    unit = " (ns)" if counter in ("real_time", "cpu_time") else ""
    ax.set_ylabel(counter + unit)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(opts.output, dpi=120)
    print(f"plot.py: wrote {opts.output} ({counter}, {len(lines)} lines)")


if __name__ == "__main__":
    main()
