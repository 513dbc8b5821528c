#pragma once
// Test helpers that wait until a process or a thread is blocked in a system call
// (a child asleep inside a Queue call, the test's own thread inside a wait it must
// not leave early). The kernel offers no event for that, so these look every
// millisecond; they are test-only, and the ctest timeout ends a wait that never
// comes true.

#include <catch2/catch.hpp>

#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace mproc_test {

/// The system calls a wait on descriptors goes through (Process::join, Connection::poll).
inline std::vector<long> poll_calls() {
#ifdef SYS_poll
  return {SYS_poll, SYS_ppoll};
#else
  return {SYS_ppoll};
#endif
}

/// Whether the task (a /proc/<pid> or /proc/self/task/<tid> directory) is asleep
/// in one of calls (not stopped by a signal in it). Sets ended if it is gone or a
/// zombie.
inline bool blocked_in(const std::string& task, const std::vector<long>& calls, bool& ended) {
  std::ifstream stat(task + "/stat");
  const std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');  // "pid (comm) state ...", and comm may hold anything
  const char state = close != std::string::npos && close + 2 < text.size() ? text[close + 2] : 'X';
  ended = state == 'Z' || state == 'X';
  std::ifstream syscall(task + "/syscall");
  long nr = -1;
  return (state == 'S' || state == 'D') && syscall >> nr && std::find(calls.begin(), calls.end(), nr) != calls.end();
}

/// Blocks until process pid sleeps in one of calls (futex: inside a Queue call). It
/// must not end first.
inline void wait_until_blocked(pid_t pid, const std::vector<long>& calls = {SYS_futex}) {
  const std::string task = "/proc/" + std::to_string(pid);
  for (bool ended = false; !blocked_in(task, calls, ended);) {
    REQUIRE_FALSE(ended);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// Runs action on a thread of its own once the thread that made this is blocked in
/// one of calls; destroying it first gives up (the action then never runs).
class WhenBlocked {
 public:
  WhenBlocked(std::vector<long> calls, std::function<void()> action)
      : task_("/proc/self/task/" + std::to_string(::gettid())),
        calls_(std::move(calls)),
        action_(std::move(action)),
        thread_([this] { run(); }) {}
  WhenBlocked(const WhenBlocked&) = delete;
  WhenBlocked& operator=(const WhenBlocked&) = delete;
  ~WhenBlocked() {
    stop_.store(true);
    thread_.join();
  }

 private:
  void run() {
    for (bool ended = false; !stop_.load(); std::this_thread::sleep_for(std::chrono::milliseconds(1))) {
      if (blocked_in(task_, calls_, ended)) {
        action_();
        return;
      }
    }
  }

  std::string task_;
  std::vector<long> calls_;
  std::function<void()> action_;
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: it starts once the rest is in place
};

}  // namespace mproc_test
