// Hostile tests of the Pool's and Process's promises, written from README.md's
// sentences rather than from the code: real processes stopped (SIGSTOP), killed
// from outside, starved by a busy machine, and run under real limits (RLIMIT_NPROC
// as an unprivileged user, RLIMIT_NOFILE, the CPUs this process may use). What the
// other test files already check by killing a process from inside a task is not
// repeated here. Which README promise each test checks:
//
// Failure semantics, "a worker killed by a signal"
//   - a worker stopped in the middle of a task, then killed while stopped
// Failure semantics, "a worker dies with no task running"
//   - idle workers killed from outside between maps
// Failure semantics, "a task runs past task_timeout"
//   - task_timeout ends a worker stopped while it runs a task
// Failure semantics, "the parent is killed (SIGKILL)"
//   - the parent killed while its fork server and workers are stopped
// Failure semantics, "pool.terminate()"
//   - terminate() while a worker is stopped
// Failure semantics, "F throws" (map: first failure in input order, imap: in its place)
//   - a busy machine: every core taken by busy loops during map, imap,
//     imap_unordered and starmap
// The Pool ("nothing hangs": a stopped worker is slow, not dead; get(timeout))
//   - a worker stopped in the middle of a task is waited for, not replaced
// The Pool, `processes` ("0 means the cores this process may use")
//   - a process limited to one CPU gets one worker
// The Pool, errors ("every exception derives from mproc::Error"; nothing hangs)
//   - RLIMIT_NPROC as an unprivileged user: no room for the pool's thread, for its
//     fork server, for any worker, for one worker of two
// Processes, "Process ... start, join (with a timeout), is_alive, kill, exitcode()"
//   - start() under RLIMIT_NPROC raises OSError(EAGAIN) and runs nothing
//   - start() at the open-file limit raises OSError(EMFILE), forks nothing, runs nothing
//   - a stopped child: join(timeout), is_alive(), kill(), and a stopped daemon ended
//     by its destructor
// Processes, Pipe ("recv on a closed, drained pipe raises EOFError"; bad bytes on a
// pipe: "Connection::recv ... throw ProtocolError")
//   - a sender killed in the middle of a 32 MiB message
//
// Rows already checked with real processes elsewhere, so not here: std::exit and
// abort() in a task, retries, maxtasksperchild, a call after close() and a failing
// initializer (test_pool_failures, test_pool_lifecycle); max_memory_per_child
// (test_reliability_memory); workers killed from outside at random, with and without
// retries (test_reliability_chaos); Ctrl-C, a dead or stopped fork server, SIGCHLD
// ignored (test_reliability_signals).

#include "hostile_support.hpp"  // first: it configures Catch2

#include "blocked_support.hpp"

#include <mproc/mproc.hpp>

#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::iota_vector;
using mproc_test::spawn;

/// A task's outcome from an imap: its value or the exception it threw.
using Outcome = std::variant<long, std::exception_ptr>;

/// Whether an outcome is an exception of type E.
template <class E>
bool is_error(const Outcome& o) {
  if (o.index() != 1) return false;
  try {
    std::rethrow_exception(std::get<1>(o));
  } catch (const E&) {
    return true;
  } catch (...) {
    return false;
  }
}

/// Sends sig to pid through a pidfd, so that a pid recycled meanwhile is never hit.
bool signal_process(pid_t pid, int sig) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return false;
  const mproc::detail::Fd pidfd(fd);
  return ::syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0) == 0;
}

/// A task that, for the victim item, reports its worker's pid and then waits for
/// `go` (the test stops the worker meanwhile); other items return at once.
struct ReportsAndWaits {
  int victim;
  mproc::Queue<int> pids;
  mproc::Event go;
  long operator()(int x) {
    if (x == victim) {
      pids.put(static_cast<int>(::getpid()));
      (void)go.wait_for(mproc_test::hang_limit);
    }
    return 2L * x;
  }
};

}  // namespace

// ---------------------------------------------------------------------------
// Stopped workers

