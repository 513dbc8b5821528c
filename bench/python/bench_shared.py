#!/usr/bin/env python3
"""Python twins of bench/bench_shared.cpp: shared state updated from two processes,
written the way a Python user writes it (fork start method, Linux's default). Each
workload has the name of its C++ twin.

    python3 bench/python/bench_shared.py [--reps 5] [--filter REGEX] [--json FILE]

Sizes are smaller than the C++ side's, which would take minutes here: each process
does 10^5 Value increments (C++: 10^6) and 10^4 list appends (C++: 5x10^5). Every
call starts and joins two Processes on both sides; rates are compared.
"""
import os
import sys
from multiprocessing import Manager, Process, Value

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import check, main, workload  # noqa: E402


def run_in_two_processes(target, *args):
    """Runs target(*args) in two Processes at once and joins them; whether both exited with 0."""
    processes = [Process(target=target, args=args) for _ in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    return all(p.exitcode == 0 for p in processes)


def add(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


@workload("value_lock_increments")
def value_lock_increments(ctx):
    n = ctx.scaled(100_000)
    v = Value("i", 0)
    ok = [True]

    def run():
        v.value = 0
        ok[0] = ok[0] and run_in_two_processes(add, v, n) and v.value == 2 * n
    rate = ctx.rate(run, 2 * n)
    check(ok[0], "both processes counted every increment")
    return {"items_per_second": rate}


def append_range(shared_list, n):
    for i in range(n):
        shared_list.append(i)


@workload("manager_list_appends")
def manager_list_appends(ctx):
    n = ctx.scaled(10_000)
    ok = [True]
    last = [None]
    with Manager() as mgr:
        def run():
            last[0] = mgr.list()
            ok[0] = ok[0] and run_in_two_processes(append_range, last[0], n)
        rate = ctx.rate(run, 2 * n)
        # Checked outside the timing, as the C++ twin does, and in one call: iterating a
        # list proxy costs a round trip to the manager per item.
        items = last[0][:]
    check(ok[0] and sorted(items) == sorted(list(range(n)) * 2), "the list holds both processes' appends")
    return {"items_per_second": rate}


if __name__ == "__main__":
    sys.exit(main())
