#!/usr/bin/env python3
"""The Pool over MPI: scaling from 1 to 2 serving ranks, and the cost of a task.

Runs bench_mpi alone (its MPI pool then runs serially: the baseline; and the local
Pool's cases), then under mpirun with 2 and 3 ranks (1 and 2 serving ranks), and
prints one table.

    python3 bench/mpi_scaling.py [--build-dir build] [--repetitions 3] [--scale 1]
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", default="build")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--scale", default="1")
    parser.add_argument("--mpirun", default="mpirun")
    args = parser.parse_args()
    exe = pathlib.Path(args.build_dir) / "bench" / "bench_mpi"
    if not exe.exists():
        sys.exit(f"{exe} not found: build the bench_mpi target first")
    flags = [f"--scale={args.scale}", f"--benchmark_repetitions={args.repetitions}",
             "--benchmark_format=json", "--benchmark_report_aggregates_only=true"]
    mpirun = [args.mpirun, "--allow-run-as-root", "--oversubscribe", "-n"]
    runs = {0: run([str(exe)] + flags)}
    for ranks in (2, 3):
        runs[ranks - 1] = run(mpirun + [str(ranks), str(exe)] + flags)

    def rate(serving, name):
        return runs[serving][name]["items_per_second"]

    print("The Pool over MPI (medians of %d repetitions)" % args.repetitions)
    print()
    print("%-44s %14s %14s %14s" % ("", "serial", "1 serving", "2 serving"))
    cube = [rate(s, "mpi_cpu_map") for s in (0, 1, 2)]
    print("%-44s %14s %14s %14s" % ("cube map, items/s", *("%.0f" % c for c in cube)))
    print("%-44s %14s %14s %14s" % ("speedup over serial", "1.00x", "%.2fx" % (cube[1] / cube[0]),
                                    "%.2fx" % (cube[2] / cube[0])))
    print("%-44s %14s %14s %14s" % ("scaling 1 -> 2 serving ranks", "", "", "%.2fx" % (cube[2] / cube[1])))
    local_cube = rate(0, "local_cpu_map")
    print("%-44s %14s %14s %14s" % ("local Pool, 2 workers: speedup over serial", "", "",
                                    "%.2fx" % (local_cube / cube[0])))
    print()
    print("%-44s %14s %14s" % ("per task", "MPI, 2 ranks", "local, 2 workers"))
    for name, label in (("apply_async_1e4", "apply_async x 10^4, then get each"),
                        ("apply", "apply, one round trip at a time")):
        mpi_us = 1e6 / rate(2, "mpi_" + name)
        local_us = 1e6 / rate(0, "local_" + name)
        print("%-44s %11.2f us %13.2f us" % (label, mpi_us, local_us))


if __name__ == "__main__":
    main()
