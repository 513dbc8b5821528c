#!/usr/bin/env python3
"""mproc against Python's multiprocessing and the machine's own limits, measured in
one run on one machine. Prints one table:

    workload | mproc | Python | mproc/Python | share of the limit | target

    python3 bench/compare.py            the full run (5 repetitions; about 6 minutes on 2 cores)
    python3 bench/compare.py --quick    3 shorter repetitions (about 3 minutes)
    python3 bench/compare.py --smoke    tiny sizes, to check that everything runs

It builds the bench programs with cmake (in --build-dir, default build-bench), runs
every bench/bench_*.cpp program (Google Benchmark, JSON, the median of randomly
interleaved repetitions) and every bench/python/bench_*.py script (the same
workloads under the same names, written with multiprocessing), and joins the two by
workload name. The raw numbers are kept in <build-dir>/bench-results.json
(bench-results-smoke.json for --smoke).

Adding a workload takes three things: a Google Benchmark function in a
bench/bench_*.cpp program, a Python function of the same name in a
bench/python/bench_*.py script, and one Row in ROWS below.
"""
import argparse
import dataclasses
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------- the table

@dataclasses.dataclass(frozen=True)
class Target:
    """A goal for one cell of a row: mproc's value, the mproc/Python ratio or the share
    of the limit, at least `least`."""
    cell: str
    least: float
    text: str = ""  # how to describe it, when the default words don't fit

    def describe(self):
        if self.text:
            return self.text
        if self.cell == "ratio":
            return f">={self.least:g}x Python"
        if self.cell == "share":
            return f">={self.least:.0%} of the limit"
        return f">={self.least:g}"

    def met(self, cells):
        value = getattr(cells, self.cell)
        return value is not None and value >= self.least


def faster_than_python(times):
    return Target("ratio", times)


def share_at_least(fraction):
    return Target("share", fraction)


def at_least(value):
    return Target("mproc", value)


