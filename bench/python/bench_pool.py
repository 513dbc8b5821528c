#!/usr/bin/env python3
"""Python twins of bench/bench_pool.cpp: the same workloads, sizes and functions,
written with multiprocessing.Pool the way a Python user writes them (fork start
method, Linux's default). Each workload has the name of its C++ twin.

    python3 bench/python/bench_pool.py [--reps 5] [--filter REGEX] [--json FILE]

One size differs from the C++ side, because the per-item work would make a run take
many minutes in Python: cpu_job maps cube over range(5000) instead of range(26000)
(both are about one second serially). The speedups are what is compared there.
"""
import functools
import os
import statistics
import sys
import time
from multiprocessing import Pool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads as w  # noqa: E402  (the functions the workers run)
from harness import check, main, workload  # noqa: E402

# One worker per core this process may use, as mproc::cpu_count() (Pool() alone
# would take os.cpu_count(), which ignores the affinity mask).
WORKERS = len(os.sched_getaffinity(0))

TINY_CHUNKSIZES = [64, 256, 1024, 4096, 16384, 65536, 262144, 524288]
UNEVEN_CHUNKSIZES = [1, 2, 4, 8, 16, 32]


@workload("pool_start_join")
def pool_start_join(ctx):
    def run():
        p = Pool(WORKERS)
        p.close()
        p.join()
    return {"real_time_s": ctx.seconds(run)}


@workload("map_ints/{n}", n=[1_000_000, 10_000_000])
def map_ints(ctx, n):
    xs = list(range(ctx.scaled(n)))
    out = []
    with Pool(WORKERS) as p:
        def run():
            out[:] = p.map(w.square, xs)
        rate = ctx.rate(run, len(xs))
    check(out == [x * x for x in xs], "map returned every square in order")
    return {"items_per_second": rate}


@workload("apply_async/{n}", n=[10_000])
def apply_async(ctx, n):
    n = ctx.scaled(n)
    total = [0]
    with Pool(WORKERS) as p:
        p.apply(w.square, (1,))

        def run():
            results = [p.apply_async(w.square, (i,)) for i in range(n)]
            total[0] = sum(r.get() for r in results)
        rate = ctx.rate(run, n)
    check(total[0] == sum(i * i for i in range(n)), "every apply_async result arrived")
    return {"items_per_second": rate}


@workload("apply_round_trip")
def apply_round_trip(ctx):
    ok = [True]
    with Pool(WORKERS) as p:
        p.apply(w.square, (1,))

        def run():
            ok[0] = ok[0] and p.apply(w.square, (7,)) == 49
        rate = ctx.rate(run, 1)
    check(ok[0], "apply returned the square")
    return {"items_per_second": rate}


@workload("imap_unordered_cs1/{n}", n=[20_000])
def imap_unordered_cs1(ctx, n):
    xs = list(range(ctx.scaled(n)))
    total = [0]
    with Pool(WORKERS) as p:
        p.apply(w.square, (1,))

        def run():
            total[0] = sum(p.imap_unordered(w.square, xs, chunksize=1))
        rate = ctx.rate(run, len(xs))
    check(total[0] == sum(x * x for x in xs), "imap_unordered returned every square")
    return {"items_per_second": rate}


@workload("starmap_pairs/{n}", n=[1_000_000])
def starmap_pairs(ctx, n):
    pairs = [(i, i % 1000) for i in range(ctx.scaled(n))]
    out = []
    with Pool(WORKERS) as p:
        def run():
            out[:] = p.starmap(w.multiply, pairs)
        rate = ctx.rate(run, len(pairs))
    check(out == [a * b for a, b in pairs], "starmap returned every product in order")
    return {"items_per_second": rate}


@workload("payload_round_trip/{size}", size=[1 << 20, 64 << 20])
def payload_round_trip(ctx, size):
    payload = w.payload_bytes(ctx.scaled(size))
    back = [b""]
    with Pool(WORKERS) as p:
        def run():
            back[0] = p.apply(w.echo, (payload,))
        rate = ctx.rate(run, 2 * len(payload))
    check(back[0] == payload, "the payload came back intact")
    return {"bytes_per_second": rate}


BIG_ITEM_COUNT = 64
BIG_ITEM_BYTES = 1 << 20