TEST_CASE("a worker stopped (SIGSTOP) in the middle of a task is waited for, not replaced, and every result arrives") {
  mproc::Queue<int> pids;
  mproc::Event go;
  mproc::Pool pool(ReportsAndWaits{7, pids, go}, {.processes = 2, .chunksize = 1});
  auto all = pool.map_async(iota_vector(40));
  const pid_t victim = pids.get(mproc_test::hang_limit);
  REQUIRE(signal_process(victim, SIGSTOP));
  REQUIRE(mproc_test::wait_until_stopped(victim));
  go.set();  // the stopped worker cannot see it until it is continued
  // A stopped worker is slow, not dead: get(timeout) times out, the pool keeps it.
  CHECK_THROWS_AS(all.get(50ms), mproc::TimeoutError);
  const auto pids_while_stopped = pool.worker_pids();
  CHECK(std::count(pids_while_stopped.begin(), pids_while_stopped.end(), victim) == 1);
  REQUIRE(signal_process(victim, SIGCONT));
  std::vector<long> expected;
  for (int i = 0; i < 40; ++i) expected.push_back(2L * i);
  CHECK(all.get() == expected);
  const auto pids_after = pool.worker_pids();
  CHECK(std::count(pids_after.begin(), pids_after.end(), victim) == 1);
}

namespace {

/// Runs an imap of 0..n-1 on a ReportsAndWaits pool; once the victim item reports its
/// worker, stops that worker (SIGSTOP) and calls then(pid) on another thread. Returns
/// the outcomes, after checking that every item but the victim gave 2 * i.
template <class Then>
std::vector<Outcome> stop_the_victim(mproc::Pool<ReportsAndWaits>& pool, mproc::Queue<int> pids, int n, int victim,
                                     Then then) {
  auto results = pool.imap(iota_vector(n));
  bool stopped = false;
  std::thread stopper([&] {
    const pid_t pid = pids.get(mproc_test::hang_limit);
    stopped = signal_process(pid, SIGSTOP) && mproc_test::wait_until_stopped(pid);
    then(pid);
  });
  auto out = mproc_test::imap_outcomes(std::move(results));
  stopper.join();
  CHECK(stopped);
  REQUIRE(out.size() == static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (i == static_cast<std::size_t>(victim)) continue;
    INFO("item " << i);
    REQUIRE(out[i].index() == 0);
    CHECK(std::get<0>(out[i]) == 2L * static_cast<long>(i));
  }
  return out;
}

}  // namespace

TEST_CASE(
    "a worker stopped in the middle of a task, then killed while stopped: that task alone fails with WorkerLost") {
  mproc::Queue<int> pids;
  mproc::Event go;
  mproc::Pool pool(ReportsAndWaits{5, pids, go}, {.processes = 2, .chunksize = 1});
  const auto out = stop_the_victim(pool, pids, 30, 5, [](pid_t pid) { (void)signal_process(pid, SIGKILL); });
  REQUIRE(is_error<mproc::WorkerLost>(out[5]));
  try {
    std::rethrow_exception(std::get<1>(out[5]));
  } catch (const mproc::WorkerLost& e) {
    CHECK(e.signal() == SIGKILL);
  }
  CHECK(pool.map(std::vector<int>{10, 11, 12}) == std::vector<long>{20, 22, 24});  // the pool goes on
}

TEST_CASE(
    "task_timeout ends a worker stopped (SIGSTOP) while it runs a task: that task alone fails with TimeoutError") {
  mproc::Queue<int> pids;
  mproc::Event go;
  mproc::Pool pool(ReportsAndWaits{3, pids, go}, {.processes = 2, .chunksize = 1, .task_timeout = 2s});
  // Once the worker is stopped, the task would end at once if its worker could run.
  const auto out = stop_the_victim(pool, pids, 20, 3, [&go](pid_t) { go.set(); });
  CHECK(is_error<mproc::TimeoutError>(out[3]));
}

TEST_CASE(
    "terminate() while a worker is stopped: it returns with every worker reaped, the tasks fail with PoolClosed") {
  mproc::Queue<int> pids;
  mproc::Event go;
  mproc::Pool pool(
      [pids, go](int x) mutable {
        pids.put(static_cast<int>(::getpid()));
        (void)go.wait_for(mproc_test::hang_limit);
        return x;
      },
      {.processes = 2, .chunksize = 1});
  auto all = pool.map_async(iota_vector(10));
  const pid_t a = pids.get(mproc_test::hang_limit);
  const pid_t b = pids.get(mproc_test::hang_limit);
  REQUIRE(a != b);
  REQUIRE(signal_process(a, SIGSTOP));
  REQUIRE(mproc_test::wait_until_stopped(a));
  pool.terminate();
  CHECK_FALSE(mproc_test::proc_stat(a).has_value());  // killed and reaped, not a zombie
  CHECK_FALSE(mproc_test::proc_stat(b).has_value());
  CHECK_THROWS_AS(all.get(), mproc::PoolClosed);
  CHECK_THROWS_AS(pool.apply(1), mproc::PoolClosed);
}