def within_of_limit(factor):
    """At most `factor` times slower than the limit: a share of at least 1/factor."""
    return Target("share", 1 / factor, f"within {factor:g}x of the limit")


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table.

    value: "<workload>:<metric>", read from both sides' results (metric is
      items_per_second, bytes_per_second, real_time_s or a counter's name). A workload
      ending in * is a sweep: the best of the workloads that start with what precedes it.
    unit: how to print the value: a rate ("items/s", "B/s", ...), "s" or "x".
    limit: the mproc result the value is held against in "share of the limit".
    own_best: the limit is a result both sides have: each side's share of its own.
    label: a result shown beside the value, e.g. which chunksize was the best.
    python: whether Python has a twin of this workload.
    """
    title: str
    value: str
    unit: str
    limit: str = ""
    own_best: bool = False
    label: str = ""
    python: bool = True
    targets: tuple = ()


@dataclasses.dataclass(frozen=True)
class Section:
    title: str


PIPE_BANDWIDTH = "pipe_bandwidth/*:bytes_per_second"
# The latency floor: the best raw round trip of bench_limits.cpp, whatever carried it
# (pipes, socketpairs, eventfds or futexes in shared memory).
BEST_RAW_ROUND_TRIP = "raw_round_trip/*:items_per_second"
RAW_WAYS = (("pipe pair", "pipes"), ("socketpair, SOCK_STREAM", "stream_socket"),
            ("socketpair, SOCK_SEQPACKET", "seqpacket_socket"), ("eventfd + shared memory", "eventfd_shm"),
            ("futex in shared memory", "futex_shm"))
# As fast as Boost.Interprocess under robust mutexes, or faster.
AT_OR_BELOW_BOOST_ROBUST = Target("share", 1.0, "at or below Boost's robust-lock time")

BIG_ITEM_CALLS = (("map_cs1", "map chunksize 1"), ("map", "map"), ("imap", "imap"),
                  ("imap_unordered", "imap_unordered"), ("apply_async", "apply_async then get"))

ROWS = [
    Section("Pool, one worker per core on both sides"),
    Row("pool start and join", "pool_start_join:real_time_s", "s"),
    Row("map of 10^6 ints, default chunking", "map_ints/1000000:items_per_second", "items/s",
        targets=(faster_than_python(10),)),
    Row("map of 10^7 ints, default chunking", "map_ints/10000000:items_per_second", "items/s",
        targets=(faster_than_python(10),)),
    Row("apply_async x 10^4, then get each", "apply_async/10000:items_per_second", "tasks/s",
        targets=(faster_than_python(10),)),
    Row("apply, one round trip at a time (limit: the best raw round trip)", "apply_round_trip:items_per_second",
        "tasks/s", limit=BEST_RAW_ROUND_TRIP, targets=(share_at_least(0.9),)),
    Row("imap_unordered of 2x10^4, chunksize 1", "imap_unordered_cs1/20000:items_per_second", "items/s"),
    Row("starmap of 10^6 pairs", "starmap_pairs/1000000:items_per_second", "items/s"),
    # The payloads' limit is a raw pipe round trip of the same bytes, whose repetitions
    # interleave with theirs in the same program (bench_pool.cpp): pipe bandwidth measured
    # by another program at another moment moves with this shared machine's load.
    Row("1 MiB payload round trip (both ways; limit: raw pipes)", "payload_round_trip/1048576:bytes_per_second",
        "B/s", limit="raw_payload_round_trip/1048576:bytes_per_second",
        targets=(faster_than_python(3), share_at_least(0.6))),
    Row("64 MiB payload round trip (both ways; limit: raw pipes)", "payload_round_trip/67108864:bytes_per_second",
        "B/s", limit="raw_payload_round_trip/67108864:bytes_per_second",
        targets=(faster_than_python(3), share_at_least(0.6))),
    # Many large items through the calls that carry many (bench_pool.cpp big_items): each
    # row against a raw pipe round trip of the same 64 items, timed in the same program;
    # the rows after them hold mproc against its own apply of one such item at a time.
    *(Row(f"64 x 1 MiB {elem} vectors, {title}, {pool} pool (limit: raw pipes)",
          f"big_items/{call}/{elem}/{pool}:bytes_per_second", "B/s",
          limit="raw_big_items:bytes_per_second",
          targets=(faster_than_python(3), share_at_least(0.6)))
      for call, title in BIG_ITEM_CALLS for elem in ("char", "double") for pool in ("warm", "fresh")),
    *(Row(f"64 x 1 MiB {elem} vectors, {title}, {pool} pool (limit: apply one at a time)",
          f"big_items/{call}/{elem}/{pool}:bytes_per_second", "B/s",
          limit=f"big_items/apply/{elem}/{pool}:bytes_per_second", python=False, targets=(share_at_least(1.0),))
      for call, title in BIG_ITEM_CALLS for elem in ("char", "double") for pool in ("warm", "fresh")),
    *(Row(f"64 x 1 MiB {elem} vectors, apply one at a time, {pool} pool (limit: raw pipes)",
          f"big_items/apply/{elem}/{pool}:bytes_per_second", "B/s", limit="raw_big_items:bytes_per_second")
      for elem in ("char", "double") for pool in ("warm", "fresh")),
    Row("CPU-bound job: speedup over serial (limit: threads)", "cpu_job:pool_speedup", "x",
        limit="cpu_job:threads_speedup", targets=(at_least(1.9), share_at_least(0.95))),
    Section("Shared state and messages between 2 processes"),
    # The limits here are bare robust mutex increments and raw pipe round trips timed in
    # the same rounds (bench_shared.cpp, bench_channels.cpp): the limits' rows below come
    # from another program, run at another moment, under another load.
    Row("Value + get_lock() increments, 2 processes", "value_lock_increments:items_per_second", "increments/s",
        limit="value_lock_increments:raw_increments_per_second", targets=(faster_than_python(20),)),
    Row("Value::update increments, 2 processes", "value_update_increments:items_per_second", "increments/s",
        limit="value_update_increments:raw_increments_per_second", python=False),
    Row("Manager list appends, 2 processes", "manager_list_appends:items_per_second", "appends/s",
        targets=(faster_than_python(50),)),
    Row("Queue of ints, producer Process to consumer", "queue_ints:items_per_second", "messages/s",
        targets=(faster_than_python(10),)),
    Row("Pipe ping-pong, one round trip at a time (limit: the best raw round trip)", "pipe_ping_pong:items_per_second",
        "round trips/s", limit=BEST_RAW_ROUND_TRIP, targets=(faster_than_python(1), share_at_least(0.9))),
    Row("Pipe ping-pong (limit: raw pipes, same rounds)", "pipe_ping_pong:items_per_second", "round trips/s",
        limit="pipe_ping_pong:raw_round_trips_per_second", python=False),
    Section("Automatic chunking (limit: the best fixed chunksize of a sweep, same side)"),
    Row("10^6 tiny tasks (x*x), automatic chunking", "tiny_chunking:auto", "items/s",
        limit="tiny_chunking:best", own_best=True, targets=(share_at_least(0.9),)),
    Row("10^6 tiny tasks, best fixed chunksize", "tiny_chunking:best", "items/s",
        label="tiny_chunking:best_chunksize"),
    Row("300 uneven tasks (1-20 ms CPU), automatic chunking", "uneven_chunking:auto", "tasks/s",
        limit="uneven_chunking:best", own_best=True, targets=(share_at_least(0.9),)),
    Row("300 uneven tasks, best fixed chunksize", "uneven_chunking:best", "tasks/s",
        label="uneven_chunking:best_chunksize"),
    # bench/sequences.hpp: each call right after calls of another kind (what one call
    # measured must not carry into the next), against the best fixed chunksize for it in
    # the same rounds; the tasks sleep (0 or 20 ms). The MPI pool's twins are printed by
    # bench/mpi_scaling.py.
    Section("Call sequences (limit: the best fixed chunksize for the call, same rounds, same side)"),
    Row("40 x 20 ms right after quick calls: map, chunksize 1", "after_quick:chunksize:1", "tasks/s",
        limit="after_quick:best", own_best=True, targets=(share_at_least(0.9),)),
    Row("  the same, automatic chunking", "after_quick:auto", "tasks/s",
        limit="after_quick:best", own_best=True, targets=(share_at_least(0.9),)),
    Row("  the same, 40 apply_async then get each", "after_quick:apply_async", "tasks/s",
        limit="after_quick:best", own_best=True, targets=(share_at_least(0.9),)),
    Row("10^6 quick right after a slow apply: map, automatic chunking", "after_slow:auto", "items/s",
        limit="after_slow:best", own_best=True, targets=(share_at_least(0.9),)),
    Row("10^4 quick apply_async after a slow apply (limit: after a quick one)", "after_slow:apply_async", "tasks/s",
        limit="after_slow:apply_async_after_quick", own_best=True, targets=(share_at_least(0.9),)),
    Row("quick apply_async around a map of 40 x 20 ms, automatic chunking", "interleaved:auto", "tasks/s",
        limit="interleaved:best", own_best=True, targets=(share_at_least(0.9),)),
    # bench_boost.cpp: the same jobs done with Boost.Interprocess in a managed_shared_memory
    # segment, timed in the same iterations; its robust-mutex setup is the one that does not
    # hang when a process dies holding a lock (tests/test_boost_kill_safety.cpp).
    Section("Shared state against Boost.Interprocess (limit: Boost with robust mutexes, same rounds)"),
    *(Row(f"{title}, {n} process{'es' if n > 1 else ''}", f"{name}/{n}:items_per_second", unit,
          limit=f"{name}/{n}:boost_robust_per_second", python=False, targets=(AT_OR_BELOW_BOOST_ROBUST,))
      for title, name, unit in (("Value + get_lock() increments (Boost: int + mutex)", "boost_value_increments",
                                 "increments/s"),
                                ("SharedList<int>::append (Boost: vector push_back)", "boost_list_append", "appends/s"),
                                ("SharedDict<int, int>::set of new keys (Boost: map insert)", "boost_dict_insert",
                                 "inserts/s"),
                                ("SharedDict<int, int>::get (Boost: map find)", "boost_dict_lookup", "lookups/s"))
      for n in (1, 2)),
    Section("The machine's limits (C++, no mproc)"),
    Row("raw round trip, 2 processes, the best way", BEST_RAW_ROUND_TRIP, "round trips/s", python=False),
    *(Row(f"raw round trip: {title}", f"raw_round_trip/{name}:items_per_second", "round trips/s", python=False)
      for title, name in RAW_WAYS),
    Row("raw pipe bandwidth (best pipe size)", PIPE_BANDWIDTH, "B/s", python=False),
    Row("raw pipe round trip of 64 MiB (both ways, 1 MiB pipes)", "raw_payload_round_trip/67108864:bytes_per_second",
        "B/s", python=False),
    Row("memcpy bandwidth (64 MiB)", "memcpy_bandwidth:bytes_per_second", "B/s", python=False),
    Row("robust mutex lock+unlock, uncontended", "robust_mutex_uncontended:items_per_second", "locks/s",
        python=False),
    Row("robust mutex, 2 processes contending", "robust_mutex_contended:items_per_second", "locks/s",
        python=False),
]


# ------------------------------------------------------------------------ results

class Results:
    """One side's results: workload name -> {metric: value}."""

    def __init__(self, by_name):
        self.by_name = by_name

    def get(self, spec):
        """(value, label) for "<workload>:<metric>"; label names the winner of a sweep. A
        metric may hold a colon (a counter "chunksize:4"), a workload's name never does."""
        name, metric = spec.split(":", 1)
        if not name.endswith("*"):
            value = self.by_name.get(name, {}).get(metric)
            return value, ""
        prefix = name[:-1]
        found = [(m[metric], n[len(prefix):]) for n, m in self.by_name.items()
                 if n.startswith(prefix) and metric in m]
        if not found:
            return None, ""
        pick = min if metric == "real_time_s" else max
        return pick(found, key=lambda f: f[0])


TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
GB_FIELDS = {"name", "family_index", "per_family_instance_index", "run_name", "run_type", "repetitions",
             "repetition_index", "threads", "iterations", "real_time", "cpu_time", "time_unit",
             "aggregate_name", "aggregate_unit", "error_occurred", "error_message", "label"}


def read_google_benchmark(path):
    """Google Benchmark JSON -> {workload: {metric: value}}, medians when repeated."""
    data = json.loads(pathlib.Path(path).read_text())
    runs = data.get("benchmarks", [])
    have_medians = any(r.get("aggregate_name") == "median" for r in runs)
    out = {}
    for r in runs:
        if r.get("error_occurred"):
            continue
        if have_medians and r.get("aggregate_name") != "median":
            continue
        if not have_medians and r.get("run_type") != "iteration":
            continue
        parts = [p for p in r["run_name"].split("/")
                 if p not in ("real_time", "manual_time") and not re.fullmatch(r"(iterations|repeats|threads):\d+", p)]
        metrics = {"real_time_s": r["real_time"] * TIME_UNITS[r.get("time_unit", "ns")]}
        for key, value in r.items():
            if key not in GB_FIELDS and isinstance(value, (int, float)):
                metrics[key] = float(value)
        out["/".join(parts)] = metrics
    return out


