// Pool::apply's round trip on the caller's thread: while the pool's thread sleeps, the
// caller hands its task to an idle worker and reads the outcome itself (the worker is
// lent to it meanwhile). What a user relies on must not change: every call gets its
// own result when many threads call at once beside map and apply_async, and a worker
// that dies, a terminate() or a close() while a call waits on a lent worker end that
// call as they end any other.
#include "pool_test_support.hpp"

#include <mproc/pool.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

namespace {

using mproc_test::Gate;
using mproc_test::GateWatchdog;

long twice(int x) { return 2L * x; }

}  // namespace

TEST_CASE("apply from several threads at once, beside map and apply_async: every call gets its own result") {
  mproc::Pool pool(twice, {.processes = 2});
  constexpr int threads = 4;
  constexpr int calls = 300;
  std::atomic<int> wrong{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < calls; ++i) {
        const int x = t * calls + i;
        if (pool.apply(x) != 2L * x) ++wrong;
      }
    });
  }
  std::vector<int> xs(2000);
  for (int i = 0; i < 2000; ++i) xs[static_cast<std::size_t>(i)] = i;
  for (int round = 0; round < 5; ++round) {
    const auto doubled = pool.map(xs);
    for (int i = 0; i < 2000; ++i) CHECK(doubled[static_cast<std::size_t>(i)] == 2L * i);
    auto async = pool.apply_async(round);
    CHECK(async.get() == 2L * round);
  }
  for (auto& c : callers) c.join();
  CHECK(wrong == 0);
  CHECK(pool.apply(21) == 42);  // and the pool goes on
}

TEST_CASE("a worker that dies while apply waits on it: WorkerLost, and a retry runs elsewhere") {
  // Input 1 dies in the first worker that runs it (the flag is shared), then succeeds.
  mproc_test::SharedCounters died(1);
  auto task = [&died](int x) -> int {
    if (x == 1 && died[0]++ == 0) mproc_test::die_by_signal(SIGKILL);
    if (x == 2) mproc_test::die_by_signal(SIGKILL);
    return x;
  };
  mproc::Pool pool(task, {.processes = 2, .retries = 1});
  CHECK(pool.apply(0) == 0);
  CHECK(pool.apply(1) == 1);  // killed once, run again
  CHECK_THROWS_AS(pool.apply(2), mproc::WorkerLost);  // killed every time
  CHECK(pool.apply(3) == 3);
}

TEST_CASE("a worker that dies while apply waits on it, with its result pipe held open by its own child") {
  // The worker forks a child that keeps every descriptor it inherited (the result
  // pipe's write end among them) and waits on `release`, then the worker dies: no end
  // of file reaches the caller, only the worker's exit does.
  Gate release;
  auto task = [&release](int x) -> int {
    if (x == 1) {
      if (::fork() == 0) {
        try {
          release.wait();
        } catch (...) {
        }
        ::_exit(0);
      }
      mproc_test::die_by_signal(SIGKILL);
    }
    return x;
  };
  GateWatchdog watchdog(release);
  {
    mproc::Pool pool(task, {.processes = 1});
    CHECK(pool.apply(0) == 0);
    CHECK_THROWS_AS(pool.apply(1), mproc::WorkerLost);
    CHECK(pool.apply(2) == 2);
  }
  release.open(1);  // the stray child leaves
  CHECK_FALSE(watchdog.stop());
}

TEST_CASE("terminate() while apply waits on a worker: the call throws PoolClosed") {
  Gate started, release;
  auto task = [&](int x) -> int {
    started.open();
    release.wait();
    return x;
  };
  GateWatchdog watchdog(release);
  mproc::Pool pool(task, {.processes = 1});
  std::atomic<int> outcome{0};  // 1: PoolClosed, 2: anything else
  std::thread caller([&] {
    try {
      (void)pool.apply(5);
      outcome = 2;
    } catch (const mproc::PoolClosed&) {
      outcome = 1;
    } catch (...) {
      outcome = 2;
    }
  });
  started.wait();
  pool.terminate();
  caller.join();
  CHECK(outcome == 1);
  CHECK_FALSE(watchdog.stop());
}

TEST_CASE("close() and join() while apply waits on a worker: the call gets its result, then join returns") {
  Gate started, release;
  auto task = [&](int x) -> int {
    started.open();
    release.wait();
    return x + 1;
  };
  GateWatchdog watchdog(release);
  mproc::Pool pool(task, {.processes = 1});
  long got = 0;
  std::thread caller([&] { got = pool.apply(41); });
  started.wait();
  pool.close();
  release.open();
  pool.join();
  caller.join();
  CHECK(got == 42);
  CHECK_FALSE(watchdog.stop());
}

TEST_CASE("apply with maxtasksperchild: each worker leaves after its tasks and the calls go on") {
  mproc::Pool pool(twice, {.processes = 2, .maxtasksperchild = 1});
  for (int i = 0; i < 20; ++i) CHECK(pool.apply(i) == 2L * i);
}
