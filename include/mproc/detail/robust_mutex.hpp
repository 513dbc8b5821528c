#pragma once
// A mutex and a condition variable that work across processes when placed in shared
// memory, and survive the death of a holder: the next locker gets the mutex (and
// learns that its owner died) instead of hanging forever. Boost's
// interprocess_mutex gives up for good on EOWNERDEAD; this one marks the mutex
// consistent again, so the data it guards stays usable.

#include <mproc/errors.hpp>

#include <pthread.h>
#include <time.h>

#include <cerrno>
#include <chrono>
#include <cstdint>

namespace mproc::detail {

inline timespec to_timespec(std::chrono::steady_clock::time_point deadline) {
  // steady_clock is CLOCK_MONOTONIC on Linux, which the *clock* pthread calls take.
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return ts;
}

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

/// A process-shared condition variable on CLOCK_MONOTONIC, used with RobustMutex.
class SharedCondition {
 public:
  SharedCondition() {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    const int rc = pthread_cond_init(&c_, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0) throw OSError("pthread_cond_init", rc);
  }
  SharedCondition(const SharedCondition&) = delete;
  SharedCondition& operator=(const SharedCondition&) = delete;

  /// Waits (m locked by the caller). Returns owner_died if, on wake-up, the mutex
  /// had to be recovered from a dead owner.
  LockResult wait(RobustMutex& m) { return m.finish(pthread_cond_wait(&c_, m.native()), "pthread_cond_wait"); }

  /// As wait(), until the deadline; timed_out if it passed (m is locked again).
  LockResult wait_until(RobustMutex& m, std::chrono::steady_clock::time_point deadline) {
    const timespec ts = to_timespec(deadline);
    const int rc = pthread_cond_clockwait(&c_, m.native(), CLOCK_MONOTONIC, &ts);
    if (rc == ETIMEDOUT) return LockResult::timed_out;
    return m.finish(rc, "pthread_cond_clockwait");
  }

  void notify_one() noexcept { pthread_cond_signal(&c_); }
  void notify_all() noexcept { pthread_cond_broadcast(&c_); }

 private:
  pthread_cond_t c_;
};

}  // namespace mproc::detail