# --------------------------------------------------------------------- formatting

def si(value, unit):
    """3 significant digits and a decimal prefix: "1.71 GB/s", "3.46 M items/s"."""
    space = "" if unit == "B/s" else " "
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{space}{unit}"
    return f"{value:.3g} {unit}"


def fmt(value, unit):
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.3g} us"
        if value < 1:
            return f"{value * 1e3:.3g} ms"
        return f"{value:.3g} s"
    return si(value, unit)


@dataclasses.dataclass
class Cells:
    mproc: float = None
    python: float = None
    ratio: float = None
    share: float = None


def evaluate(row, mproc, python):
    """The row's printed cells and its target verdicts."""
    c = Cells()
    c.mproc, mproc_label = mproc.get(row.value)
    py_label = ""
    if row.python:
        c.python, py_label = python.get(row.value)
    if row.label:
        name = row.label.rsplit(":", 1)[1].removeprefix("best_")
        mproc_label, py_label = (f"{name} {v:g}" if v is not None else "" for v, _ in
                                 (mproc.get(row.label), python.get(row.label)))
    if c.mproc is not None and c.python:
        # A speed ratio either way: for times, Python's time over mproc's.
        c.ratio = c.python / c.mproc if row.unit == "s" else c.mproc / c.python
    share_text = ""
    if row.limit:
        limit, _ = mproc.get(row.limit)
        if c.mproc is not None and limit:
            c.share = c.mproc / limit
            share_text = f"{c.share:.0%} of {fmt(limit, row.unit)}"
        if row.own_best and c.python is not None:
            py_limit, _ = python.get(row.limit)
            if py_limit:
                share_text = f"mproc {c.share:.0%}, Python {c.python / py_limit:.0%}" if c.share is not None else ""
    verdicts = [(target.describe(), target.met(c)) for target in row.targets]

    def with_label(text, label):
        return f"{text} [{label}]" if label else text
    cells = [row.title,
             with_label(fmt(c.mproc, row.unit), mproc_label),
             with_label(fmt(c.python, row.unit), py_label) if row.python else "",
             f"{c.ratio:.1f}x" if c.ratio is not None else ("-" if row.python else ""),
             share_text,
             "; ".join(f"{'met' if ok else 'MISSED'} {what}" for what, ok in verdicts)]
    return cells, verdicts


