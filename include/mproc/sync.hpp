#pragma once
// Locks, semaphores, events, conditions and barriers shared between processes:
// Python's multiprocessing Lock, RLock, Semaphore, BoundedSemaphore, Event,
// Condition and Barrier.
//
//   mproc::Lock lock;                    // made before the processes that use it
//   { std::lock_guard guard(lock); ... } // std::lock_guard, std::unique_lock, std::scoped_lock
//   mproc::Event stop;  stop.set();  stop.wait_for(1s);
//
// Each object lives in shared memory (a memfd, nothing in /dev/shm) and is a handle:
// copies, and copies in processes forked after it was made, are the same lock.
// Handles can also be sent to processes that did not inherit them, e.g. as Pool task
// arguments (the codec sends where the object is, not a copy).
//
// Dead holders: every mutex here is a robust pthread mutex. When a process dies
// holding a Lock (or the internal lock of a semaphore, event, barrier or Manager
// container), the next locker does not hang: it gets the lock, and
// Lock::owner_died() tells it that the data the lock guards may be half updated.
// owner_deaths() counts such take-overs over the object's life. A thread that drops
// the last handle in its process of a Lock or RLock it holds abandons it the same way
// (detail/sync/lock_ref.hpp).
//
// Every timed wait blocks with a deadline on CLOCK_MONOTONIC. A wait also wakes every
// 100 ms (detail::wait_slice) to look again, since between processes a wake-up can be
// lost for good (a waker or a woken waiter killed at the wrong instant): no process
// sleeps longer than that on a free lock or on a notify that was already given. A
// signal handled meanwhile does not end a wait: it goes on to its deadline.

#include <mproc/codec.hpp>
#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/os/pid.hpp>
#include <mproc/detail/shm/crash_safety.hpp>
#include <mproc/detail/shm/shared_heap.hpp>
#include <mproc/detail/sync/lock_ref.hpp>
#include <mproc/detail/sync/robust_lock.hpp>
#include <mproc/detail/sync/sync_state.hpp>
#include <mproc/detail/wire/handle_codec.hpp>
#include <mproc/errors.hpp>

#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace mproc {

class Condition;
class BoundedSemaphore;