// ---------------------------------------------------------------------------
// Workers killed from outside

TEST_CASE("idle workers killed from outside between two maps are replaced, and each next map completes") {
  // Only workers that have run a task are shot: they were ready, so their deaths
  // are an operator's or the OOM killer's, never a failing initializer's.
  mproc_test::SharedCounters ran(1 << 16);
  mproc::Pool pool(
      [&ran](int x) {
        const pid_t self = ::getpid();
        ran[static_cast<std::size_t>(self) % ran.size()].store(self);
        return 3L * x;
      },
      {.processes = 2, .chunksize = 1});
  std::vector<long> expected;
  for (int i = 0; i < 200; ++i) expected.push_back(3L * i);
  REQUIRE(pool.map(iota_vector(200)) == expected);
  std::set<pid_t> killed;
  for (int round = 0; round < 4; ++round) {
    INFO("round " << round);
    for (pid_t pid : pool.worker_pids()) {
      if (ran[static_cast<std::size_t>(pid) % ran.size()].load() != pid) continue;
      if (signal_process(pid, SIGKILL)) killed.insert(pid);
    }
    // No task runs: the pool learns of the deaths from the kernel alone.
    CHECK(pool.map(iota_vector(200)) == expected);
  }
  CHECK(killed.size() >= 4);
  for (pid_t pid : pool.worker_pids()) CHECK(killed.count(pid) == 0);
}

namespace {

/// Forks a program whose Pool of two workers is busy in a map; each task writes a
/// byte to report_fd and then pauses for good.
mproc::detail::Child start_busy_program(int report_fd) {
  return mproc::detail::fork_child({}, [report_fd] {
    mproc::Pool pool(
        [report_fd](int x) {
          (void)mproc::detail::write_all(report_fd, "r", 1);
          for (;;) ::pause();
          return x;
        },
        {.processes = 2, .chunksize = 1});
    (void)pool.map(iota_vector(100));
    return 0;
  });
}

}  // namespace

TEST_CASE("the parent killed (SIGKILL) while its fork server and workers are stopped: the whole tree still ends") {
  mproc_test::Subreaper reaper;
  auto report = mproc::detail::make_pipe();
  mproc::detail::Child program = start_busy_program(report.write.get());
  report.write.reset();
  char buf[2];
  std::size_t got = 0;
  while (got < 2) {
    pollfd p{report.read.get(), POLLIN, 0};
    REQUIRE(mproc::detail::poll_until(&p, 1, mproc::detail::Deadline::after(mproc_test::hang_limit)) == 1);
    const ssize_t r = mproc::detail::read_some(report.read.get(), buf, sizeof buf - got);
    REQUIRE(r > 0);
    got += static_cast<std::size_t>(r);
  }
  mproc_test::ProcessWatch watch;
  for (pid_t pid : mproc_test::descendants(program.pid())) {
    REQUIRE(watch.add(pid));
    REQUIRE(signal_process(pid, SIGSTOP));
  }
  REQUIRE(watch.size() >= 3);  // the fork server and two workers
  for (pid_t pid : watch.pids()) REQUIRE(mproc_test::wait_until_stopped(pid));
  program.kill(SIGKILL);
  const bool ended = watch.wait_all_ended(Clock::now() + mproc_test::hang_limit);
  INFO("still running: " << watch.survivors());
  CHECK(ended);
  if (!ended) watch.kill_all();
  CHECK(program.wait().has_value());
  CHECK(mproc_test::reap_all_children(Clock::now() + mproc_test::hang_limit));
}

// ---------------------------------------------------------------------------
// A busy machine

