#pragma once
// A mutex and a condition variable that work across processes when placed in shared
// memory, and survive the death of a holder: the next locker gets the mutex (and
// learns that its owner died) instead of hanging forever. Boost's
// interprocess_mutex gives up for good on EOWNERDEAD; this one marks the mutex
// consistent again, so the data it guards stays usable.

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/os/pid.hpp>
#include <mproc/detail/shm/crash_safety.hpp>  // fault_point
#include <mproc/errors.hpp>

#include <linux/futex.h>  // FUTEX_TID_MASK, FUTEX_OWNER_DIED
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>

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
///
/// Waits are cut into wait_slice pieces. glibc keeps "others are waiting" in the
/// futex word, and a woken waiter that is killed before it takes the mutex loses it
/// when someone else took the mutex meanwhile without that mark: the remaining
/// waiters would sleep on a free mutex until yet another process contends. Each new
/// slice looks at the word again (and marks it), so they sleep one slice at most.
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
  LockResult lock() {
    // A free mutex costs one attempt and no clock reading.
    const int rc = pthread_mutex_trylock(&m_);
    if (rc != EBUSY) return finish(rc, "pthread_mutex_trylock");
    return lock_until(Deadline::forever());
  }

  /// Locks unless it is already locked (by anyone).
  LockResult try_lock() {
    const int rc = pthread_mutex_trylock(&m_);
    if (rc == EBUSY) return LockResult::timed_out;
    return finish(rc, "pthread_mutex_trylock");
  }

  /// Blocks until locked or the deadline passes. Out of line, so that lock()'s fast
  /// path stays a few instructions wherever it is inlined.
  [[gnu::noinline]] LockResult lock_until(Deadline deadline) {
    for (;;) {
      // The coarse clock is a plain read, and a slice a few milliseconds short is fine.
      timespec now{};
      ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
      const auto slice_end =
          steady_clock::time_point(std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec)) +
          wait_slice;
      const bool last = deadline.when() <= slice_end;  // never for forever()
      const timespec ts = to_timespec(last ? deadline.when() : slice_end);
      int rc;
      {
        const ForkGate::Asleep asleep;  // a LogListener's thread: forks may happen meanwhile
        rc = pthread_mutex_clocklock(&m_, CLOCK_MONOTONIC, &ts);
      }
      if (rc != ETIMEDOUT) return finish(rc, "pthread_mutex_clocklock");
      if (last) return LockResult::timed_out;
    }
  }

  void unlock() noexcept { pthread_mutex_unlock(&m_); }

  pthread_mutex_t* native() noexcept { return &m_; }

  /// The thread that holds it, in any process (a robust mutex keeps its holder's
  /// thread id in its futex word); 0 if it is free or its holder died with it.
  pid_t holder() noexcept { return static_cast<pid_t>(word() & FUTEX_TID_MASK); }
  /// Whether the calling thread holds it.
  bool held_by_caller() noexcept { return holder() == current_tid(); }
  /// Whether a holder died with it and nobody has taken it over yet.
  bool abandoned() noexcept { return (word() & FUTEX_OWNER_DIED) != 0; }
  /// How many times it was taken over from a dead holder.
  std::uint32_t recoveries() const noexcept { return recoveries_.load(std::memory_order_relaxed); }

  /// Turns a lock result from a wait on this mutex into owner_died/acquired.
  LockResult finish(int rc, const char* call) {
    if (rc == 0) return LockResult::acquired;
    if (rc == EOWNERDEAD) {
      recoveries_.fetch_add(1, std::memory_order_relaxed);
      pthread_mutex_consistent(&m_);
      return LockResult::owner_died;
    }
    throw OSError(call, rc);
  }

 private:
  unsigned word() noexcept { return static_cast<unsigned>(__atomic_load_n(&m_.__data.__lock, __ATOMIC_RELAXED)); }

  pthread_mutex_t m_;
  std::atomic<std::uint32_t> recoveries_{0};
};

/// What a wait on a SharedCondition found. Both can be true at once: the deadline
/// passed, and taking the mutex back meant recovering it from an owner that died.
struct WaitResult {
  bool timed_out = false;   // the deadline passed and no notify came for this waiter
  bool owner_died = false;  // the mutex was taken back from a dead owner
};