def big_items_round(p, items, call):
    if call == "map_cs1":
        return p.map(w.echo, items, chunksize=1)
    if call == "map":
        return p.map(w.echo, items)
    if call == "imap":
        return list(p.imap(w.echo, items, chunksize=1))
    if call == "imap_unordered":
        return sorted(p.imap_unordered(w.echo, items, chunksize=1), key=lambda x: x[0])
    if call == "apply":
        return [p.apply(w.echo, (x,)) for x in items]
    pending = [p.apply_async(w.echo, (x,)) for x in items]
    return [r.get() for r in pending]


@workload("big_items/{call}/{elem}/{pool}", call=["map_cs1", "map", "imap", "imap_unordered", "apply_async", "apply"],
          elem=["char", "double"], pool=["warm", "fresh"])
def big_items(ctx, call, elem, pool):
    """64 items of 1 MiB through one call (bench_pool.cpp's big_items): bytes for
    std::vector<char>, array('d') for std::vector<double>; the pool made before the
    timing (warm) or inside it (fresh). Both ways count."""
    size = ctx.scaled(BIG_ITEM_BYTES, 64)
    items = []
    for i in range(ctx.scaled(BIG_ITEM_COUNT, 2)):
        item = w.payload_bytes(size) if elem == "char" else w.payload_doubles(size)
        item = bytes([i]) + item[1:] if elem == "char" else type(item)("d", [float(i)]) + item[1:]
        items.append(item)
    out = [None]
    if pool == "fresh":
        def run():
            with Pool(WORKERS) as p:
                out[0] = big_items_round(p, items, call)
        rate = ctx.rate(run, 2 * len(items) * size)
    else:
        with Pool(WORKERS) as p:
            def run():
                out[0] = big_items_round(p, items, call)
            rate = ctx.rate(run, 2 * len(items) * size)
    check(out[0] == items, "every item came back intact")
    return {"bytes_per_second": rate}


@workload("cpu_job")
def cpu_job(ctx):
    """Seed 001's job: cube over range(N) in a loop, then with a Pool started and
    joined inside the timing; the two alternate in every repetition."""
    xs = list(range(ctx.scaled(5000)))

    def serial():
        return [w.cube(x) for x in xs]

    def pooled():
        with Pool(WORKERS) as p:
            return p.map(w.cube, xs)

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    w.cube(1000)  # warm-up
    serial_s, pool_s, speedups = [], [], []
    for _ in range(ctx.reps):
        s, expected = timed(serial)
        t, out = timed(pooled)
        check(out == expected, "the pool computed the same cubes")
        serial_s.append(s)
        pool_s.append(t)
        speedups.append(s / t)
    return {"serial_s": statistics.median(serial_s), "pool_s": statistics.median(pool_s),
            "pool_speedup": statistics.median(speedups)}


def timed_rounds(ctx, variants):
    """Variants of one workload timed in rounds, as bench/rounds.hpp: each round runs
    every variant once (its `before` untimed first), the order rotating, ctx.reps
    rounds. variants: (counter name, items, timed call returning whether its results
    were right, before or None). Returns each counter's median rate."""
    rates = [[] for _ in variants]
    for r in range(ctx.reps):
        for k in range(len(variants)):
            v = (k + r) % len(variants)
            name, items, timed, before = variants[v]
            if before:
                before()
            start = time.perf_counter()
            ok = timed()
            rates[v].append(items / (time.perf_counter() - start))
            check(ok, "every variant returned the right results")
    return {v[0]: statistics.median(r) for v, r in zip(variants, rates)}


def chunksize_name(chunksize):
    return "auto" if chunksize is None else f"chunksize:{chunksize}"


def map_variants(p, fn, xs, expected, sweep, before=None):
    """p.map(fn, xs) with the default chunksize ("auto") and each of the sweep."""
    return [(chunksize_name(cs), len(xs), lambda cs=cs: p.map(fn, xs, cs) == expected, before)
            for cs in [None] + sweep]


def with_best(counters, sweep):
    """Adds "best" and "best_chunksize": the best of the sweep's "chunksize:N"."""
    best = max(sweep, key=lambda cs: counters[chunksize_name(cs)])
    counters.update(best=counters[chunksize_name(best)], best_chunksize=best)
    return counters