TEST_CASE("every core busy with other work: map, imap, imap_unordered and starmap give Python's results and errors") {
  const mproc_test::BusyMachine busy;
  // A generous task_timeout: tasks of microseconds must not be taken for hung ones
  // on a loaded machine.
  mproc::Pool pool(
      [](int x) -> long {
        volatile long acc = 0;
        for (int i = 0; i < 2000; ++i) acc = acc + i % 7;
        if (x == 777 || x == 1500) throw std::invalid_argument("item " + std::to_string(x));
        return 3L * x + (acc > 0 ? 0 : 1);
      },
      {.processes = 2, .task_timeout = 120s});
  const auto inputs = iota_vector(2000);

  try {
    (void)pool.map(inputs);
    FAIL("map did not raise");
  } catch (const mproc::RemoteError& e) {
    CHECK(e.message() == "item 777");  // the first failure in input order
  }

  const auto ordered = mproc_test::imap_outcomes(pool.imap(inputs, 7));
  REQUIRE(ordered.size() == 2000);
  for (std::size_t i = 0; i < ordered.size(); ++i) {
    INFO("item " << i);
    if (i == 777 || i == 1500) {
      CHECK(is_error<mproc::RemoteError>(ordered[i]));
    } else {
      REQUIRE(ordered[i].index() == 0);
      CHECK(std::get<0>(ordered[i]) == 3L * static_cast<long>(i));
    }
  }

  const auto unordered = mproc_test::imap_outcomes(pool.imap_unordered(inputs, 3));
  REQUIRE(unordered.size() == 2000);
  std::multiset<long> values;
  int errors = 0;
  for (const auto& o : unordered) {
    if (o.index() == 0) values.insert(std::get<0>(o));
    else errors += is_error<mproc::RemoteError>(o) ? 1 : 100;
  }
  CHECK(errors == 2);
  std::multiset<long> expected_values;
  for (int i = 0; i < 2000; ++i) {
    if (i != 777 && i != 1500) expected_values.insert(3L * i);
  }
  CHECK(values == expected_values);

  mproc::Pool adder([](int a, int b) { return long(a) * 1000 + b; }, {.processes = 2});
  std::vector<std::pair<int, int>> pairs;
  std::vector<long> sums;
  for (int i = 0; i < 3000; ++i) {
    pairs.emplace_back(i, i % 1000);
    sums.push_back(long(i) * 1000 + i % 1000);
  }
  CHECK(adder.starmap(pairs) == sums);
}

// ---------------------------------------------------------------------------
// The CPUs this process may use

TEST_CASE("processes = 0 means the CPUs this process may use: one worker under an affinity of one CPU") {
  auto child = spawn([] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0) return int{mproc_test::limit_not_set};
    if (mproc::cpu_count() != 1) return 1;
    mproc::Pool pool([](int x) { return x + 1; });
    if (pool.processes() != 1) return 2;
    const auto r = pool.map(iota_vector(50));
    if (r.size() != 50 || r[49] != 50) return 3;
    if (pool.worker_pids().size() != 1) return 4;
    return 0;
  });
  CHECK(mproc_test::exit_code(child) == 0);
}

// ---------------------------------------------------------------------------
// RLIMIT_NPROC, as an unprivileged user

namespace {

/// Unprivileged users of their own for these tests (see become_unprivileged_with_task_room).
constexpr uid_t nproc_uid_base = 47100;

/// Runs body in a child that is an unprivileged user with room for `room` more tasks.
template <class Body>
int with_task_room(uid_t uid, std::size_t room, Body body) {
  auto child = spawn([&] {
    if (!mproc_test::become_unprivileged_with_task_room(uid, room)) return int{mproc_test::limit_not_set};
    return body();
  });
  return mproc_test::exit_code(child);
}

}  // namespace

TEST_CASE("RLIMIT_NPROC: Process::start with no process left raises OSError (EAGAIN), runs nothing, and works once "
          "there is room") {
  const int code = with_task_room(nproc_uid_base + 1, 0, [] {
    mproc::Value<int> ran(0);
    mproc::Process p([ran]() mutable { ran.store(1); });
    try {
      p.start();
      return int{mproc_test::limit_no_error};
    } catch (const mproc::OSError& e) {
      if (e.error_code() != EAGAIN) return int{mproc_test::limit_wrong_error};
    } catch (...) {
      return int{mproc_test::limit_wrong_error};
    }
    if (ran.load() != 0) return 1;
    if (!mproc_test::set_soft_limit(RLIMIT_NPROC, RLIM_INFINITY)) return int{mproc_test::limit_not_set};
    mproc::Process again([ran]() mutable { ran.store(2); });
    again.start();
    again.join();
    return again.exitcode() == 0 && ran.load() == 2 ? 0 : 2;
  });
  CHECK(code == 0);
}

