#pragma once
// Helpers for the ports of CPython's Lib/test/lock_tests.py and
// Lib/test/_test_multiprocessing.py (tests/test_cpython_sync.cpp,
// tests/test_cpython_shared.cpp): CPython's Bunch (n parties running one function,
// as processes or as threads), checks made inside a party, CPython's _DummyList (a
// log every party appends to) and the hang limit that turns a lost wake-up into a
// failure instead of a hang.

#include <mproc/process.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace mproc_test::cpython {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

/// How long a party may take before the test treats it as hung. Reached only when the
/// behaviour under test is broken; it plays the part of CPython's SHORT_TIMEOUT and
/// of a Barrier's default timeout.
inline constexpr std::chrono::seconds hang_limit{20};
/// CPython's DELTA: how long a test watches for a wake-up that must not come. Such a
/// check cannot fail on a slow machine, only miss a late wrong wake-up.
inline constexpr std::chrono::milliseconds delta{100};
/// The exit code reported for a party killed at the hang limit.
inline constexpr int hung = 1000;

/// A check that failed inside a party (a child process or a thread), where Catch2's
/// CHECK cannot be used.
struct PartyCheckFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Checks ok inside a party: throws, so that a process exits with 1 (mproc::Process
/// prints the message with the process's name) and a thread's bunch reports it.
inline void expect(bool ok, const char* what) {
  if (!ok) throw PartyCheckFailed(std::string("check failed in a party: ") + what);
}

/// n exit codes of 0: what join() returns when every party succeeded.
inline std::vector<int> all_ok(std::size_t n) { return std::vector<int>(n, 0); }

/// How long f() took.
template <class F>
std::chrono::duration<double> time_of(F&& f) {
  const auto start = steady::now();
  f();
  return steady::now() - start;
}

/// CPython's Bunch with processes: each add(f) starts a daemon mproc::Process
/// running f(i), i counting from 0. Destroying the bunch kills what still runs.
class ProcessBunch {
 public:
  ProcessBunch() = default;
  template <class F>
  ProcessBunch(std::size_t n, const F& f) {
    for (std::size_t i = 0; i < n; ++i) add(f);
  }
  ProcessBunch(const ProcessBunch&) = delete;
  ProcessBunch& operator=(const ProcessBunch&) = delete;

  /// Starts one more party running f(its index); returns its pid.
  template <class F>
  pid_t add(const F& f) {
    const int i = static_cast<int>(procs_.size());
    auto party = [f](int index) {
      // The test runner's crash handlers, inherited through fork, would report a
      // party's crash as the test's own: the party dies by the signal instead, and
      // the test sees it in the exit code.
      for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTERM}) std::signal(sig, SIG_DFL);
      f(index);
    };
    mproc::Process& p = procs_.emplace_back(mproc::ProcessOptions{.daemon = true}, party, i);
    p.start();
    return p.pid();
  }
  pid_t pid(std::size_t i) const { return procs_.at(i).pid(); }
  std::size_t size() const noexcept { return procs_.size(); }
  /// Whether party i is still running.
  bool running(std::size_t i) { return procs_.at(i).is_alive(); }

  /// Waits for every party, all of them within the hang limit; returns their exit
  /// codes (0: success), `hung` for a party killed at the limit.
  std::vector<int> join() {
    const auto deadline = steady::now() + hang_limit;
    std::vector<int> codes;
    for (mproc::Process& p : procs_) {
      const auto left = std::max<steady::duration>(deadline - steady::now(), steady::duration::zero());
      if (!p.join(left)) {
        std::fprintf(stderr, "party %s (pid %d) still ran at the hang limit: killed\n", p.name().c_str(),
                     static_cast<int>(p.pid()));
        p.kill();
        p.join();
        codes.push_back(hung);
        continue;
      }
      codes.push_back(p.exitcode().value_or(hung));
    }
    return codes;
  }

 private:
  std::deque<mproc::Process> procs_;  // a deque: a Process does not move while it runs
};

