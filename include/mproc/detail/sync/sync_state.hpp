#pragma once
// The shared-memory layouts behind mproc's locks, semaphores, events, conditions and
// barriers.

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/sync/robust_mutex.hpp>
#include <mproc/errors.hpp>

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

namespace mproc::detail {

/// Lock and RLock.
struct LockState {
  explicit LockState(bool recursive_)
      : mutex(recursive_ ? PTHREAD_MUTEX_RECURSIVE : PTHREAD_MUTEX_ERRORCHECK), recursive(recursive_) {}
  RobustMutex mutex;
  const bool recursive;
  // Written only by the holder, but read by anyone (relaxed: a reader that is not
  // the holder only needs to see that it is not the holder).
  std::atomic<std::uint32_t> depth{0};    // how many times the holder has it (RLock)
  std::atomic<std::int32_t> owner_tid{0}; // the holder's thread (RLock)
  std::atomic<bool> owner_died{false};    // the holder took it over from a dead one
  // Its last handle in the holder's process went while held (detail/sync/lock_ref.hpp):
  // the next locker takes it over as from a dead holder.
  std::atomic<bool> dropped_while_held{false};
  std::atomic<std::uint64_t> deaths{0};
};

/// Semaphore and BoundedSemaphore.
struct SemaphoreState {
  SemaphoreState(std::int64_t initial, std::int64_t max) : value(initial), bound(max) {}
  RobustMutex mutex;
  SharedCondition available;
  std::int64_t value;
  const std::int64_t bound;  // the most release() may raise value to; -1: no bound
  std::atomic<std::uint64_t> deaths{0};
};

/// Event: one futex word and no lock, so no process stopped or killed anywhere in a
/// set(), clear() or wait() can hold up the others.
struct EventState {
  // The flag (bit 0) and how many times set() was called (the bits above), in one
  // word: set() publishes both in one atomic step, so a setter killed anywhere leaves
  // the two in agreement, and a waiter tells a set() it slept through (then cleared)
  // from none. The count wraps at 2^31 sets, far more than a waiter sleeps through.
  std::atomic<std::uint32_t> sets_and_flag{0};
};

/// Condition (its lock lives in a LockState of its own).
struct ConditionState {
  SharedCondition cond;
};

/// Barrier.
struct BarrierState {
  explicit BarrierState(std::uint64_t n) : parties(n) {}
  RobustMutex mutex;
  SharedCondition changed;
  const std::uint64_t parties;
  std::uint64_t waiting = 0;     // parties in the current round
  std::uint64_t generation = 0;  // completed rounds
  std::uint64_t resets = 0;      // reset() calls: waiters of an older reset are released broken
  bool broken = false;
  std::atomic<std::uint64_t> deaths{0};
};

}  // namespace mproc::detail