TEST_CASE("RLIMIT_NPROC: a Pool with no room for its own thread raises an mproc::Error from its constructor") {
  // README: every exception mproc throws derives from mproc::Error.
  const int code = with_task_room(nproc_uid_base + 2, 0, [] {
    try {
      mproc::Pool pool([](int x) { return x; }, {.processes = 2});
      (void)pool.apply(1);
      return int{mproc_test::limit_no_error};
    } catch (const mproc::Error&) {
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "Pool under RLIMIT_NPROC raised a %s, not an mproc::Error: %s\n",
                   mproc::detail::demangle(typeid(e).name()).c_str(), e.what());
      return int{mproc_test::limit_wrong_error};
    }
  });
  CHECK(code == 0);
}

TEST_CASE(
    "RLIMIT_NPROC: a Pool that can start no worker fails its calls with mproc::Error, and nothing hangs or stays") {
  // Room for the pool's thread and its fork server, not for a worker; then room for
  // the thread only. Either way every call fails with an mproc::Error naming fork.
  for (std::size_t room : {std::size_t{2}, std::size_t{1}}) {
    INFO("room for " << room << " more tasks");
    const int code = with_task_room(nproc_uid_base + 3 + static_cast<uid_t>(room), room, [] {
      try {
        mproc::Pool pool([](int x) { return x; }, {.processes = 2});
        try {
          (void)pool.map(iota_vector(10));
          return int{mproc_test::limit_no_error};
        } catch (const mproc::Error& e) {
          if (std::string(e.what()).find("fork") == std::string::npos) return 1;
        }
        try {
          (void)pool.apply(1);
          return int{mproc_test::limit_no_error};
        } catch (const mproc::Error&) {
        }
      } catch (const mproc::Error& e) {
        // Refused at construction: also a clear failure.
        if (std::string(e.what()).find("fork") == std::string::npos) return 2;
      } catch (...) {
        return int{mproc_test::limit_wrong_error};
      }
      // The pool is gone: no process of it may remain (the fork server, a worker).
      return mproc_test::reap_all_children(Clock::now() + mproc_test::hang_limit) && mproc_test::has_no_children() ? 0
                                                                                                                   : 3;
    });
    CHECK(code == 0);
  }
}

TEST_CASE("RLIMIT_NPROC: a Pool of two that can start only one worker still completes its map on that one") {
  // The pool's thread, its fork server and one worker fit; the second worker never
  // does. Python's Pool would keep trying; mproc must not break a pool that has a
  // live worker (the goal for a failed fork: retry while one worker lives).
  const int code = with_task_room(nproc_uid_base + 10, 3, [] {
    try {
      mproc::Pool pool([](int x) { return 2 * x; }, {.processes = 2});
      const auto r = pool.map(iota_vector(100));
      if (r.size() != 100 || r[99] != 198) return 1;
      return 0;
    } catch (const mproc::Error& e) {
      std::fprintf(stderr, "map under RLIMIT_NPROC failed: %s\n", e.what());
      return 2;
    } catch (...) {
      return int{mproc_test::limit_wrong_error};
    }
  });
  CHECK(code == 0);
}

// ---------------------------------------------------------------------------
// RLIMIT_NOFILE and Process