namespace detail {

/// What Lock and RLock share. Lockable and TimedLockable, with Python's names too.
class LockBase {
 public:
  /// Blocks until this thread holds the lock. If its holder died, takes it over and
  /// owner_died() turns true. Throws ValueError if a Lock (not an RLock) is already
  /// held by this thread: that would deadlock (try_lock_for and try_lock_until too).
  void lock() {
    acquired(checked([this] { return state_->mutex.lock(); }));
  }
  /// Takes the lock if nobody holds it; never blocks. False if anyone holds it,
  /// this thread included (an RLock's holder gets it again).
  bool try_lock() {
    LockResult r;
    try {
      r = state_->mutex.try_lock();
    } catch (const OSError& e) {
      if (e.error_code() == EDEADLK) return false;  // a Lock this thread holds
      throw;
    }
    if (r == LockResult::timed_out) return false;
    acquired(r);
    return true;
  }
  /// Takes the lock, waiting at most timeout; false if it could not.
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout) {
    return lock_until(Deadline::after(timeout));
  }
  /// Takes the lock, waiting until the deadline at most; false if it could not.
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return lock_until(Deadline::until(deadline));
  }
  /// Releases the lock (an RLock once per lock()). Throws ValueError if this thread
  /// does not hold it.
  void unlock() {
    LockState& s = *state_;
    if (s.recursive) return unlock_recursive(s);
    // A Lock (error-checking) says EPERM itself when this thread does not hold it.
    if (const int rc = ::pthread_mutex_unlock(s.mutex.native()); rc != 0) [[unlikely]]
      unlock_failed(rc);
  }

  /// Python's acquire(block): lock() when block, else try_lock(). Returns whether
  /// this thread now holds the lock.
  bool acquire(bool block = true) {
    if (!block) return try_lock();
    lock();
    return true;
  }
  /// Python's acquire(timeout=...): try_lock_for(timeout).
  template <class Rep, class Period>
  bool acquire(const std::chrono::duration<Rep, Period>& timeout) {
    return try_lock_for(timeout);
  }
  /// Python's release(): unlock().
  void release() { unlock(); }

  /// True when the current holder took the lock over from a process (or thread)
  /// that died holding it, or whose process dropped its last handle of the lock while
  /// holding it: what it guards may be half updated. Meaningful to the holder only;
  /// reset by the next normal acquisition.
  bool owner_died() const noexcept { return state_->owner_died.load(relaxed); }
  /// How many times, over the lock's life, a holder died with it and it was taken over.
  std::uint64_t owner_deaths() const noexcept { return state_->deaths.load(std::memory_order_relaxed); }

  /// True if both handles are the same lock.
  friend bool operator==(const LockBase& a, const LockBase& b) noexcept { return a.state_ == b.state_; }

 protected:
  explicit LockBase(bool recursive) : state_(LockRef::make(recursive)) {}
  LockBase(LockRef state, bool recursive) : state_(std::move(state)) {
    if (state_->recursive != recursive) {
      throw ProtocolError(recursive ? "mproc: a Lock handle was decoded as an RLock"
                                    : "mproc: an RLock handle was decoded as a Lock");
    }
  }

 private:
  static constexpr auto relaxed = std::memory_order_relaxed;
  friend class mproc::Condition;
  friend struct mproc::Codec<mproc::Condition>;
  friend class HeldUnlessOwned;
  template <class>
  friend struct ObjectHandleCodec;

  // Locks unless this thread already holds the lock: true if it locked (the caller
  // unlocks), false if the caller's own hold covers it. Lets Value::store() and
  // friends run both inside and outside a section holding get_lock().
  bool lock_unless_held() {
    LockState& s = *state_;
    if (s.recursive) {
      if (s.depth.load(relaxed) > 0 && s.owner_tid.load(relaxed) == detail::current_tid()) return false;
      lock();
      return true;
    }
    try {
      acquired(state_->mutex.lock());
      return true;
    } catch (const OSError& e) {
      if (e.error_code() == EDEADLK) return false;
      throw;
    }
  }

  template <class F>
  LockResult checked(F&& attempt) {
    try {
      return attempt();
    } catch (const OSError& e) {
      if (e.error_code() != EDEADLK) throw;
      throw ValueError("mproc::Lock: this thread already holds the lock, and a Lock is not recursive "
                       "(locking it again would deadlock; use mproc::RLock)");
    }
  }
  bool lock_until(Deadline deadline) {
    const LockResult r = checked([&] { return state_->mutex.lock_until(deadline); });
    if (r == LockResult::timed_out) return false;
    acquired(r);
    return true;
  }
  // Bookkeeping right after the mutex was taken. Only an RLock counts levels.
  void acquired(LockResult r) {
    LockState& s = *state_;
    if (!s.recursive) return note_takeover(s, r == LockResult::owner_died);
    if (r == LockResult::acquired && s.depth.load(relaxed) > 0) {  // the holder again
      s.depth.store(s.depth.load(relaxed) + 1, relaxed);
      return;
    }
    note_takeover(s, r == LockResult::owner_died);
    s.depth.store(1, relaxed);  // pthread restarts a recovered recursive mutex at one level too
    s.owner_tid.store(detail::current_tid(), relaxed);
  }
  static void unlock_recursive(LockState& s) {
    const std::uint32_t depth = s.depth.load(relaxed);
    const std::int32_t tid = s.owner_tid.load(relaxed);
    if (tid != detail::current_tid() || depth == 0) throw not_held("unlock");
    s.depth.store(depth - 1, relaxed);
    if (depth == 1) s.owner_tid.store(0, relaxed);
    if (const int rc = ::pthread_mutex_unlock(s.mutex.native()); rc != 0) {
      // This thread does not hold it after all (a recycled thread id).
      s.depth.store(depth, relaxed);
      s.owner_tid.store(tid, relaxed);
      unlock_failed(rc);
    }
  }
  [[noreturn]] static void unlock_failed(int rc) {
    if (rc == EPERM) throw not_held("unlock");
    throw OSError("pthread_mutex_unlock", rc);
  }
  // Records whether the lock, just taken, was taken over from a holder that died or
  // that dropped its last handle while holding it (see detail/sync/lock_ref.hpp).
  static void note_takeover(LockState& s, bool owner_died) {
    if (s.dropped_while_held.load(relaxed)) [[unlikely]] {
      s.dropped_while_held.store(false, relaxed);
      owner_died = true;
    }
    if (owner_died) s.deaths.fetch_add(1, relaxed);
    s.owner_died.store(owner_died, relaxed);
  }
  static ValueError not_held(const char* what) {
    return ValueError(std::string("mproc: ") + what + " of a lock this thread does not hold");
  }

  // Gives an RLock back the levels wait_on() released, when the wait returns or
  // throws (c's wait has taken the mutex itself back by then, at one level).
  struct RestoreLevels {
    RestoreLevels(LockState& state, std::uint32_t levels) noexcept : s(state), depth(levels) {}
    LockState& s;
    std::uint32_t depth;
    RestoreLevels(const RestoreLevels&) = delete;
    RestoreLevels& operator=(const RestoreLevels&) = delete;
    ~RestoreLevels() {
      if (depth == 0) return;  // not an RLock
      for (std::uint32_t i = 1; i < depth; ++i) (void)::pthread_mutex_lock(s.mutex.native());
      s.depth.store(depth, relaxed);
      s.owner_tid.store(detail::current_tid(), relaxed);
    }
  };

  // Waits on c with this lock fully released (all levels of an RLock), then takes
  // it back as it was, whether the wait returns or throws. owner_died() then says
  // whether taking it back meant recovering it from a dead holder.
  WaitResult wait_on(SharedCondition& c, Deadline deadline) {
    LockState& s = *state_;
    const std::uint32_t depth = s.recursive ? s.depth.load(relaxed) : 0;
    if (s.recursive) {
      if (s.owner_tid.load(relaxed) != detail::current_tid() || depth == 0) throw not_held("Condition wait");
      for (std::uint32_t i = 1; i < depth; ++i) ::pthread_mutex_unlock(s.mutex.native());
      s.depth.store(0, relaxed);
      s.owner_tid.store(0, relaxed);
    }
    const RestoreLevels restore{s, depth};
    WaitResult r;
    try {
      r = c.wait_until(s.mutex, deadline);
    } catch (const OSError& e) {
      if (e.error_code() == EPERM) throw not_held("Condition wait");  // a Lock this thread did not hold
      throw;
    }
    note_takeover(s, r.owner_died);
    return r;
  }

  LockRef state_;
};

