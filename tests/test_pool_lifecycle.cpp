// Pool<F> lifecycle: maxtasksperchild replaces workers, the initializer runs once in
// every worker, close/join/terminate and the destructor, AsyncResult's states and
// get(timeout), and no descriptor or process outliving a pool.

#include "pool_test_support.hpp"

#include <mproc/mproc.hpp>

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <ranges>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;
using mproc_test::Gate;

std::vector<int> iota_vector(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i);
  return v;
}

/// F for tests that need busy workers: a negative x returns at once, any other x
/// waits for a pass through the gate first.
struct Gated {
  const Gate* gate;
  int operator()(int x) const {
    if (x >= 0) gate->wait();
    return x;
  }
};

/// Set by the initializer in each worker; F reports it.
int initialized_in_this_process = 0;

/// Appends the calling process's pid to a log in shared memory: slot 0 counts entries.
void log_pid(const mproc_test::SharedCounters& log) {
  const int at = ++log[0];
  log[static_cast<std::size_t>(at)] = ::getpid();
}
std::vector<pid_t> logged_pids(const mproc_test::SharedCounters& log) {
  std::vector<pid_t> out;
  for (int i = 1; i <= log[0]; ++i) out.push_back(log[static_cast<std::size_t>(i)]);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// maxtasksperchild

TEST_CASE("maxtasksperchild = 1: every task runs in a fresh worker") {
  mproc::Pool pool([](int) { return ::getpid(); }, {.processes = 2, .maxtasksperchild = 1});
  const auto pids = pool.map(iota_vector(8));
  const std::set<pid_t> distinct(pids.begin(), pids.end());
  CHECK(distinct.size() == 8);
  CHECK(distinct.count(::getpid()) == 0);
}

TEST_CASE("maxtasksperchild counts items, whatever the chunk size") {
  mproc::Pool pool([](int) { return ::getpid(); }, {.processes = 2, .maxtasksperchild = 3});
  for (std::size_t chunksize : {1, 2, 10}) {
    INFO("chunksize " << chunksize);
    std::map<pid_t, int> per_worker;
    for (pid_t p : pool.map(iota_vector(24), chunksize)) ++per_worker[p];
    CHECK(per_worker.size() >= 8);
    for (const auto& [pid, n] : per_worker) CHECK(n <= 3);
  }
}

// ---------------------------------------------------------------------------
// initializer

namespace {

/// What a map on a pool with a pid-logging initializer saw: each task's (pid,
/// initialized flag), and the pid of every process that ran the initializer.
struct InitializerRun {
  std::vector<std::pair<pid_t, int>> tasks;
  std::vector<pid_t> init_pids;
};

InitializerRun run_with_logging_initializer(mproc::PoolOptions options, int items) {
  mproc_test::SharedCounters log(64);
  options.initializer = [&log] {
    initialized_in_this_process = 1;
    log_pid(log);
  };
  mproc::Pool pool([](int) { return std::pair<pid_t, int>(::getpid(), initialized_in_this_process); },
                   std::move(options));
  auto tasks = pool.map(iota_vector(items));
  pool.close();
  pool.join();  // every worker ever started has run its initializer and exited
  return {std::move(tasks), logged_pids(log)};
}

/// Each worker ran the initializer once, and every task ran after it in its worker.
void check_initialized_once_per_worker(const InitializerRun& run) {
  const std::set<pid_t> inits(run.init_pids.begin(), run.init_pids.end());
  CHECK(inits.size() == run.init_pids.size());
  for (const auto& [pid, initialized] : run.tasks) {
    CHECK(initialized == 1);
    CHECK(inits.count(pid) == 1);
  }
  CHECK(initialized_in_this_process == 0);  // never in the caller
}

}  // namespace

TEST_CASE("the initializer runs once in every worker before its tasks") {
  const auto run = run_with_logging_initializer({.processes = 3}, 30);
  CHECK(run.init_pids.size() == 3);
  check_initialized_once_per_worker(run);
}

TEST_CASE("the initializer also runs in replacement workers") {
  const auto run = run_with_logging_initializer({.processes = 2, .maxtasksperchild = 1}, 6);
  CHECK(run.init_pids.size() >= 6);  // 6 workers ran a task...
  CHECK(run.init_pids.size() <= 8);  // ...plus at most 2 spares started meanwhile
  check_initialized_once_per_worker(run);
}

TEST_CASE("a pool closed right after it is made still starts every worker, and each runs the initializer") {
  // As Python's: the constructor's workers exist whatever comes next. The pool's thread
  // starts them after the constructor returns, so close() often comes first.
  mproc_test::SharedCounters ran(1);
  constexpr int pools = 100;
  for (int i = 0; i < pools; ++i) {
    mproc::Pool p([](int x) { return x; }, {.processes = 2, .initializer = [&ran] { ++ran[0]; }});
    p.close();
    p.join();
  }
  CHECK(ran[0] == 2 * pools);
}

TEST_CASE("serial mode runs the initializer once, in the calling process, before any task") {
  int runs = 0;
  pid_t ran_in = 0;
  mproc::Pool pool([&runs](int x) { return x + 100 * runs; }, {.processes = 2,
                                                               .initializer =
                                                                   [&] {
                                                                     ++runs;
                                                                     ran_in = ::getpid();
                                                                   },
                                                               .serial = true});
  CHECK(runs == 1);
  CHECK(ran_in == ::getpid());
  CHECK(pool.map(std::vector<int>{1, 2}) == std::vector<int>{101, 102});
  CHECK(pool.apply(3) == 103);
  CHECK(pool.imap(std::vector<int>{4}).next() == 104);
  CHECK(runs == 1);
}

// ---------------------------------------------------------------------------
// close, join, terminate

TEST_CASE("calls after close() throw PoolClosed and join() needs close() first") {
  for (bool serial : {false, true}) {
    INFO("serial " << serial);
    mproc::Pool pool([](int x) { return x + 1; }, {.processes = 2, .serial = serial});
    CHECK_THROWS_AS(pool.join(), mproc::ValueError);
    CHECK(pool.map(std::vector<int>{1}) == std::vector<int>{2});
    pool.close();
    CHECK_THROWS_AS(pool.map(std::vector<int>{1, 2}), mproc::PoolClosed);
    CHECK_THROWS_AS(pool.map_async(std::vector<int>{1}), mproc::PoolClosed);
    CHECK_THROWS_AS(pool.starmap(std::vector<std::tuple<int>>{{1}}), mproc::PoolClosed);
    CHECK_THROWS_AS(pool.apply(1), mproc::PoolClosed);
    CHECK_THROWS_AS(pool.apply_async(1), mproc::PoolClosed);
    CHECK_THROWS_AS(pool.imap(std::vector<int>{1}), mproc::PoolClosed);  // the call itself, in both modes
    CHECK_THROWS_AS(pool.imap_unordered(std::vector<int>{1}), mproc::PoolClosed);
    pool.join();
    pool.join();  // joining twice is harmless
  }
}

TEST_CASE("close() lets queued work finish and join() waits for it") {
  Gate gate;
  mproc::Pool pool(Gated{&gate}, {.processes = 2});
  auto many = pool.map_async(iota_vector(20));
  auto one = pool.apply_async(99);
  pool.close();
  CHECK_FALSE(one.ready());
  gate.open(21);
  pool.join();
  CHECK(many.ready());
  CHECK(many.get() == iota_vector(20));
  CHECK(one.get() == 99);
  CHECK(pool.worker_pids().empty());
}

TEST_CASE("terminate() while busy fails unfinished tasks with PoolClosed and reaps the workers") {
  Gate gate;  // never opened: every task stays busy until terminate
  mproc::Pool pool(Gated{&gate}, {.processes = 2});
  CHECK(pool.apply(-1) == -1);  // the workers are up
  const auto pids = pool.worker_pids();
  REQUIRE(pids.size() == 2);

  std::vector<mproc::AsyncResult<int>> singles;
  for (int i = 0; i < 4; ++i) singles.push_back(pool.apply_async(i));
  auto many = pool.map_async(iota_vector(50));
  pool.terminate();

  for (auto& r : singles) {
    CHECK(r.ready());
    CHECK_THROWS_AS(r.get(), mproc::PoolClosed);
  }
  CHECK(many.ready());
  CHECK_FALSE(many.successful());
  CHECK_THROWS_AS(many.get(), mproc::PoolClosed);
  for (pid_t pid : pids) {
    INFO("worker " << pid);
    CHECK(mproc_test::is_gone(pid));
  }
  CHECK(pool.worker_pids().empty());
  CHECK_THROWS_AS(pool.apply(-1), mproc::PoolClosed);
  CHECK_THROWS_AS(pool.map(std::vector<int>{-1}), mproc::PoolClosed);
  pool.join();  // allowed after terminate
}

TEST_CASE("terminate() from another thread ends an imap being consumed with PoolClosed") {
  Gate gate;
  Gate started;
  mproc::Pool pool(
      [&gate, &started](int x) {
        started.open();
        gate.wait();
        return x;
      },
      {.processes = 2});
  auto results = pool.imap(iota_vector(10));
  std::thread terminator([&] {
    started.wait();  // a task is running, the consumer is (or will be) waiting for it
    pool.terminate();
  });
  CHECK_THROWS_AS(results.next(), mproc::PoolClosed);
  terminator.join();
}

TEST_CASE("the destructor finishes outstanding work and results outlive the pool") {
  mproc::AsyncResult<int> r;
  std::vector<int> seen;
  {
    Gate gate;
    mproc::Pool pool(Gated{&gate}, {.processes = 1});
    r = pool.apply_async(5);
    gate.open();
  }  // close() + join()
  CHECK(r.ready());
  CHECK(r.get() == 5);
  CHECK(mproc_test::has_no_children());
}

TEST_CASE("an imap that outlives its pool ends with PoolClosed, in serial mode as with workers") {
  for (bool serial : {false, true}) {
    INFO("serial " << serial);
    std::optional<mproc::IMap<int>> results;
    {
      mproc::Pool pool([](int x) { return 2 * x; }, {.processes = 1, .serial = serial});
      results.emplace(pool.imap(std::views::iota(0)));  // endless: the pool goes first
      CHECK(results->next() == 0);
    }
    // What was submitted before the pool went may still come; then PoolClosed.
    bool closed = false;
    try {
      while (results->next()) {
      }
    } catch (const mproc::PoolClosed&) {
      closed = true;
    }
    CHECK(closed);
  }
}

TEST_CASE("a pool can be moved") {
  mproc::Pool a([](int x) { return x * 3; }, {.processes = 1});
  CHECK(a.apply(1) == 3);
  mproc::Pool b(std::move(a));
  CHECK(b.map(std::vector<int>{1, 2}) == std::vector<int>{3, 6});
  CHECK_THROWS_AS(a.apply(1), mproc::ValueError);  // a moved-from pool refuses calls
  CHECK_THROWS_AS(a.processes(), mproc::ValueError);  // its queries too, instead of reading nothing
  CHECK_THROWS_AS(a.worker_pids(), mproc::ValueError);
}

TEST_CASE("a pool refuses to be used from a forked child") {
  mproc::Pool pool([](int x) { return x; }, {.processes = 1});
  CHECK(pool.apply(1) == 1);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int code = 1;
    try {
      (void)pool.apply(2);
    } catch (const mproc::ValueError&) {
      code = 0;
    } catch (...) {
      code = 2;
    }
    ::_exit(code);  // never return into the test runner
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(pool.apply(3) == 3);  // the child's exit did not disturb the parent's pool
}

// ---------------------------------------------------------------------------
// AsyncResult

TEST_CASE("get(timeout) on a busy task throws TimeoutError while the task keeps running") {
  Gate gate;
  mproc::Pool pool(Gated{&gate}, {.processes = 1});
  auto r = pool.apply_async(7);
  CHECK_THROWS_AS(r.get(10ms), mproc::TimeoutError);
  CHECK_FALSE(r.ready());
  CHECK_THROWS_AS(r.successful(), mproc::ValueError);
  CHECK_FALSE(r.wait_for(1ms));
  gate.open();
  CHECK(r.get() == 7);
  CHECK(r.ready());
  CHECK(r.successful());
  CHECK(r.wait_for(0ms));
  CHECK(r.get(0ms) == 7);

  auto m = pool.map_async(std::vector<int>{1, 2});
  CHECK_THROWS_AS(m.get(1ms), mproc::TimeoutError);
  gate.open(2);
  m.wait();
  CHECK(std::move(m).get() == std::vector<int>{1, 2});
}

TEST_CASE("a timeout too long for the clock waits for the result instead of returning at once") {
  using mproc::detail::Deadline;
  CHECK(Deadline::after(std::chrono::nanoseconds::max()).is_forever());
  CHECK(Deadline::after(std::chrono::hours::max()).is_forever());
  CHECK(Deadline::after(std::chrono::duration<double>(1e300)).is_forever());
  CHECK_FALSE(Deadline::after(std::chrono::hours(24 * 365 * 100)).is_forever());
  const auto before = std::chrono::steady_clock::now();
  const auto at_once = Deadline::after(-std::chrono::hours::max()).when();  // a negative timeout is "now"
  CHECK(before <= at_once);
  CHECK(at_once <= std::chrono::steady_clock::now());

  Gate gate;
  mproc::Pool pool(Gated{&gate}, {.processes = 1});
  auto waited = pool.apply_async(1);
  auto got = pool.apply_async(2);
  std::thread opener([&] { gate.open(2); });  // the results come while the calls below wait
  CHECK(waited.wait_for(std::chrono::nanoseconds::max()));
  CHECK(waited.get() == 1);
  CHECK(got.get(std::chrono::hours::max()) == 2);
  opener.join();
}

TEST_CASE("get() on a temporary AsyncResult moves the value out only when no copy shares it") {
  mproc::Pool pool([](int n) { return std::vector<int>(static_cast<std::size_t>(n), 1); }, {.processes = 1});
  auto shared = pool.apply_async(5);
  auto copy = shared;  // copies share one result
  const int* stored = shared.get().data();
  const std::vector<int> taken = std::move(shared).get();
  CHECK(taken.size() == 5);
  CHECK(taken.data() != stored);  // copied: the copy still needs it
  CHECK(copy.get().size() == 5);
  CHECK(copy.get().data() == stored);

  auto alone = pool.apply_async(3);
  const int* buffer = alone.get().data();
  const std::vector<int> moved = std::move(alone).get();
  CHECK(moved.data() == buffer);  // the only handle: moved, not copied
}

TEST_CASE("a default-constructed AsyncResult has no result") {
  mproc::AsyncResult<int> r;
  CHECK_FALSE(r.valid());
  CHECK_THROWS_AS(r.get(), mproc::ValueError);
  CHECK_THROWS_AS(r.ready(), mproc::ValueError);
}

// ---------------------------------------------------------------------------
// Workers

TEST_CASE("worker_pids() lists every worker as soon as the constructor returns, ready or not") {
  Gate gate;  // holds each worker in its initializer: started, not ready
  mproc::Pool pool([](int x) { return x; }, {.processes = 3, .initializer = [&gate] { gate.wait(); }});
  const auto pids = pool.worker_pids();
  gate.open(3);
  CHECK(pids.size() == 3);
  CHECK(std::set<pid_t>(pids.begin(), pids.end()).size() == pids.size());
  for (pid_t pid : pids) CHECK_FALSE(mproc_test::is_gone(pid));
  CHECK(pool.map(iota_vector(10)) == iota_vector(10));
  CHECK(pool.worker_pids() == pids);
}

TEST_CASE("a pool made inside a pool task works, and leaves no process behind") {
  // As a task parallelises its own inner loop: the worker's pool waits for its own
  // results (map, AsyncResult::get), and is gone with its processes when the task returns.
  mproc::Pool outer(
      [](int n) {
        std::vector<int> out;
        {
          mproc::Pool inner([](int x) { return x * x; }, {.processes = 2});
          int sum = 0;
          for (int r : inner.map(iota_vector(n))) sum += r;
          out.push_back(sum);
          out.push_back(inner.apply_async(n).get());
          for (pid_t pid : inner.worker_pids()) out.push_back(pid);
        }
        out.insert(out.begin() + 2, mproc_test::has_no_children() ? 1 : 0);  // its fork server was reaped
        return out;
      },
      {.processes = 1});
  for (int round = 0; round < 2; ++round) {  // the same worker makes a second pool
    const auto out = outer.apply(10);
    REQUIRE(out.size() == 5);
    CHECK(out[0] == 285);  // 0 + 1 + 4 + ... + 81
    CHECK(out[1] == 100);
    CHECK(out[2] == 1);
    for (std::size_t i = 3; i < out.size(); ++i) CHECK(mproc_test::is_gone(out[i]));
  }
  const auto workers = outer.worker_pids();
  outer.close();
  outer.join();
  for (pid_t pid : workers) CHECK(mproc_test::is_gone(pid));
  CHECK(mproc_test::has_no_children());
}

// ---------------------------------------------------------------------------
// Leaks

TEST_CASE("100 pools made and destroyed leave no descriptor and no process behind") {
  const std::size_t fds_before = mproc_test::open_fd_count();
  REQUIRE(mproc_test::has_no_children());
  std::vector<pid_t> workers;
  for (int i = 0; i < 100; ++i) {
    mproc::Pool pool([](int x) { return x * 2; }, {.processes = 2});
    if (i % 4 == 3) continue;  // some pools are destroyed before any work
    CHECK(pool.map(std::vector<int>{1, 2, 3}) == std::vector<int>{2, 4, 6});
    for (pid_t p : pool.worker_pids()) workers.push_back(p);
    if (i % 4 == 1) {
      pool.close();
      pool.join();
    }
    if (i % 4 == 2) pool.terminate();
  }
  CHECK(mproc_test::open_fd_count() == fds_before);
  CHECK(mproc_test::has_no_children());
  std::size_t alive = 0;
  for (pid_t p : workers) alive += mproc_test::is_gone(p) ? 0 : 1;
  CHECK(alive == 0);
}
