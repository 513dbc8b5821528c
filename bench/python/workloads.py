"""The functions the Python benchmarks run in pool workers: twins of
bench/workloads.hpp (change one, change its twin)."""
import array
import math
import time

PRIME = 1_000_000_007


def square(x):
    """The tiny task."""
    return x * x


def multiply(a, b):
    """starmap's task."""
    return a * b


def echo(payload):
    """The payload round trip: the bytes go to a worker and come back."""
    return payload


def payload_doubles(size):
    """size bytes of doubles, double i being i * 0.5 (the C++ side's pattern), as an
    array('d'): what a Python user sends for a std::vector<double>."""
    return array.array("d", (i * 0.5 for i in range(size // 8)))


def cube(n):
    """Seed 001's CPU-bound task: the sum of i^3 for i < n, modulo a prime."""
    total = 0
    for i in range(n):
        total = (total + i * i % PRIME * i) % PRIME
    return total


def nap(ms):
    """The sequences' task: sleeps ms milliseconds (0: returns at once) and returns ms."""
    if ms > 0:
        time.sleep(ms / 1000)
    return ms


def burn_cpu(ns):
    """Keeps this thread busy for ns nanoseconds of CPU time (not wall time)."""
    end = time.thread_time_ns() + ns
    while time.thread_time_ns() < end:
        pass


def uneven_task_ns(i, n):
    """How long uneven task i of n runs: 1 to 20 ms, the last 5% the full 20 ms."""
    if i >= n - n // 20:
        return 20_000_000
    u = math.fmod(i * 0.6180339887498949, 1.0)
    return int((1.0 + 19.0 * u * u * u * u) * 1e6)


def uneven_task(i, n):
    """Uneven task i of n: burns its CPU time and returns i."""
    burn_cpu(uneven_task_ns(i, n))
    return i


def payload_bytes(size):
    """size bytes, byte i being i * 131 % 251 (the C++ side's pattern, period 251)."""
    period = bytes(i * 131 % 251 for i in range(251))
    return (period * (size // 251 + 1))[:size]