/// Holds lock for a scope unless this thread already holds it (see
/// LockBase::lock_unless_held).
class HeldUnlessOwned {
 public:
  explicit HeldUnlessOwned(LockBase& lock) : lock_(lock), locked_(lock.lock_unless_held()) {}
  HeldUnlessOwned(const HeldUnlessOwned&) = delete;
  HeldUnlessOwned& operator=(const HeldUnlessOwned&) = delete;
  ~HeldUnlessOwned() {
    if (locked_) lock_.unlock();
  }

 private:
  LockBase& lock_;
  bool locked_;
};

}  // namespace detail

/// Python's multiprocessing.Lock: a mutex shared between processes. Not recursive:
/// relocking it from the thread that holds it throws ValueError instead of
/// deadlocking. Unlike Python's Lock, only the holder may unlock it (C++'s rule).
/// See detail::LockBase for the members.
class Lock : public detail::LockBase {
 public:
  /// A new, unlocked lock in shared memory.
  Lock() : LockBase(false) {}
 private:
  static constexpr const char* type_label = "mproc::Lock";  // for error messages
  friend struct detail::ObjectHandleCodec<Lock>;
  explicit Lock(detail::LockRef state) : LockBase(std::move(state), false) {}
};

/// Python's multiprocessing.RLock: a lock its holder may take again; it is free once
/// unlocked as many times as it was locked. See detail::LockBase for the members.
class RLock : public detail::LockBase {
 public:
  /// A new, unlocked recursive lock in shared memory.
  RLock() : LockBase(true) {}
 private:
  static constexpr const char* type_label = "mproc::RLock";  // for error messages
  friend struct detail::ObjectHandleCodec<RLock>;
  explicit RLock(detail::LockRef state) : LockBase(std::move(state), true) {}
};

/// Python's multiprocessing.Semaphore: a counter that acquire() decrements, waiting
/// while it is zero, and release() increments. Lockable too (lock() = acquire(),
/// unlock() = release()), so std::lock_guard works like Python's `with sem:`.
class Semaphore {
 public:
  /// A semaphore whose counter starts at value (Python's default is 1).
  explicit Semaphore(std::int64_t value = 1) : Semaphore(value, -1) {}

