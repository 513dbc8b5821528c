#pragma once
// Helpers for the Pool tests: gates that hold a task until the test lets it go (so
// tests wait on events, never on time), counters shared with forked workers, and
// checks that nothing (descriptor, child process) outlives a pool.

#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/shm/shared_mapping.hpp>
#include <mproc/imap.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

namespace mproc_test {

/// A pipe used as a one-way event: wait() blocks until someone, in any process
/// forked after the gate was made, has called open(). Each open(n) lets n waits through.
class Gate {
 public:
  Gate() : pipe_(mproc::detail::make_pipe()) {}

  /// Blocks until one pass is available and takes it.
  void wait() const {
    char c;
    for (;;) {
      const ssize_t r = ::read(pipe_.read.get(), &c, 1);
      if (r == 1) return;
      if (r == 0) throw mproc::OSError("read(gate): no writer left", EPIPE);
      if (errno != EINTR) throw mproc::OSError("read(gate)", errno);
    }
  }
  /// Lets n waits through.
  void open(std::size_t n = 1) const {
    const std::string passes(n, 'x');
    if (!mproc::detail::write_all(pipe_.write.get(), passes.data(), passes.size())) {
      throw mproc::OSError("write(gate)", EPIPE);
    }
  }

 private:
  mproc::detail::PipeEnds pipe_;
};

/// How long a test waits before it treats a blocked task as a hang. Only reached
/// when the behaviour under test is broken; it turns a hang into a failed check.
inline constexpr std::chrono::seconds hang_limit{20};

/// Opens a gate if the test has not stopped it within hang_limit, so that a task
/// blocked on the gate cannot hang the test (and the pool's shutdown) forever.
class GateWatchdog {
 public:
  explicit GateWatchdog(const Gate& gate) : thread_([this, &gate] { run(gate); }) {}
  GateWatchdog(const GateWatchdog&) = delete;
  GateWatchdog& operator=(const GateWatchdog&) = delete;
  ~GateWatchdog() { (void)stop(); }

  /// Stops watching; returns whether the deadline had passed and the gate was opened.
  bool stop() {
    {
      std::lock_guard lock(mutex_);
      stopped_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    return fired_;
  }

 private:
  void run(const Gate& gate) {
    std::unique_lock lock(mutex_);
    if (cv_.wait_for(lock, hang_limit, [this] { return stopped_; })) return;
    fired_ = true;
    gate.open(1000);
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopped_ = false;
  bool fired_ = false;
  std::thread thread_;
};

/// Integers in anonymous shared memory: workers forked after it was made change the
/// very same counters the test reads.
class SharedCounters {
 public:
  explicit SharedCounters(std::size_t n) : map_(n * sizeof(std::atomic<int>)), n_(n) {
    static_assert(std::atomic<int>::is_always_lock_free, "process-shared counters must be lock-free");
    for (std::size_t i = 0; i < n; ++i) new (map_.as<std::atomic<int>>() + i) std::atomic<int>(0);
  }
  std::atomic<int>& operator[](std::size_t i) const { return map_.as<std::atomic<int>>()[i]; }
  std::size_t size() const noexcept { return n_; }

 private:
  mproc::detail::SharedMapping map_;
  std::size_t n_;
};

/// The number of descriptors this process has open.
inline std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// True when this process has no child at all: none running and no zombie.
inline bool has_no_children() {
  int status = 0;
  return ::waitpid(-1, &status, WNOHANG) == -1 && errno == ECHILD;
}

/// True when pid is not (or no longer) a child of this process: it was reaped.
inline bool was_reaped(pid_t pid) {
  int status = 0;
  return ::waitpid(pid, &status, WNOHANG) == -1 && errno == ECHILD;
}

/// True when no process with this pid exists.
inline bool is_gone(pid_t pid) { return ::kill(pid, 0) == -1 && errno == ESRCH; }

/// Each item's outcome from an imap, in the order it yields them: the value, or the
/// exception its next() threw; then the end.
template <class R>
std::vector<std::variant<R, std::exception_ptr>> imap_outcomes(mproc::IMap<R> results) {
  std::vector<std::variant<R, std::exception_ptr>> out;
  for (;;) {
    try {
      auto r = results.next();
      if (!r) return out;
      out.emplace_back(std::move(*r));
    } catch (...) {
      out.emplace_back(std::current_exception());
    }
  }
}

/// Dies by signal sig in the calling process (a worker). The default action is
/// restored first: the test runner's crash handlers, inherited through fork, would
/// otherwise report a failure of their own from inside the worker.
[[noreturn]] inline void die_by_signal(int sig) {
  std::signal(sig, SIG_DFL);
  std::raise(sig);
  std::abort();  // not reached for a fatal signal
}

}  // namespace mproc_test