TEST_CASE("Process::start at the open-file limit raises OSError (EMFILE), forks no child and never runs the target") {
  // Python makes its sentinel pipe before it forks, so a start that raises forked
  // nothing and ran nothing. A child forked before the descriptor that fails, and
  // killed then, runs the target first whenever the scheduler lets it (a few times in
  // a hundred attempts); the fork itself is seen every time: its end sends SIGCHLD,
  // which is blocked here so that it stays pending (with no handler, which would make
  // mproc take another path), and no descriptor is needed to look.
  auto child = spawn([] {
    const auto counts_into = [](mproc::Value<int> v) { return [v]() mutable { v.update([](int& n) { ++n; }); }; };
    mproc::Value<int> ran(0);
    mproc_test::show_types_to_the_sanitizer([&] {
      mproc::Process p(counts_into(mproc::Value<int>(0)));
      p.start();
      p.join();
    });
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (::pthread_sigmask(SIG_BLOCK, &chld, nullptr) != 0) return int{mproc_test::limit_not_set};
    const timespec no_wait{0, 0};
    const auto child_ended = [&] {  // takes a pending SIGCHLD
      siginfo_t info{};
      return ::sigtimedwait(&chld, &info, &no_wait) == SIGCHLD;
    };
    (void)child_ended();  // the warm-up's
    int raised = 0, forked = 0;
    for (int attempt = 0; attempt < 100; ++attempt) {
      mproc_test::DescriptorFiller fill(0);
      if (!fill.ok()) return int{mproc_test::limit_not_set};
      try {
        mproc::Process p(counts_into(ran));
        p.start();
        p.join();
        return int{mproc_test::limit_no_error};
      } catch (const mproc::OSError& e) {
        if (e.error_code() != EMFILE) return int{mproc_test::limit_wrong_error};
        ++raised;
      }
      forked += child_ended() ? 1 : 0;  // the start() that raised forked a child, and reaped it
    }
    if (forked != 0 || ran.load() != 0) {
      std::fprintf(stderr, "%d Process::start calls raised OSError; %d of them forked a child, %d ran the target\n",
                   raised, forked, ran.load());
      return 1;
    }
    return 0;
  });
  CHECK(mproc_test::exit_code(child) == 0);
}

// ---------------------------------------------------------------------------
// Stopped Process children

TEST_CASE("a stopped child: join(timeout) is false and is_alive() true, and kill() ends it with exitcode -9") {
  mproc::Event go;
  mproc::Process p([go]() mutable { (void)go.wait_for(mproc_test::hang_limit); });
  p.start();
  REQUIRE(signal_process(p.pid(), SIGSTOP));
  REQUIRE(mproc_test::wait_until_stopped(p.pid()));
  go.set();
  CHECK_FALSE(p.join(20ms));
  CHECK(p.is_alive());
  CHECK_FALSE(p.exitcode().has_value());
  p.kill();  // SIGKILL ends a stopped process too
  p.join();
  CHECK(p.exitcode() == -SIGKILL);
}

TEST_CASE(
    "a stopped daemon is still ended by its destructor (SIGTERM stays pending, the grace period's SIGKILL does not)") {
  pid_t pid = 0;
  {
    mproc::Process p({.daemon = true}, [] {
      for (;;) ::pause();
    });
    p.start();
    pid = p.pid();
    REQUIRE(signal_process(pid, SIGSTOP));
    REQUIRE(mproc_test::wait_until_stopped(pid));
  }
  CHECK_FALSE(mproc_test::proc_stat(pid).has_value());  // ended and reaped
}

// ---------------------------------------------------------------------------
// Pipes

TEST_CASE(
    "Pipe: a sender killed in the middle of a 32 MiB message: recv raises, returns no partial value, never hangs") {
  auto [here, there] = mproc::Pipe<std::vector<std::int64_t>>();
  mproc::Process sender(
      [](mproc::Connection<std::vector<std::int64_t>> c) {
        std::vector<std::int64_t> big(std::size_t{4} << 20);
        std::iota(big.begin(), big.end(), 0);
        c.send(big);
      },
      std::move(there));
  sender.start();
  // Nobody reads yet: the sender fills the pipe and blocks in the middle of the message.
  mproc_test::wait_until_blocked(sender.pid(), {SYS_write, SYS_writev});
  sender.kill();
  sender.join();
  bool raised = false;
  try {
    (void)here.recv();
  } catch (const mproc::ProtocolError&) {
    raised = true;  // a stream that ends inside a message
  } catch (const mproc::EOFError&) {
    raised = true;  // Python: "got end of file during message"
  }
  CHECK(raised);
  // And no value after that, at once: the stream is over (Python raises EOFError;
  // mproc may keep reporting the broken stream).
  bool ended = false;
  try {
    (void)here.recv();
  } catch (const mproc::EOFError&) {
    ended = true;
  } catch (const mproc::ProtocolError&) {
    ended = true;
  }
  CHECK(ended);
}
