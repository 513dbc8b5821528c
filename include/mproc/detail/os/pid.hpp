#pragma once
// This process's pid and the calling thread's id without a system call each time
// (glibc caches neither): a pool checks the pid on every call, a call can be a round
// trip of a few microseconds, and an RLock compares the thread id on every acquire and
// release of a lock that costs tens of nanoseconds. Forgotten in every child forked
// through fork() (pthread_atfork; the child's one thread is the one that forked).

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

inline pid_t current_tid() noexcept {
  thread_local pid_t cached = 0;
  static const bool registered = (::pthread_atfork(nullptr, nullptr, [] { cached = 0; }), true);
  (void)registered;
  if (cached == 0) cached = ::gettid();
  return cached;
}

}  // namespace mproc::detail