  /// Python's acquire(block): waits for the counter to be positive and decrements
  /// it; without block, only if it already is. Returns whether it decremented.
  bool acquire(bool block = true) { return block ? acquire_until(detail::Deadline::forever()) : try_acquire(); }
  /// Python's acquire(timeout=...): try_acquire_for(timeout).
  template <class Rep, class Period>
  bool acquire(const std::chrono::duration<Rep, Period>& timeout) {
    return try_acquire_for(timeout);
  }
  /// Decrements the counter if it is positive; never blocks.
  bool try_acquire() { return acquire_until(detail::Deadline::no_wait()); }
  /// As acquire(), waiting at most timeout; false if the counter stayed zero.
  template <class Rep, class Period>
  bool try_acquire_for(const std::chrono::duration<Rep, Period>& timeout) {
    return acquire_until(detail::Deadline::after(timeout));
  }
  /// As acquire(), waiting until the deadline at most.
  template <class Clock, class Duration>
  bool try_acquire_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return acquire_until(detail::Deadline::until(deadline));
  }
  /// Adds n to the counter and wakes the waiters. A BoundedSemaphore throws
  /// ValueError (and changes nothing) if that would take it above its initial value.
  void release(std::int64_t n = 1) {
    if (n <= 0) throw ValueError("mproc::Semaphore::release: n must be positive");
    detail::SemaphoreState& s = *state_;
    detail::RobustLock guard(s.mutex, s.deaths);
    if (s.bound >= 0 && s.value + n > s.bound) {
      throw ValueError("mproc::BoundedSemaphore released too many times (above its initial value " +
                       std::to_string(s.bound) + ")");
    }
    s.value += n;
    // Every waiter, even for one unit: a waiter woken alone and killed before it took
    // the unit would leave the others asleep beside a positive counter. The others
    // just find the counter at zero again and go back to sleep.
    s.available.notify_all();
  }
  /// The counter now (Python's get_value()).
  std::int64_t get_value() const {
    detail::SemaphoreState& s = *state_;
    detail::RobustLock guard(s.mutex, s.deaths);
    return s.value;
  }
  /// acquire(), for std::lock_guard and std::unique_lock.
  void lock() { acquire(); }
  /// try_acquire(), for std::unique_lock.
  bool try_lock() { return try_acquire(); }
  /// release(), for std::lock_guard and std::unique_lock.
  void unlock() { release(); }
  /// How many times a process died holding the semaphore's internal lock. (A process
  /// that dies between acquire() and release() is not a death here: as in Python,
  /// its unit is simply never given back.)
  std::uint64_t owner_deaths() const noexcept { return state_->deaths.load(std::memory_order_relaxed); }

 protected:
  static constexpr const char* type_label = "mproc::Semaphore";  // for error messages
  Semaphore(std::int64_t value, std::int64_t bound)
      : state_(value < 0 ? throw ValueError("mproc::Semaphore: the initial value must not be negative")
                         : detail::SharedObject<detail::SemaphoreState>::make(0, value, bound)) {}
  explicit Semaphore(detail::SharedObject<detail::SemaphoreState> state) : state_(std::move(state)) {}

 private:
  friend struct detail::ObjectHandleCodec<Semaphore>;
  friend struct detail::ObjectHandleCodec<BoundedSemaphore>;

  bool acquire_until(detail::Deadline deadline) {
    detail::SemaphoreState& s = *state_;
    detail::RobustLock guard(s.mutex, s.deaths);
    while (s.value <= 0) {
      if (deadline.is_no_wait() || !guard.wait_until(s.available, deadline)) {
        if (s.value > 0) break;
        return false;
      }
    }
    --s.value;
    return true;
  }

  detail::SharedObject<detail::SemaphoreState> state_;
};

/// Python's multiprocessing.BoundedSemaphore: a Semaphore whose release() throws
/// ValueError rather than raise the counter above its initial value.
class BoundedSemaphore : public Semaphore {
 public:
  /// A bounded semaphore whose counter starts, and is capped, at value.
  explicit BoundedSemaphore(std::int64_t value = 1) : Semaphore(value, value) {}
 private:
  static constexpr const char* type_label = "mproc::BoundedSemaphore";  // for error messages
  friend struct detail::ObjectHandleCodec<BoundedSemaphore>;
  explicit BoundedSemaphore(detail::SharedObject<detail::SemaphoreState> state) : Semaphore(check(std::move(state))) {}
  static detail::SharedObject<detail::SemaphoreState> check(detail::SharedObject<detail::SemaphoreState> state) {
    if (state->bound < 0) throw ProtocolError("mproc: a Semaphore handle was decoded as a BoundedSemaphore");
    return state;
  }
};

