#!/usr/bin/env python3
"""The Pool over MPI: scaling from 1 to 2 serving ranks, against the local Pool in the
same run, the cost of a task, and call sequences.

Runs bench_mpi alone (its MPI pool then runs serially), then under mpirun with 2 and 3
ranks (1 and 2 serving ranks), and prints one table. Every run also times the serial
loop and the local Pool (2 workers), interleaved with the MPI pool's repetitions, so
each speedup is held against the local pool's measured in the same run: the machine
may be loaded by others, and only numbers taken together compare.

    python3 bench/mpi_scaling.py [--build-dir build] [--repetitions 5] [--scale 1]

Targets: with 2 serving ranks on as many cores, the MPI pool's speedup over the serial
loop within 5% of the local pool's; every call of the sequences (sequences.hpp)
within 10% of the best fixed chunksize for it.
"""
import argparse
import json
import pathlib
import subprocess
import sys


def run(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    medians = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") == "median":
            medians[b["run_name"].split("/")[0]] = b
    return medians


def verdict(value, least):
    return ("met" if value >= least else "MISSED") + f" >={least:.0%}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--scale", default="1")
    parser.add_argument("--mpirun", default="mpirun")
    args = parser.parse_args()
    exe = pathlib.Path(args.build_dir) / "bench" / "bench_mpi"
    if not exe.exists():
        sys.exit(f"{exe} not found: build the bench_mpi target first")
    flags = [f"--scale={args.scale}", f"--benchmark_repetitions={args.repetitions}",
             "--benchmark_enable_random_interleaving=true",
             "--benchmark_format=json", "--benchmark_report_aggregates_only=true"]
    mpirun = [args.mpirun, "--allow-run-as-root", "--oversubscribe", "-n"]
    runs = {0: run([str(exe)] + flags)}
    for ranks in (2, 3):
        runs[ranks - 1] = run(mpirun + [str(ranks), str(exe)] + flags)

    def rate(serving, name):
        return runs[serving][name]["items_per_second"]

    def counter(serving, name, key):
        return runs[serving][name][key]

    print("The Pool over MPI (medians of %d repetitions)" % args.repetitions)
    print()
    print("%-46s %14s %14s %14s" % ("cube map (seed 001), same run each column", "1 rank", "1 serving", "2 serving"))
    cube = [rate(s, "mpi_cpu_map") for s in (0, 1, 2)]
    serial = [rate(s, "serial_cpu_map") for s in (0, 1, 2)]
    local = [rate(s, "local_cpu_map") for s in (0, 1, 2)]
    print("%-46s %14s %14s %14s" % ("serial loop, items/s", *("%.0f" % c for c in serial)))
    print("%-46s %14s %14s %14s" % ("MPI pool, items/s", *("%.0f" % c for c in cube)))
    print("%-46s %14s %14s %14s" % ("MPI pool: speedup over the loop",
                                    *("%.2fx" % (c / s) for c, s in zip(cube, serial))))
    print("%-46s %14s %14s %14s" % ("local Pool, 2 workers: speedup over the loop",
                                    *("%.2fx" % (c / s) for c, s in zip(local, serial))))
    share = cube[2] / local[2]
    print("%-46s %14s %14s %14s" % ("2 serving ranks against the local Pool", "", "", "%.0f%%" % (100 * share)))
    print("%-46s %44s" % ("target", verdict(share, 0.95)))
    print()
    print("%-46s %14s %14s" % ("per task (same run, 2 serving ranks)", "MPI", "local Pool"))
    for name, label in (("apply_async_1e4", "apply_async x 10^4, then get each"),
                        ("apply", "apply, one round trip at a time")):
        mpi_us = 1e6 / rate(2, "mpi_" + name)
        local_us = 1e6 / rate(2, "local_" + name)
        print("%-46s %11.2f us %11.2f us" % (label, mpi_us, local_us))
    print()
    print("Call sequences over 2 serving ranks: each call against the best fixed chunksize for it")
    print("(bench/sequences.hpp; the tasks nap, 0 or 20 ms)")
    print()
    print("%-62s %12s %12s %8s  %s" % ("", "items/s", "limit", "share", "target"))
    rows = (
        ("40 x 20 ms right after quick calls: map, chunksize 1", "mpi_after_quick", "chunksize:1", "best"),
        ("  the same, automatic chunking", "mpi_after_quick", "auto", "best"),
        ("  the same, 40 apply_async then get each", "mpi_after_quick", "apply_async", "best"),
        ("10^6 quick right after a slow apply: map, automatic chunking", "mpi_after_slow", "auto", "best"),
        ("10^4 quick apply_async right after a slow apply (limit: after a quick one)", "mpi_after_slow",
         "apply_async", "apply_async_after_quick"),
        ("quick apply_async around a map of 40 x 20 ms, automatic chunking", "mpi_interleaved", "auto", "best"),
    )
    for label, name, key, limit in rows:
        value, best = counter(2, name, key), counter(2, name, limit)
        print("%-62s %12.4g %12.4g %7.0f%%  %s" % (label, value, best, 100 * value / best, verdict(value / best, 0.9)))


if __name__ == "__main__":
    main()