def render(rows, mproc, python):
    header = ["workload", "mproc", "Python", "mproc/Python", "share of the limit", "target"]
    lines, met, missed, absent = [], 0, 0, 0
    for row in rows:
        if isinstance(row, Section):
            lines.append([f"**{row.title}**", "", "", "", "", ""])
            continue
        cells, verdicts = evaluate(row, mproc, python)
        absent += (cells[1] == "-") + (row.python and cells[2] == "-")
        met += sum(ok for _, ok in verdicts)
        missed += sum(not ok for _, ok in verdicts)
        lines.append(cells)
    widths = [max(len(r[i]) for r in [header] + lines) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(cells) for cells in lines]
    out.append("")
    out.append(f"targets: {met} met, {missed} missed. mproc/Python is a speed ratio (> 1: mproc is faster); "
               "B/s is bytes per second (G = 10^9).")
    if absent:
        out.append(f"{absent} values missing (-): a workload failed, was filtered out or is not written yet.")
    return "\n".join(out), absent


# ------------------------------------------------------------------------ running

# Bench programs with a runner of their own, left out of this comparison.
OWN_RUNNERS = {"bench_mpi"}  # bench/mpi_scaling.py runs it under mpirun with 1 to 3 ranks


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, timeout, **kw):
    log("+ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=True, timeout=timeout, **kw)


def build(build_dir, programs):
    # Configured every time (quick when nothing changed): a build directory made before
    # a benchmark program was added would not know its target.
    configure = ["cmake", "-S", ROOT, "-B", build_dir]
    if not (build_dir / "CMakeCache.txt").exists():
        configure.append("-DCMAKE_BUILD_TYPE=RelWithDebInfo")
    run(configure, 600, stdout=sys.stderr)
    run(["cmake", "--build", build_dir, "-j", str(len(os.sched_getaffinity(0))), "--target", *programs], 1800,
        stdout=sys.stderr)


def run_cpp(build_dir, program, mode, tmp):
    out = pathlib.Path(tmp) / f"{program}.json"
    cmd = [build_dir / "bench" / program, f"--benchmark_out={out}", "--benchmark_out_format=json",
           f"--benchmark_repetitions={mode['reps']}", f"--benchmark_min_time={mode['min_time']}",
           "--benchmark_enable_random_interleaving=true", "--benchmark_report_aggregates_only=true"]
    if mode["scale"] != 1:
        cmd.append(f"--scale={mode['scale']}")
    if mode["filter"]:
        cmd.append(f"--benchmark_filter={mode['filter']}")
    run(cmd, 1800, stdout=sys.stderr)
    return read_google_benchmark(out)


def run_python(script, mode, tmp):
    out = pathlib.Path(tmp) / f"{script.stem}.py.json"
    cmd = [sys.executable, script, "--json", out, "--reps", str(mode["reps"]), "--min-time", str(mode["min_time"]),
           "--scale", str(mode["scale"]), "--filter", mode["filter"]]
    run(cmd, 1800, stdout=sys.stderr)
    return json.loads(out.read_text())["results"]


def machine_lines(load_before):
    cpu = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    cores = len(os.sched_getaffinity(0))
    return [f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
            f"machine: {cores} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}",
            f"load average (1, 5, 15 min): before {load_before}, after {load_average()}"]


def load_average():
    return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="3 repetitions of at least 0.2 s")
    speed.add_argument("--smoke", action="store_true", help="sizes / 1000, one repetition: only checks it runs")
    parser.add_argument("--build-dir", type=pathlib.Path, default=ROOT / "build-bench",
                        help="cmake build directory (default: build-bench in the repository)")
    parser.add_argument("--no-build", action="store_true", help="use the programs already built")
    parser.add_argument("--filter", default="", help="only workloads matching this regex (both sides)")
    args = parser.parse_args()
    mode = {"reps": 5, "min_time": 0.5, "scale": 1, "filter": args.filter}
    if args.quick:
        mode.update(reps=3, min_time=0.2)
    if args.smoke:
        mode.update(reps=1, min_time=0.01, scale=0.001)
    build_dir = args.build_dir if args.build_dir.is_absolute() else (pathlib.Path.cwd() / args.build_dir)

    programs = sorted(p.stem for p in (ROOT / "bench").glob("bench_*.cpp") if p.stem not in OWN_RUNNERS)
    scripts = sorted((ROOT / "bench" / "python").glob("bench_*.py"))
    if not args.no_build:
        build(build_dir, programs)

    load_before = load_average()
    started = time.monotonic()
    mproc_results, python_results = {}, {}
    with tempfile.TemporaryDirectory(prefix="mproc-bench-") as tmp:
        for program in programs:
            mproc_results.update(run_cpp(build_dir, program, mode, tmp))
        for script in scripts:
            python_results.update(run_python(script, mode, tmp))
    elapsed = time.monotonic() - started

    context = machine_lines(load_before)
    # A smoke run (ctest's) must not overwrite the numbers of a real run.
    results_file = build_dir / ("bench-results-smoke.json" if args.smoke else "bench-results.json")
    results_file.write_text(json.dumps(
        {"context": context, "mode": mode, "mproc": mproc_results, "python": python_results}, indent=1) + "\n")
    kind = "smoke run (sizes / 1000: the numbers mean nothing)" if args.smoke else (
        "quick run" if args.quick else "full run")
    print(f"mproc vs Python multiprocessing: {kind}, {mode['reps']} repetitions (medians), "
          f"{elapsed / 60:.1f} minutes")
    print("\n".join(context))
    print()
    table, absent = render(ROWS, Results(mproc_results), Results(python_results))
    print(table)
    # Missing numbers are a broken run (unless a filter left them out on purpose).
    return 1 if absent and not args.filter else 0


if __name__ == "__main__":
    sys.exit(main())