/// Python's multiprocessing.Event: a flag that processes wait for. As threading.Event:
/// a waiter that a set() woke returns true even if clear() came before it ran.
class Event {
 public:
  /// A new event, not set.
  Event() : state_(detail::SharedObject<detail::EventState>::make(0)) {}

  /// True if the flag is set. Never blocks.
  bool is_set() const noexcept { return (state_->sets_and_flag.load(std::memory_order_acquire) & 1) != 0; }
  /// Sets the flag and wakes every waiter.
  void set() {
    std::atomic<std::uint32_t>& word = state_->sets_and_flag;
    std::uint32_t seen = word.load(std::memory_order_relaxed);
    while (!word.compare_exchange_weak(seen, (seen | 1) + 2, std::memory_order_release, std::memory_order_relaxed)) {
    }
    // A setter killed here leaves its waiters to see the word within a wait slice.
    detail::fault_point("event.wake");
    detail::futex_wake(word);
  }
  /// Clears the flag.
  void clear() { state_->sets_and_flag.fetch_and(~std::uint32_t{1}, std::memory_order_release); }
  /// Blocks until the flag is set.
  void wait() { wait_until_steady(detail::Deadline::forever()); }
  /// Blocks until the flag is set or timeout passes; returns true if it was set
  /// meanwhile (even if cleared since), false on timeout.
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_until_steady(detail::Deadline::after(timeout));
  }
  /// Blocks until the flag is set or the deadline passes; returns as wait_for does.
  template <class Clock, class Duration>
  bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return wait_until_steady(detail::Deadline::until(deadline));
  }

 private:
  static constexpr const char* type_label = "mproc::Event";  // for error messages
  friend struct detail::ObjectHandleCodec<Event>;
  explicit Event(detail::SharedObject<detail::EventState> state) : state_(std::move(state)) {}

  bool wait_until_steady(detail::Deadline deadline) {
    std::atomic<std::uint32_t>& word = state_->sets_and_flag;
    // While the flag is down only a set() changes the word.
    const std::uint32_t seen = word.load(std::memory_order_acquire);
    if ((seen & 1) != 0) return true;
    while (word.load(std::memory_order_acquire) == seen) {
      if (!detail::futex_wait(word, seen, deadline)) return word.load(std::memory_order_acquire) != seen;
    }
    return true;
  }

  detail::SharedObject<detail::EventState> state_;
};

/// Python's multiprocessing.Condition: waits for a change that other processes
/// announce with notify(), under a Lock or RLock. Lockable itself (it locks its
/// lock), so `std::unique_lock guard(cond);` is Python's `with cond:`.
///
/// C++ argument order for the predicate forms: wait_for(timeout, pred) where Python
/// has wait_for(pred, timeout).
///
/// notify(n) wakes up to n waiters, as in Python; a woken waiter killed before it
/// returns passes its wake-up on to another. A wait() may also return without a
/// notify: when a process died holding the lock during it (what it was to announce
/// may be done, its notify never sent), and, once per waiter killed inside wait()
/// and later notified, a waiter that came afterwards. The predicate forms absorb both.
class Condition {
 public:
  /// A condition with a new RLock of its own (Python's default).
  Condition() : Condition(RLock()) {}
  /// A condition using lock, shared with whoever else holds that lock.
  explicit Condition(const Lock& lock) : lock_(lock), state_(make_state()) {}
  /// A condition using the recursive lock; wait() releases all of its levels.
  explicit Condition(const RLock& lock) : lock_(lock), state_(make_state()) {}

  /// Locks the condition's lock.
  void lock() { lock_.lock(); }
  /// Locks the condition's lock if free.
  bool try_lock() { return lock_.try_lock(); }
  /// Unlocks the condition's lock.
  void unlock() { lock_.unlock(); }
  /// Python's acquire(): locks the condition's lock.
  bool acquire(bool block = true) { return lock_.acquire(block); }
  /// Python's release(): unlocks the condition's lock.
  void release() { lock_.unlock(); }

