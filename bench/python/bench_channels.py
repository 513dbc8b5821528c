#!/usr/bin/env python3
"""Python twins of bench/bench_channels.cpp: a Queue from a producer Process to the
consumer and a Pipe ping-pong, written the way a Python user writes them (fork start
method, Linux's default). Each workload has the name of its C++ twin.

    python3 bench/python/bench_channels.py [--reps 5] [--filter REGEX] [--json FILE]

The Queue carries 10^5 ints per call (C++: 10^6, which would take long here); the
producer's start is timed on both sides, and rates are compared.
"""
import os
import sys
from multiprocessing import Pipe, Process, Queue

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import check, main, workload  # noqa: E402


def produce(q, n):
    for i in range(n):
        q.put(i)
    q.put(None)


@workload("queue_ints")
def queue_ints(ctx):
    n = ctx.scaled(100_000)
    q = Queue()
    ok = [True]

    def run():
        producer = Process(target=produce, args=(q, n))
        producer.start()
        expected = 0
        while (x := q.get()) is not None:
            ok[0] = ok[0] and x == expected  # one producer: its order is kept
            expected += 1
        producer.join()
        ok[0] = ok[0] and expected == n and producer.exitcode == 0
    rate = ctx.rate(run, n)
    check(ok[0], "every item arrived once, in order")
    return {"items_per_second": rate}


def echo(conn):
    while (x := conn.recv()) != -1:
        conn.send(x)


@workload("pipe_ping_pong")
def pipe_ping_pong(ctx):
    here, there = Pipe()
    child = Process(target=echo, args=(there,))
    child.start()
    there.close()
    ok = [True]
    i = [0]

    def run():
        here.send(i[0])
        ok[0] = ok[0] and here.recv() == i[0]
        i[0] = (i[0] + 1) % 1000
    rate = ctx.rate(run, 1)
    here.send(-1)
    child.join()
    check(ok[0] and child.exitcode == 0, "every message came back")
    return {"items_per_second": rate}


if __name__ == "__main__":
    sys.exit(main())
