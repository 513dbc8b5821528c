#pragma once
// How long a blocking call may wait, as one value: forever, not at all, or until an
// instant on the monotonic clock, which every blocking wait in mproc takes
// (pthread_*_clock* calls on CLOCK_MONOTONIC, futexes, condition variables, poll).
// A public call builds its Deadline once, from the user's timeout (so the timeout
// counts from the call), and every wait under it takes that Deadline: a retry after
// EINTR or a spurious wake-up waits only for what remains.

#include <chrono>
#include <cstdint>
#include <ctime>

namespace mproc::detail {

using steady_clock = std::chrono::steady_clock;

/// The monotonic clock in nanoseconds, as a plain integer: what shared memory and
/// per-item bookkeeping store (steady_clock reads the same clock).
inline std::int64_t monotonic_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

/// Forever, no wait, or until an instant on steady_clock. One time_point, so it costs
/// what a deadline does: forever is time_point::max() and no_wait time_point::min(),
/// which every timed call (futex, clocklock, poll) takes as an instant long passed.
/// Only forever() and no_wait() never read the clock.
class Deadline {
 public:
  using time_point = steady_clock::time_point;

  static constexpr Deadline forever() noexcept { return Deadline(time_point::max()); }
  /// Don't wait: a call that can tell (a Queue's put_nowait, Semaphore::try_acquire)
  /// only tries; a timed wait handed this one returns at once.
  static constexpr Deadline no_wait() noexcept { return Deadline(time_point::min()); }
  /// The instant t (time_point::max(): forever).
  static constexpr Deadline at(time_point t) noexcept { return Deadline(t); }
  /// The instant that monotonic_ns() reads as ns (INT64_MAX: forever).
  static constexpr Deadline at_ns(std::int64_t ns) noexcept {
    return Deadline(time_point(std::chrono::nanoseconds(ns)));
  }

  /// now + d, saturating: a deadline that would land past time_point::max() (a timeout
  /// of hours::max() or nanoseconds::max(), a NaN) is forever, instead of overflowing
  /// into the past. A d <= 0 is now (a wait that still looks once, unlike no_wait()).
  template <class Rep, class Period>
  static Deadline after(const std::chrono::duration<Rep, Period>& d) {
    const auto now = steady_clock::now();
    if (d <= d.zero()) return Deadline(now);
    // Compared in double, so that converting d itself can't overflow; the second of
    // slack absorbs the rounding of doubles near the clock's max, some 292 years away.
    const std::chrono::duration<double> wanted = d;
    const std::chrono::duration<double> room = time_point::max() - now - std::chrono::seconds(1);
    if (!(wanted < room)) return forever();
    return Deadline(now + std::chrono::ceil<steady_clock::duration>(d));
  }

  /// A deadline on any clock (saturating as after() does). The time left is taken in
  /// double, so that neither a far deadline in coarse units nor one long past
  /// (time_point::min()) overflows on the way.
  template <class Clock, class Duration>
  static Deadline until(const std::chrono::time_point<Clock, Duration>& t) {
    using seconds = std::chrono::duration<double>;
    return after(seconds(t.time_since_epoch()) - seconds(Clock::now().time_since_epoch()));
  }

  constexpr bool is_forever() const noexcept { return t_ == time_point::max(); }
  constexpr bool is_no_wait() const noexcept { return t_ == time_point::min(); }
  /// The instant, for the calls that take an absolute deadline (max(): forever,
  /// min(): no wait, both passed as they are).
  constexpr time_point when() const noexcept { return t_; }
  /// How long until the deadline, at least zero (reads the clock; not for forever()).
  steady_clock::duration left() const noexcept {
    if (is_no_wait()) return steady_clock::duration::zero();
    const auto d = t_ - steady_clock::now();
    return d < d.zero() ? d.zero() : d;
  }

 private:
  constexpr explicit Deadline(time_point t) noexcept : t_(t) {}
  time_point t_;
};

}  // namespace mproc::detail