  /// Releases the lock (held by this thread), waits for a notify, takes the lock back.
  /// May return early (see above). Throws ValueError if this thread does not hold
  /// the lock.
  void wait() { (void)lock_.wait_on(state_->cond, detail::Deadline::forever()); }
  /// Waits (as wait()) until pred() is true; pred is evaluated with the lock held.
  template <class Predicate>
  void wait(Predicate pred) {
    while (!pred()) wait();
  }
  /// As wait(), for at most timeout; false if it timed out.
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_steady(detail::Deadline::after(timeout));
  }
  /// Waits until pred() is true or timeout passes; returns pred().
  template <class Rep, class Period, class Predicate>
  bool wait_for(const std::chrono::duration<Rep, Period>& timeout, Predicate pred) {
    return wait_steady(detail::Deadline::after(timeout), pred);
  }
  /// As wait(), until the deadline at most; false if it passed.
  template <class Clock, class Duration>
  bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    return wait_steady(detail::Deadline::until(deadline));
  }
  /// Waits until pred() is true or the deadline passes; returns pred().
  template <class Clock, class Duration, class Predicate>
  bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline, Predicate pred) {
    return wait_steady(detail::Deadline::until(deadline), pred);
  }

  /// Wakes up to n waiters (none if n <= 0). Throws ValueError if this thread does
  /// not hold the lock (Python raises RuntimeError).
  void notify(int n = 1) {
    check_held("notify");
    if (n > 0) state_->cond.notify(static_cast<std::uint32_t>(n));
  }
  /// Wakes every waiter. Throws ValueError if this thread does not hold the lock.
  void notify_all() {
    check_held("notify_all");
    state_->cond.notify_all();
  }

  /// True when the current holder took the lock over from a process that died holding
  /// it; after a wait, whether taking the lock back did (timed out or not).
  bool owner_died() const noexcept { return lock_.owner_died(); }

 private:
  friend struct Codec<Condition>;
  Condition(detail::LockBase lock, detail::SharedObject<detail::ConditionState> state)
      : lock_(std::move(lock)), state_(std::move(state)) {}
  static detail::SharedObject<detail::ConditionState> make_state() {
    return detail::SharedObject<detail::ConditionState>::make(0);
  }

  bool wait_steady(detail::Deadline deadline) { return !lock_.wait_on(state_->cond, deadline).timed_out; }
  // The notify counts live under the lock: a notify without it would race the waiters.
  void check_held(const char* what) {
    if (lock_.state_->mutex.held_by_caller()) return;
    throw ValueError(std::string("mproc::Condition::") + what +
                     ": this thread does not hold the condition's lock; lock it first "
                     "(std::unique_lock guard(cond); or cond.acquire()), as for wait()");
  }
  template <class Predicate>
  bool wait_steady(detail::Deadline deadline, Predicate& pred) {
    while (!pred()) {
      if (!wait_steady(deadline)) return pred();
    }
    return true;
  }

  detail::LockBase lock_;
  detail::SharedObject<detail::ConditionState> state_;
};

/// Python's multiprocessing.Barrier: parties processes (or threads) wait until all
/// of them have called wait(), then all go on.
///
/// A party that times out breaks the barrier: the others get BrokenBarrierError, as
/// in Python, until reset(). A process that dies while holding the barrier's internal
/// lock breaks it too (the others learn of it instead of waiting forever), whichever
/// call takes the lock over (broken() then says true); one that dies while waiting is
/// not noticed, so give wait() a timeout when parties may die.
class Barrier {
 public:
  /// A barrier for parties (at least 1) processes or threads.
  explicit Barrier(std::size_t parties)
      : state_(parties == 0 ? throw ValueError("mproc::Barrier: parties must be at least 1")
                            : detail::SharedObject<detail::BarrierState>::make(0, parties)) {}