/// CPython's Bunch with threads: n threads run f(i). A thread cannot be killed, so
/// the functions must bound their own waits; one still running at the hang limit
/// ends the test program with a message.
class ThreadBunch {
 public:
  template <class F>
  ThreadBunch(std::size_t n, const F& f) : codes_(n, hung) {
    threads_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) threads_.emplace_back([this, f, i] { run(f, static_cast<int>(i)); });
  }
  ThreadBunch(const ThreadBunch&) = delete;
  ThreadBunch& operator=(const ThreadBunch&) = delete;
  ~ThreadBunch() { (void)join(); }

  /// Waits for every thread; returns 0 for each that returned, 1 for each that threw
  /// (its message on stderr).
  std::vector<int> join() {
    std::unique_lock lock(mutex_);
    if (!done_cv_.wait_for(lock, hang_limit, [this] { return done_ == threads_.size(); })) {
      std::fprintf(stderr, "FAILED: a thread party still ran at the hang limit\n");
      std::fflush(stderr);
      std::_Exit(EXIT_FAILURE);
    }
    lock.unlock();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    return codes_;
  }

 private:
  template <class F>
  void run(const F& f, int i) {
    int code = 0;
    try {
      f(i);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "thread party %d: %s\n", i, e.what());
      code = 1;
    } catch (...) {
      std::fprintf(stderr, "thread party %d: an exception that is not a std::exception\n", i);
      code = 1;
    }
    std::lock_guard lock(mutex_);
    codes_[static_cast<std::size_t>(i)] = code;
    ++done_;
    done_cv_.notify_all();
  }

  std::vector<int> codes_;
  std::mutex mutex_;
  std::condition_variable done_cv_;
  std::size_t done_ = 0;
  std::vector<std::thread> threads_;  // last: the threads start once the rest is in place
};

/// CPython's _DummyList, keeping the items: ints that any thread, or any process
/// forked after the log was made, appends under a Lock. Each append also writes a
/// byte to a pipe, so that the test waits for "k items appended" on the pipe, an
/// event independent of the primitives under test, rather than polling.
class SharedLog {
 public:
  explicit SharedLog(std::size_t capacity = 64) : items_(capacity, 0, lock_), size_(0, lock_) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    read_ = fds[0];
    write_ = fds[1];
  }
  SharedLog(const SharedLog&) = delete;
  SharedLog& operator=(const SharedLog&) = delete;
  ~SharedLog() {
    ::close(read_);
    ::close(write_);
  }

  void append(int x) const {
    {
      std::lock_guard guard(lock_);
      const auto n = static_cast<std::size_t>(size_.value());
      if (n == items_.size()) throw std::length_error("SharedLog is full");
      items_[n] = x;
      size_.value() = static_cast<int>(n + 1);
    }
    const char tick = 'x';
    while (::write(write_, &tick, 1) != 1 && errno == EINTR) {
    }
  }
  std::size_t size() const {
    std::lock_guard guard(lock_);
    return static_cast<std::size_t>(size_.value());
  }
  std::vector<int> items() const {
    std::lock_guard guard(lock_);
    return std::vector<int>(items_.begin(), items_.begin() + size_.value());
  }
  /// The items, sorted (CPython compares sorted(results) where the order is racy).
  std::vector<int> sorted() const {
    std::vector<int> v = items();
    std::sort(v.begin(), v.end());
    return v;
  }
  /// Blocks until at least k items were appended, or the hang limit; returns whether
  /// they were. (Only the test's own process waits on a log.)
  bool wait_size(std::size_t k) const {
    const auto deadline = steady::now() + hang_limit;
    while (size() < k) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - steady::now());
      if (left <= 0ms) return false;
      pollfd p{read_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) > 0) {
        char drain[256];
        (void)!::read(read_, drain, sizeof drain);
      }
    }
    return true;
  }

 private:
  mutable mproc::Lock lock_;
  mproc::Array<int> items_;
  mproc::Value<int> size_;
  int read_ = -1;
  int write_ = -1;
};

}  // namespace mproc_test::cpython
