#pragma once
// A mutex and a condition variable that work across processes when placed in shared
// memory, and survive the death of a holder: the next locker gets the mutex (and
// learns that its owner died) instead of hanging forever. Boost's
// interprocess_mutex gives up for good on EOWNERDEAD; this one marks the mutex
// consistent again, so the data it guards stays usable.

#include <mproc/detail/crash_safety.hpp>  // fault_point
#include <mproc/detail/deadline.hpp>
#include <mproc/detail/futex.hpp>
#include <mproc/errors.hpp>

#include <pthread.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <optional>

namespace mproc::detail {

/// What a lock attempt found.
enum class LockResult {
  acquired,        // locked normally
  owner_died,      // locked, but the previous owner died holding it
  timed_out,       // not locked
};

/// A process-shared, robust pthread mutex. Construct it in place in shared memory
/// before any other process can see it; it needs no destruction. type is a pthread
/// mutex type: PTHREAD_MUTEX_ERRORCHECK makes a relock by the holder fail with
/// EDEADLK instead of hanging, PTHREAD_MUTEX_RECURSIVE lets the holder relock.
class RobustMutex {
 public:
  explicit RobustMutex(int type = PTHREAD_MUTEX_NORMAL) {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, type);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    const int rc = pthread_mutex_init(&m_, &attr);
    pthread_mutexattr_destroy(&attr);
    if (rc != 0) throw OSError("pthread_mutex_init", rc);
  }
  RobustMutex(const RobustMutex&) = delete;
  RobustMutex& operator=(const RobustMutex&) = delete;

  /// Blocks until locked. A dead owner's mutex is recovered (owner_died).
  LockResult lock() { return finish(pthread_mutex_lock(&m_), "pthread_mutex_lock"); }

  /// Locks unless it is already locked (by anyone).
  LockResult try_lock() {
    const int rc = pthread_mutex_trylock(&m_);
    if (rc == EBUSY) return LockResult::timed_out;
    return finish(rc, "pthread_mutex_trylock");
  }

  /// Blocks until locked or the deadline passes.
  LockResult lock_until(std::chrono::steady_clock::time_point deadline) {
    const timespec ts = to_timespec(deadline);
    const int rc = pthread_mutex_clocklock(&m_, CLOCK_MONOTONIC, &ts);
    if (rc == ETIMEDOUT) return LockResult::timed_out;
    return finish(rc, "pthread_mutex_clocklock");
  }

  void unlock() noexcept { pthread_mutex_unlock(&m_); }

  pthread_mutex_t* native() noexcept { return &m_; }

  /// Turns a lock result from a wait on this mutex into owner_died/acquired.
  LockResult finish(int rc, const char* call) {
    if (rc == 0) return LockResult::acquired;
    if (rc == EOWNERDEAD) {
      pthread_mutex_consistent(&m_);
      return LockResult::owner_died;
    }
    throw OSError(call, rc);
  }

 private:
  pthread_mutex_t m_;
};

/// What a wait on a SharedCondition found. Both can be true at once: the deadline
/// passed, and taking the mutex back meant recovering it from an owner that died.
struct WaitResult {
  bool timed_out = false;   // the deadline passed (a notify may still have raced it)
  bool owner_died = false;  // the mutex was taken back from a dead owner
};

/// A condition variable for RobustMutex across processes. Built on a futex word, not
/// a pthread condition: glibc's process-shared condition keeps per-waiter state, and
/// a waiter killed inside pthread_cond_wait makes the next broadcast wait for it
/// forever. Here a waiter only sleeps on a sequence number; a dead one leaves nothing.
class SharedCondition {
 public:
  SharedCondition() = default;
  SharedCondition(const SharedCondition&) = delete;
  SharedCondition& operator=(const SharedCondition&) = delete;

  /// Waits (m locked by the caller) until notified or the deadline passes; a
  /// deadline is_forever() waits without one. Wake-ups may be spurious. m is locked
  /// again when this returns or throws.
  WaitResult wait_until(RobustMutex& m, steady_clock::time_point deadline) {
    // Read under the mutex: a notify after this changes the word, so the futex
    // wait below returns at once instead of missing it.
    const std::uint32_t seen = seq_.load(std::memory_order_acquire);
    // An error-checking mutex the caller does not hold says so here (EPERM), as
    // pthread_cond_wait would; the mutex was not released, so nothing is taken back.
    if (const int rc = pthread_mutex_unlock(m.native()); rc != 0) throw OSError("pthread_mutex_unlock", rc);
    Relock relock(m);
    const bool in_time =
        futex_wait(seq_, seen, is_forever(deadline) ? std::nullopt : std::optional(deadline));
    fault_point("condition.relock");
    return WaitResult{!in_time, relock.take() == LockResult::owner_died};
  }

  void notify_one() noexcept {
    seq_.fetch_add(1, std::memory_order_release);
    futex_wake(seq_, 1);
  }
  void notify_all() noexcept {
    seq_.fetch_add(1, std::memory_order_release);
    futex_wake(seq_);
  }

 private:
  // Takes the mutex back at the end of a wait, or, should the wait throw, when the
  // scope unwinds: the caller's guard will unlock a mutex it believes it holds.
  class Relock {
   public:
    explicit Relock(RobustMutex& m) noexcept : m_(m) {}
    Relock(const Relock&) = delete;
    Relock& operator=(const Relock&) = delete;
    ~Relock() {
      if (taken_) return;
      try {
        (void)m_.lock();  // an owner death found here is lost with the exception in flight
      } catch (...) {
      }
    }
    LockResult take() {
      taken_ = true;
      return m_.lock();
    }

   private:
    RobustMutex& m_;
    bool taken_ = false;
  };

  std::atomic<std::uint32_t> seq_{0};
};

}  // namespace mproc::detail
