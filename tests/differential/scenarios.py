"""The Python twin of tests/differential/scenarios.cpp.

Each scenario does, with Python's multiprocessing (fork start method), what the C++
program does with mproc, and prints one line per observable event in the same
format; tests/differential/compare.py runs both and compares the lines. Usage:
python3 scenarios.py <scenario>.

Where Python is not deterministic on its own (a Queue's feeder thread, the order in
which a Pool's results arrive), the scenario makes it so, and says how in a comment.
"""

import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time

ctx = mp.get_context("fork")

# How long a scenario waits for something that must happen; reached only when it
# does not, and then the outputs differ.
HANG = 20


def out(*words):
    print(*words, flush=True)


def square(x):
    return x * x


def add(a, b):
    return a * 1000 + b


def fails_at_3_and_9(x):
    if x in (3, 9):
        raise ValueError(f"item {x}")
    return x * x


def fails_at_2_and_5(x):
    if x in (2, 5):
        raise ValueError(f"item {x}")
    return x * x


# ---------------------------------------------------------------- Pool ordering

def pool_map():
    with ctx.Pool(2) as p:
        out("map", *p.map(square, range(20)))
        for cs in (1, 3, 7, 50):
            out("map chunksize", cs, *p.map(square, range(20), cs))
        out("map empty", len(p.map(square, [])))


def pool_imap():
    with ctx.Pool(2) as p:
        for cs in (1, 4):
            for i, r in enumerate(p.imap(square, range(15), cs)):
                out("imap chunksize", cs, "item", i, r)
            out("imap chunksize", cs, "end")


def pool_imap_unordered():
    with ctx.Pool(2) as p:
        for cs in (1, 5):
            got = list(p.imap_unordered(square, range(30), cs))
            out("imap_unordered chunksize", cs, "count", len(got))
            out("imap_unordered chunksize", cs, "set", *sorted(got))


def pool_starmap():
    with ctx.Pool(2) as p:
        pairs = [(i, 10 * i) for i in range(12)]
        out("starmap", *p.starmap(add, pairs))
        out("starmap chunksize 5", *p.starmap(add, pairs, 5))


# ---------------------------------------------------------------- errors in imap and map

def next_outcomes(it, n):
    """The first n outcomes of an imap, then whether it ends."""
    for i in range(n):
        try:
            out("item", i, "value", next(it))
        except StopIteration:
            out("item", i, "end too early")
            return
        except ValueError as e:
            out("item", i, "error", e)
    try:
        next(it)
        out("more items than inputs")
    except StopIteration:
        out("end")


def pool_imap_error():
    with ctx.Pool(2) as p:
        next_outcomes(p.imap(fails_at_3_and_9, range(12)), 12)
        # imap_unordered: the failures among the values, in any order.
        values, errors = [], []
        it = p.imap_unordered(fails_at_3_and_9, range(12))
        while True:
            try:
                values.append(next(it))
            except StopIteration:
                break
            except ValueError as e:
                errors.append(str(e))
        out("imap_unordered values", *sorted(values))
        out("imap_unordered errors", *sorted(errors))


def earlier_fails_first(x):
    """Items 3 and 9 fail, 9 a second later than 3."""
    if x == 9:
        time.sleep(1)  # Python's map raises the first failure to arrive: 3's
    if x in (3, 9):
        raise ValueError(f"item {x}")
    return x * x


def later_fails_first(x):
    """Items 3 and 9 fail, 3 a second later than 9."""
    if x == 3:
        time.sleep(1)  # as above: 9's failure arrives first
    if x in (3, 9):
        raise ValueError(f"item {x}")
    return x * x


def pool_map_error():
    for label, f in (("the earlier item fails first", earlier_fails_first),
                     ("the later item fails first", later_fails_first)):
        with ctx.Pool(2) as p:
            try:
                p.map(f, range(12), 1)
                out("map,", label + ": no exception")
            except ValueError as e:
                out("map,", label + ": raised", e)
            # The pool goes on.
            out("map after the failure", *p.map(f, [100, 101, 102]))


finished = None  # a Value made before the pool, so that its workers inherit it


def waits_for_the_others(x):
    """Item 0 waits until the 9 items after it have finished."""
    if x == 0:
        deadline = time.monotonic() + HANG
        while finished.value < 9 and time.monotonic() < deadline:
            time.sleep(0.005)
        return finished.value
    with finished.get_lock():
        finished.value += 1
    return -1


def pool_free_worker():
    # With chunksize 1, an item waits in the pool's queue until a worker is free to
    # take it: a worker busy with a long item holds nothing else, so the other worker
    # runs everything after it.
    global finished
    finished = ctx.Value("i", 0)
    with ctx.Pool(2) as p:
        got = p.map(waits_for_the_others, range(10), 1)
        out("item 0 saw the other items finish:", got[0] == 9, "finished", finished.value)


# ---------------------------------------------------------------- apply_async callbacks