/// A condition variable for RobustMutex across processes. Built on a futex word, not
/// a pthread condition: glibc's process-shared condition keeps per-waiter state, and
/// a waiter killed inside pthread_cond_wait makes the next broadcast wait for it
/// forever. Here waiters sleep on a sequence number, and what a notify promises is
/// kept in counters under the mutex, so that no process's death can lose it:
/// - notify(n) hands out up to n wake-ups, one per waiter registered and not yet
///   served; any waiter of the round may claim one, so one handed to a waiter that
///   is killed before it claims it goes to another within a wait_slice. (A waiter
///   killed while waiting stays counted: a wake-up meant for it may later go to a
///   newcomer, an early return its caller's predicate absorbs.)
/// - notify_all() ends the round: every waiter registered before it returns.
/// - a notifier killed before its wake-up, or a holder killed with the mutex, is
///   seen by the waiters within a slice; those return early so that the caller
///   re-checks what it waits for.
/// Every member expects the caller to hold the mutex (wait_until checks it).
class SharedCondition {
 public:
  SharedCondition() = default;
  SharedCondition(const SharedCondition&) = delete;
  SharedCondition& operator=(const SharedCondition&) = delete;

  /// Waits (m locked by the caller) until notified or the deadline passes. May
  /// return early (see above). m is locked again when this returns or throws.
  /// Throws OSError(EPERM) if the caller does not hold m, as pthread_cond_wait would.
  WaitResult wait_until(RobustMutex& m, Deadline deadline) {
    if (!m.held_by_caller()) throw OSError("pthread_mutex_unlock", EPERM);
    const std::uint32_t round = round_;
    const std::uint32_t recoveries = m.recoveries();
    ++sleepers_;
    // Read under the mutex: a notify after this changes the word, so the futex
    // wait below returns at once instead of missing it.
    std::uint32_t seen = seq_.load(std::memory_order_acquire);
    m.unlock();
    Relock relock(m);
    for (;;) {
      const bool in_time = futex_wait(seq_, seen, deadline);
      // A slice ended with nothing new: sleep on without touching the mutex.
      if (in_time && seq_.load(std::memory_order_acquire) == seen && m.recoveries() == recoveries && !m.abandoned()) {
        continue;
      }
      fault_point("condition.relock");
      const bool died = relock.take() == LockResult::owner_died;
      if (round_ != round) return {false, died};  // notify_all(); it reset the counts
      if (tokens_ > 0) {
        --tokens_;  // before sleepers_: tokens_ never exceeds it, whenever this dies
        leave();
        return {false, died};
      }
      if (!in_time || died || m.recoveries() != recoveries) {
        leave();
        return {!in_time, died};
      }
      seen = seq_.load(std::memory_order_acquire);  // a wake-up for another waiter
      relock.give_back();
    }
  }

  /// Wakes up to n waiters (fewer if fewer wait).
  void notify(std::uint32_t n = 1) noexcept {
    if (sleepers_ <= tokens_ || n == 0) return;
    const std::uint32_t k = std::min(n, sleepers_ - tokens_);
    tokens_ += k;
    wake(static_cast<int>(std::min<std::uint32_t>(k, INT_MAX)));
  }
  /// Wakes every waiter.
  void notify_all() noexcept {
    if (sleepers_ == 0) return;  // every waiter of earlier rounds has its wake-up
    ++round_;  // first: once it is stored, every waiter of the round is released
    tokens_ = 0;
    sleepers_ = 0;
    wake(INT_MAX);
  }

 private:
  // Takes the mutex back in a wait, and, should the wait throw, when the scope
  // unwinds: the caller's guard will unlock a mutex it believes it holds.
  class Relock {
   public:
    explicit Relock(RobustMutex& m) noexcept : m_(m) {}
    Relock(const Relock&) = delete;
    Relock& operator=(const Relock&) = delete;
    ~Relock() {
      if (held_) return;
      try {
        (void)m_.lock();  // an owner death found here is lost with the exception in flight
      } catch (...) {
      }
    }
    LockResult take() {
      const LockResult r = m_.lock();
      held_ = true;
      return r;
    }
    void give_back() noexcept {
      held_ = false;
      m_.unlock();
    }

   private:
    RobustMutex& m_;
    bool held_ = false;
  };

  void wake(int n) noexcept {
    seq_.fetch_add(1, std::memory_order_release);
    fault_point("condition.notify");
    futex_wake(seq_, n);
  }
  void leave() noexcept {
    if (sleepers_ > 0) --sleepers_;
  }

  std::atomic<std::uint32_t> seq_{0};  // the futex word: bumped by every notify
  // Under the mutex:
  std::uint32_t round_ = 0;     // notify_all() calls
  std::uint32_t sleepers_ = 0;  // waiters of this round that have not returned
  std::uint32_t tokens_ = 0;    // wake-ups handed out in this round, not yet claimed
};

}  // namespace mproc::detail
