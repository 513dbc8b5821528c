#pragma once
// Waiting on a 32-bit word in memory shared between processes (futex(2)), with a
// deadline on the monotonic clock. Unlike a process-shared pthread condition
// variable, a futex keeps no state about its waiters: a waiter that is killed
// leaves nothing behind that could block the next waker.

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/fork_gate.hpp>
#include <mproc/errors.hpp>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>

namespace mproc::detail {

/// An absolute deadline as the timespec the monotonic-clock calls take
/// (steady_clock is CLOCK_MONOTONIC on Linux). A deadline before the clock's epoch
/// (time_point::min(), a point before boot) has long passed: it becomes {0, 0}, since
/// the kernel and glibc refuse a negative timespec (EINVAL) instead of timing out.
inline timespec to_timespec(std::chrono::steady_clock::time_point deadline) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
  if (ns < 0) return timespec{0, 0};
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  return ts;
}

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
              std::atomic<std::uint32_t>::is_always_lock_free);

/// The longest a wait in mproc sleeps before it looks again. Between processes a wake-up
/// can be lost for good: the waker may be killed between changing a word and waking the
/// sleepers, or a woken waiter before it acts on the wake (glibc's robust mutex then
/// forgets that others wait). Every wait on shared memory therefore re-checks what it
/// waits for at least this often; a lost wake-up costs at most this long, never a hang.
inline constexpr std::chrono::milliseconds wait_slice{100};

/// Sleeps while word still holds expected, until woken, the deadline passes or one
/// wait_slice ends; may also return spuriously. Returns false only when the deadline
/// passed: callers loop, checking what they wait for each time.
inline bool futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, Deadline deadline) {
  const auto slice_end = std::chrono::steady_clock::now() + wait_slice;
  const bool last = deadline.when() <= slice_end;  // never for forever()
  const timespec ts = to_timespec(last ? deadline.when() : slice_end);
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline, so retries after
  // EINTR never stretch the wait. Not FUTEX_PRIVATE: the word is in shared memory.
  long rc;
  int err;  // read before the gate's rejoin, which may change errno
  {
    const ForkGate::Asleep asleep;  // a LogListener's thread: forks may happen meanwhile
    rc = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_BITSET, expected, &ts, nullptr,
                   FUTEX_BITSET_MATCH_ANY);
    err = errno;
  }
  if (rc == 0 || err == EAGAIN || err == EINTR) return true;
  if (err == ETIMEDOUT) return !last;
  throw OSError("futex(FUTEX_WAIT_BITSET)", err);
}

/// Wakes up to n processes sleeping in futex_wait on word.
inline void futex_wake(std::atomic<std::uint32_t>& word, int n = INT_MAX) noexcept {
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, n, nullptr, nullptr, 0);
}

}  // namespace mproc::detail