  /// Waits until all parties are waiting; returns this party's arrival index, from 0
  /// to parties() - 1. Throws BrokenBarrierError if the barrier is or gets broken.
  std::size_t wait() { return wait_steady(detail::Deadline::forever()); }
  /// As wait(), for at most timeout; on timeout breaks the barrier and throws
  /// BrokenBarrierError.
  template <class Rep, class Period>
  std::size_t wait(const std::chrono::duration<Rep, Period>& timeout) {
    return wait_steady(detail::Deadline::after(timeout));
  }
  /// Returns the barrier to its initial state; parties waiting now get BrokenBarrierError.
  void reset() {
    detail::BarrierState& s = *state_;
    Guard guard(s);
    ++s.resets;
    s.waiting = 0;
    s.broken = false;
    s.changed.notify_all();
  }
  /// Breaks the barrier: current and later wait() calls throw BrokenBarrierError
  /// until reset().
  void abort() {
    detail::BarrierState& s = *state_;
    Guard guard(s);
    break_locked(s);
  }
  /// The number of parties.
  std::size_t parties() const noexcept { return static_cast<std::size_t>(state_->parties); }
  /// How many parties are waiting now.
  std::size_t n_waiting() const {
    detail::BarrierState& s = *state_;
    Guard guard(s);
    return static_cast<std::size_t>(s.waiting);
  }
  /// True if the barrier is broken.
  bool broken() const {
    detail::BarrierState& s = *state_;
    Guard guard(s);
    return s.broken;
  }

 private:
  static constexpr const char* type_label = "mproc::Barrier";  // for error messages
  friend struct detail::ObjectHandleCodec<Barrier>;
  explicit Barrier(detail::SharedObject<detail::BarrierState> state) : state_(std::move(state)) {}

  static void break_locked(detail::BarrierState& s) {
    s.broken = true;
    s.changed.notify_all();
  }

  // The barrier's internal lock for a scope. A holder that died with it may have left
  // a round half counted, so taking it over breaks the barrier, in every call.
  class Guard : public detail::RobustLock {
   public:
    explicit Guard(detail::BarrierState& s) : RobustLock(s.mutex, s.deaths), s_(s) { break_if_recovered(); }
    bool wait_until(detail::SharedCondition& c, detail::Deadline deadline) {
      const bool woken = RobustLock::wait_until(c, deadline);
      break_if_recovered();
      return woken;
    }

   private:
    void break_if_recovered() {
      if (!recovered() || broke_) return;
      broke_ = true;
      break_locked(s_);
    }
    detail::BarrierState& s_;
    bool broke_ = false;
  };

  std::size_t wait_steady(detail::Deadline deadline) {
    detail::BarrierState& s = *state_;
    Guard guard(s);
    if (s.broken) throw BrokenBarrierError("mproc::Barrier is broken");
    const std::uint64_t generation = s.generation;
    const std::uint64_t resets = s.resets;
    const std::uint64_t index = s.waiting++;
    if (s.waiting == s.parties) {
      s.waiting = 0;
      ++s.generation;
      s.changed.notify_all();
      return static_cast<std::size_t>(index);
    }
    for (;;) {
      const bool woken = guard.wait_until(s.changed, deadline);
      if (s.generation != generation) return static_cast<std::size_t>(index);
      if (s.resets != resets) throw BrokenBarrierError("mproc::Barrier was reset while waiting");
      if (!woken) break_locked(s);
      if (s.broken) {
        --s.waiting;
        throw BrokenBarrierError(woken ? "mproc::Barrier was broken while waiting"
                                       : "mproc::Barrier::wait timed out (the barrier is now broken)");
      }
    }
  }

  detail::SharedObject<detail::BarrierState> state_;
};

template <>
struct Codec<Lock> : detail::ObjectHandleCodec<Lock> {};
template <>
struct Codec<RLock> : detail::ObjectHandleCodec<RLock> {};
template <>
struct Codec<Semaphore> : detail::ObjectHandleCodec<Semaphore> {};
template <>
struct Codec<BoundedSemaphore> : detail::ObjectHandleCodec<BoundedSemaphore> {};
template <>
struct Codec<Event> : detail::ObjectHandleCodec<Event> {};
template <>
struct Codec<Barrier> : detail::ObjectHandleCodec<Barrier> {};

/// A Condition travels as its lock and its condition variable.
template <>
struct Codec<Condition> {
  static void encode(detail::Writer& w, const Condition& c) {
    w.pod(static_cast<std::uint8_t>(c.lock_.state_->recursive ? 1 : 0));
    c.lock_.state_.encode(w);
    c.state_.encode(w);
  }
  static Condition decode(detail::Reader& r) {
    const bool recursive = detail::decode_flag(r);
    detail::LockBase lock =
        recursive ? detail::LockBase(Codec<RLock>::decode(r)) : detail::LockBase(Codec<Lock>::decode(r));
    auto state = detail::SharedObject<detail::ConditionState>::decode(r, "mproc::Condition");
    return Condition(std::move(lock), std::move(state));
  }
};

}  // namespace mproc