def pool_apply_callbacks():
    # One worker: results arrive in submission order, so the callbacks' order is
    # deterministic on both sides.
    events = []
    lock = threading.Lock()

    def record(*words):
        with lock:
            events.append(" ".join(str(w) for w in words))

    with ctx.Pool(1) as p:
        results = [p.apply_async(fails_at_2_and_5, (i,),
                                 callback=lambda v: record("callback", v),
                                 error_callback=lambda e: record("error_callback", e))
                   for i in range(8)]
        for i, r in enumerate(results):
            try:
                out("get", i, "value", r.get(HANG))
            except ValueError as e:
                out("get", i, "error", e)
            out("successful", i, r.successful())
        for e in events:
            out(e)
        # The callback has run when get() returns. (One function throughout, as an
        # mproc Pool is bound to one.)
        seen = []
        r = p.apply_async(fails_at_2_and_5, (7,), callback=lambda v: seen.append(v))
        out("get", r.get(HANG), "callback already ran", seen == [49])
        seen_error = []
        r = p.apply_async(fails_at_2_and_5, (5,), error_callback=lambda e: seen_error.append(str(e)))
        try:
            r.get(HANG)
        except ValueError as e:
            out("get raised", e, "error_callback already ran", seen_error == ["item 5"])
        # map_async: one callback with the whole list; one error_callback with the
        # first failure (one worker: the first to arrive is the first in input order).
        done = []
        p.map_async(fails_at_2_and_5, [0, 1, 3, 4], callback=lambda v: done.append(v)).wait(HANG)
        out("map_async callback", *done[0])
        failed = []
        p.map_async(fails_at_2_and_5, range(8), error_callback=lambda e: failed.append(str(e))).wait(HANG)
        out("map_async error_callback", *failed)


# ---------------------------------------------------------------- Queue

def produce(q, p, n):
    for i in range(n):
        q.put((p, i))


def queue_fifo():
    q = ctx.Queue()
    n = 300
    procs = [ctx.Process(target=produce, args=(q, p, n)) for p in range(3)]
    for pr in procs:
        pr.start()
    got = {0: [], 1: [], 2: []}
    for _ in range(3 * n):
        p, i = q.get(timeout=HANG)
        got[p].append(i)
    for pr in procs:
        pr.join()
        out("producer exitcode", pr.exitcode)
    for p in range(3):
        out("producer", p, "items", len(got[p]), "in order", got[p] == list(range(n)))
    out("qsize", q.qsize())


def either(f, name, done, empty_or_full):
    """Prints what f did: done, or empty_or_full if it raised queue.Empty or queue.Full."""
    try:
        f()
        out(name + ":", done)
    except (queue.Empty, queue.Full):
        out(name + ":", empty_or_full)


def queue_empty_full():
    q = ctx.Queue(3)
    out("empty", q.empty(), "qsize", q.qsize(), "full", q.full())
    either(q.get_nowait, "get_nowait", "an item", "Empty")
    either(lambda: q.get(timeout=0.05), "get(timeout)", "an item", "Empty")
    for i in range(3):
        q.put_nowait(i)
        out("put_nowait", i, "qsize", q.qsize())
    out("full", q.full())
    either(lambda: q.put_nowait(3), "put_nowait 3", "put", "Full")
    either(lambda: q.put(3, timeout=0.05), "put(3, timeout)", "put", "Full")
    out("qsize", q.qsize())
    # Python's put returns before its feeder thread has written the item to the pipe,
    # so a get_nowait right after a put may raise Empty with items queued (Python's
    # documentation says so); mproc has no feeder thread. The twin takes the first
    # item with a blocking get, which gives the item the C++ get_nowait gets.
    out("get_nowait", q.get(timeout=HANG), "qsize", q.qsize())
    q.put_nowait(3)
    out("put_nowait 3 after a get, qsize", q.qsize())
    for _ in range(3):
        out("get(timeout)", q.get(timeout=HANG))
    either(q.get_nowait, "get_nowait", "an item", "Empty")
    out("empty", q.empty(), "qsize", q.qsize(), "full", q.full())


# ---------------------------------------------------------------- Event

def event_waiter(e, results):
    results.put(e.wait(HANG))


def event():
    e = ctx.Event()
    out("is_set", e.is_set())
    out("wait(0.05)", e.wait(0.05))
    results = ctx.Queue()
    child = ctx.Process(target=event_waiter, args=(e, results))
    child.start()
    e.set()
    out("child's wait returned", results.get(timeout=HANG))
    child.join()
    out("is_set", e.is_set())
    out("wait() returned", e.wait())
    out("wait(0.05)", e.wait(0.05))
    e.set()
    out("set twice, is_set", e.is_set())
    e.clear()
    out("cleared, is_set", e.is_set())
    out("wait(0.05)", e.wait(0.05))


# ---------------------------------------------------------------- Condition

def cond_waiter(cond, arrived, woke, i):
    with cond:
        arrived.value += 1
        cond.wait()
    woke.put(i)


def wait_until_arrived(cond, arrived, n):
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        with cond:
            if arrived.value == n:
                return True
        time.sleep(0.005)
    return False


def cond_wait_for(cond, level, arrived, results):
    with cond:
        arrived.value += 1
        ok = cond.wait_for(lambda: level.value >= 3, timeout=HANG)
        results.put((ok, level.value))


