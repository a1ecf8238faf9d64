#!/usr/bin/python3
"""Plot Google Benchmark JSON results on log-log axes.

    bench/plot.py results.json [more.json ...] -o out.png [--x ARG] [--counter NAME]

Input: files written with --benchmark_format=json or --benchmark_out=FILE.
One line per benchmark family (the name before the first '/'), split further
by the label (the arch) and by the other arguments when those vary, plotted
against the argument ARG: its name as the benchmark gives it (ArgNames /
ArgName: "n" in BM_prefill/n:4096/threads:2) or its index among the run's
numeric arguments (default 0). The x axis is labelled with the argument's
name ("argument ARG" for unnamed ones). When a run was repeated
(--benchmark_repetitions), its median aggregate is used; other aggregates
(mean, stddev, cv, BigO, RMS) are skipped.
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
# ("threads" also names an argument in our benchmarks; parse_name tells the
# two apart.)
NON_ARGUMENT_KEYS = {"threads", "repeats", "iterations", "min_time",
                     "min_warmup_time", "real_time", "manual_time", "process_time"}

NS_PER_UNIT = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

ARG_RE = re.compile(r"^(?:(?P<key>[A-Za-z_][\w]*):)?(?P<value>-?\d+(?:\.\d+)?)$")


def parse_name(run_name, bench_threads=None):
    """'BM_attn/n:1024/64/real_time' -> ('BM_attn', [('n', 1024.0), ('', 64.0)]).

    Google Benchmark's own "threads:N" (->Threads(N)) is the last component
    and equals the run's "threads" field (bench_threads); any other
    "threads:N" is an argument (ArgNames({"n", "threads"}))."""
    family, *parts = run_name.split("/")
    args = []
    for i, part in enumerate(parts):
        m = ARG_RE.match(part)
        if not m:
            continue
        key, value = m.group("key") or "", float(m.group("value"))
        if key == "threads":
            if i == len(parts) - 1 and bench_threads is not None and value == bench_threads:
                continue
        elif key in NON_ARGUMENT_KEYS:
            continue
        args.append((key, value))
    return family, args


def find_x(args, x):
    """Index into args of the x argument: x is an index or an argument name."""
    if isinstance(x, int):
        return x if x < len(args) else None
    return next((i for i, (key, _) in enumerate(args) if key == x), None)


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
    ap.add_argument("--x", default="0", metavar="ARG",
                    help="the x axis: an argument's name (e.g. n) or its index among the "
                    "numeric arguments (default 0)")
    ap.add_argument("--counter", help="counter to plot (default: first of "
                    + ", ".join(DEFAULT_COUNTERS) + ", else real_time)")
    opts = ap.parse_args()
    x_arg = int(opts.x) if opts.x.isdigit() else opts.x
    x_desc = f"argument {opts.x}" if isinstance(x_arg, int) else f"argument '{opts.x}'"

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
            family, args = parse_name(run_name, run.get("threads"))
            y = value_of(run, counter)
            xi = find_x(args, x_arg)
            if xi is None or y is None or args[xi][1] <= 0 or y <= 0:
                skipped += 1
                continue
            x_names.add(args[xi][0])
            x = args[xi][1]
            others = tuple(a for i, a in enumerate(args) if i != xi)
            lines[(source, family, run.get("label", ""), others)].append((x, y))
    if not lines:
        sys.exit(f"plot.py: no run has a positive numeric {x_desc} and counter '{counter}'")
    if skipped:
        print(f"plot.py: skipped {skipped} runs without a positive {x_desc} or '{counter}'",
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
    # The argument's name (ArgNames({"n", ...})); families that name it
    # differently (n, n_kv) get both; plain Args have none.
    x_labels = sorted(x_names - {""}) + ([f"argument {opts.x}"] if "" in x_names else [])
    ax.set_xlabel(" / ".join(x_labels))
    unit = " (ns)" if counter in ("real_time", "cpu_time") else ""
    ax.set_ylabel(counter + unit)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(opts.output, dpi=120)
    print(f"plot.py: wrote {opts.output} ({counter}, {len(lines)} lines)")


if __name__ == "__main__":
    main()
