#pragma once
// This process's pid without a system call each time (glibc no longer caches
// getpid()): a pool checks it on every call, and a call can be a round trip of a few
// microseconds. Forgotten in every child forked through fork() (pthread_atfork).

#include <pthread.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>

namespace mproc::detail {

inline pid_t current_pid() noexcept {
  static std::atomic<pid_t> cached{0};
  static const bool registered =
      (::pthread_atfork(nullptr, nullptr, [] { cached.store(0, std::memory_order_relaxed); }), true);
  (void)registered;
  pid_t pid = cached.load(std::memory_order_relaxed);
  if (pid == 0) {
    pid = ::getpid();
    cached.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

}  // namespace mproc::detail