def condition():
    cond = ctx.Condition()
    arrived = ctx.Value("i", 0, lock=False)  # guarded by cond's lock
    woke = ctx.Queue()
    kids = [ctx.Process(target=cond_waiter, args=(cond, arrived, woke, i)) for i in range(3)]
    for k in kids:
        k.start()
    out("all three waiting", wait_until_arrived(cond, arrived, 3))
    with cond:
        cond.notify()
    woke.get(timeout=HANG)
    out("notify() woke one")
    try:
        woke.get(timeout=0.3)
        out("notify() woke a second one")
    except queue.Empty:
        out("and no other")
    with cond:
        cond.notify(2)
    woke.get(timeout=HANG)
    woke.get(timeout=HANG)
    out("notify(2) woke two")
    for k in kids:
        k.join()
    out("waiters' exitcodes", *[k.exitcode for k in kids])

    level = ctx.Value("i", 0, lock=False)
    arrived.value = 0
    results = ctx.Queue()
    child = ctx.Process(target=cond_wait_for, args=(cond, level, arrived, results))
    child.start()
    out("wait_for waiting", wait_until_arrived(cond, arrived, 1))
    for k in (1, 2, 3):
        with cond:
            level.value = k
            cond.notify_all()
    ok, at = results.get(timeout=HANG)
    out("wait_for returned", ok, "at level", at)
    child.join()
    with cond:
        out("wait_for(false predicate, 0.05)", cond.wait_for(lambda: False, timeout=0.05))
        out("wait(0.05)", cond.wait(0.05))
        out("wait_for(true predicate, 0.05)", cond.wait_for(lambda: True, timeout=0.05))


# ---------------------------------------------------------------- Barrier

def barrier_party(b, results):
    results.put(b.wait(HANG))


def barrier_aborted_party(b, results):
    try:
        b.wait(HANG)
        results.put("passed")
    except threading.BrokenBarrierError:
        results.put("BrokenBarrierError")


def wait_for_waiting(b, n):
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        if b.n_waiting == n:
            return True
        time.sleep(0.005)
    return False


def barrier():
    b = ctx.Barrier(3)
    out("parties", b.parties, "n_waiting", b.n_waiting, "broken", b.broken)
    results = ctx.Queue()
    kids = [ctx.Process(target=barrier_party, args=(b, results)) for _ in range(2)]
    for k in kids:
        k.start()
    out("two waiting", wait_for_waiting(b, 2))
    mine = b.wait(HANG)
    theirs = sorted(results.get(timeout=HANG) for _ in range(2))
    out("the last to arrive got index", mine)
    out("the others got", *theirs)
    out("indices are a permutation of 0..2", sorted(theirs + [mine]) == [0, 1, 2])
    for k in kids:
        k.join()
    out("n_waiting after", b.n_waiting, "broken", b.broken)

    b2 = ctx.Barrier(2)
    child = ctx.Process(target=barrier_aborted_party, args=(b2, results))
    child.start()
    out("one waiting", wait_for_waiting(b2, 1))
    b2.abort()
    out("the waiting party got", results.get(timeout=HANG))
    child.join()
    out("broken after abort", b2.broken)
    try:
        b2.wait(HANG)
        out("wait on a broken barrier passed")
    except threading.BrokenBarrierError:
        out("wait on a broken barrier: BrokenBarrierError")
    b2.reset()
    out("broken after reset", b2.broken)

    b3 = ctx.Barrier(2)
    try:
        b3.wait(0.05)
        out("wait(0.05) alone passed")
    except threading.BrokenBarrierError:
        out("wait(0.05) alone: BrokenBarrierError")
    out("broken after the timeout", b3.broken)


# ---------------------------------------------------------------- Process exit codes

def returns():
    pass


def exits_3():
    sys.exit(3)


def raises():
    sys.stderr = open(os.devnull, "w")  # the traceback is not an observable here
    raise RuntimeError("boom")


def aborts():
    os.abort()


def sleeps():
    time.sleep(HANG)


def process_exitcode():
    for name, target in (("return", returns), ("exit(3)", exits_3), ("exception", raises), ("abort", aborts)):
        p = ctx.Process(target=target)
        p.start()
        p.join()
        out(name, "exitcode", p.exitcode)
    for name in ("terminate", "kill"):
        p = ctx.Process(target=sleeps)
        p.start()
        out(name, "exitcode before", p.exitcode, "alive", p.is_alive())
        getattr(p, name)()
        p.join()
        out(name, "exitcode", p.exitcode, "alive", p.is_alive())
    p = ctx.Process(target=sleeps)
    p.start()
    out("join(0.05) alive", (p.join(0.05), p.is_alive())[1])
    p.kill()
    p.join()


SCENARIOS = {f.__name__: f for f in (
    pool_map, pool_imap, pool_imap_unordered, pool_starmap, pool_imap_error, pool_map_error,
    pool_free_worker, pool_apply_callbacks, queue_fifo, queue_empty_full, event, condition, barrier, process_exitcode)}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SCENARIOS:
        sys.exit("usage: scenarios.py <" + "|".join(SCENARIOS) + ">")
    SCENARIOS[sys.argv[1]]()
