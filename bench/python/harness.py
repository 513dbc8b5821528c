"""What the Python benchmark scripts share: a registry of workloads, timing that
matches Google Benchmark's (a warm-up, calls repeated until a repetition lasts
--min-time, the median of --reps repetitions), and a main() that prints the results as
JSON in the shape bench/compare.py reads from the C++ side:

    {"context": {...}, "results": {"<workload>": {"<metric>": value, ...}}}

Metrics use Google Benchmark's names: items_per_second, bytes_per_second,
real_time_s (seconds per call), or a workload's own counters.
"""
import argparse
import itertools
import json
import math
import os
import platform
import re
import statistics
import sys
import time

WORKLOADS = {}  # name -> function(ctx) returning {metric: value}


def workload(name, **params):
    """Registers fn(ctx, **params) as workload `name`. Each keyword gives a list of
    values; one workload is registered per combination, named by formatting `name`
    with it (e.g. workload("map_ints/{n}", n=[10**6, 10**7]))."""
    def register(fn):
        keys = list(params)
        for values in itertools.product(*(params[k] for k in keys)):
            bound = dict(zip(keys, values))
            WORKLOADS[name.format(**bound)] = (lambda ctx, b=bound: fn(ctx, **b))
        return fn
    return register


class CheckFailed(Exception):
    """A workload computed a wrong result: its timing means nothing."""


def check(ok, what):
    """Fails the workload unless ok."""
    if not ok:
        raise CheckFailed(what)


class Context:
    """How to measure: repetitions, the time one repetition should last, the size scale."""

    def __init__(self, reps, min_time, scale):
        self.reps = reps
        self.min_time = min_time
        self.scale = scale

    def scaled(self, n, minimum=1):
        """n times the size scale, and at least minimum."""
        return max(minimum, round(n * self.scale))

    def seconds(self, run, warmup=None):
        """Median seconds per call of run(), after one warm-up call (warmup() if
        given, else run()). A repetition repeats run() until it lasts min_time."""
        (warmup or run)()
        calls = 1
        samples = []
        while len(samples) < self.reps:
            start = time.perf_counter()
            for _ in range(calls):
                run()
            elapsed = time.perf_counter() - start
            if elapsed < self.min_time and not samples and calls == 1:
                # Too short to time alone: size the repetitions, as Google Benchmark does.
                calls = max(1, math.ceil(self.min_time / max(elapsed, 1e-9) * 1.2))
                continue
            samples.append(elapsed / calls)
        return statistics.median(samples)

    def rate(self, run, items, warmup=None):
        """Median items per second, where one call of run() handles `items` items."""
        return items / self.seconds(run, warmup)


def machine():
    return {
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main():
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="repetitions per workload (median taken)")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds one repetition lasts at least")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size by this (smoke tests)")
    parser.add_argument("--filter", default="", help="only workloads whose name matches this regex")
    parser.add_argument("--json", metavar="FILE", help="write the results there (default: stdout)")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args()
    selected = [n for n in WORKLOADS if re.search(args.filter, n)]
    if args.list:
        print("\n".join(selected))
        return 0
    ctx = Context(args.reps, args.min_time, args.scale)
    results, failed = {}, []
    for name in selected:
        start = time.perf_counter()
        try:
            results[name] = WORKLOADS[name](ctx)
        except CheckFailed as e:
            failed.append(name)
            print(f"{name}: check failed: {e}", file=sys.stderr)
            continue
        shown = ", ".join(f"{k}={v:.4g}" for k, v in results[name].items())
        print(f"{name}: {shown} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    text = json.dumps({"context": machine(), "results": results}, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 1 if failed else 0