def chunking_rounds(ctx, p, fn, xs, expected, sweep):
    """The default chunksize against fixed ones, as in bench_pool.cpp."""
    return with_best(timed_rounds(ctx, map_variants(p, fn, xs, expected, sweep)), sweep)


@workload("tiny_chunking")
def tiny_chunking(ctx):
    xs = list(range(ctx.scaled(1_000_000)))
    with Pool(WORKERS) as p:
        squares = p.map(w.square, xs)  # warm-up
        check(squares == [x * x for x in xs], "map returned every square in order")
        return chunking_rounds(ctx, p, w.square, xs, squares, TINY_CHUNKSIZES)


@workload("uneven_chunking")
def uneven_chunking(ctx):
    n = ctx.scaled(300)
    task = functools.partial(w.uneven_task, n=n)
    with Pool(WORKERS) as p:
        p.map(task, range(4))  # warm-up (short: a round takes seconds)
        return chunking_rounds(ctx, p, task, range(n), list(range(n)), UNEVEN_CHUNKSIZES)


# Call sequences (bench/sequences.hpp): each call right after others of a different
# kind, against the best fixed chunksize for it in the same rounds; the tasks nap.
SLOW_MS = 20
SLOW_TASKS = 40
QUICK_TASKS = 1_000_000
QUICK_CALLS = 10_000
INTERLEAVED_QUICK_TASKS = 100
SLOW_CHUNKSIZES = [1, 2, 4, 10, 20]
QUICK_CHUNKSIZES = [4096, 16384, 65536, 262144, 500000]


def quick_calls(p):
    return lambda: [p.apply(w.nap, (0,)) for _ in range(100)]


def nap_once(p, ms):
    return lambda: p.apply(w.nap, (ms,))


def apply_async_each(p, n, ms):
    results = [p.apply_async(w.nap, (ms,)) for _ in range(n)]
    return all([r.get() == ms for r in results])


@workload("after_quick")
def after_quick(ctx):
    n = ctx.scaled(SLOW_TASKS)
    xs, expected = [SLOW_MS] * n, [SLOW_MS] * n
    with Pool(WORKERS) as p:
        p.apply(w.nap, (0,))  # warm-up
        variants = map_variants(p, w.nap, xs, expected, SLOW_CHUNKSIZES, quick_calls(p))
        variants.append(("apply_async", n, lambda: apply_async_each(p, n, SLOW_MS), quick_calls(p)))
        return with_best(timed_rounds(ctx, variants), SLOW_CHUNKSIZES)


@workload("after_slow")
def after_slow(ctx):
    n, m = ctx.scaled(QUICK_TASKS), ctx.scaled(QUICK_CALLS)
    xs, expected = [0] * n, [0] * n
    with Pool(WORKERS) as p:
        p.apply(w.nap, (0,))  # warm-up
        variants = map_variants(p, w.nap, xs, expected, QUICK_CHUNKSIZES, nap_once(p, SLOW_MS))
        variants.append(("apply_async", m, lambda: apply_async_each(p, m, 0), nap_once(p, SLOW_MS)))
        variants.append(("apply_async_after_quick", m, lambda: apply_async_each(p, m, 0), nap_once(p, 0)))
        for v in variants:  # a fresh pool's first calls would weigh on whichever comes first
            v[2]()
        return with_best(timed_rounds(ctx, variants), QUICK_CHUNKSIZES)


@workload("interleaved")
def interleaved(ctx):
    n, m = ctx.scaled(SLOW_TASKS), ctx.scaled(INTERLEAVED_QUICK_TASKS)
    xs, expected = [SLOW_MS] * n, [SLOW_MS] * n
    with Pool(WORKERS) as p:
        p.apply(w.nap, (0,))  # warm-up

        def calls(cs):
            quick = [p.apply_async(w.nap, (0,)) for _ in range(m)]
            slow = p.map_async(w.nap, xs, cs)
            quick += [p.apply_async(w.nap, (0,)) for _ in range(m)]
            return slow.get() == expected and all([r.get() == 0 for r in quick])
        variants = [(chunksize_name(cs), n + 2 * m, lambda cs=cs: calls(cs), None) for cs in [None] + SLOW_CHUNKSIZES]
        return with_best(timed_rounds(ctx, variants), SLOW_CHUNKSIZES)


if __name__ == "__main__":
    sys.exit(main())
