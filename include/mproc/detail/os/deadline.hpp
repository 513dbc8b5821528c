#pragma once
// Timeouts as deadlines on the monotonic clock, which every blocking wait in mproc
// takes (pthread_*_clock* calls on CLOCK_MONOTONIC, condition variables, poll).

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

/// now + d, saturating: a deadline that would land past time_point::max() (a timeout
/// of hours::max() or nanoseconds::max(), a NaN) is time_point::max(), "forever",
/// instead of overflowing into the past. A d <= 0 is "now".
template <class Rep, class Period>
steady_clock::time_point deadline_after(const std::chrono::duration<Rep, Period>& d) {
  const auto now = steady_clock::now();
  if (d <= d.zero()) return now;
  // Compared in double, so that converting d itself can't overflow; the second of slack
  // absorbs the rounding of doubles near the clock's max, some 292 years away.
  const std::chrono::duration<double> wanted = d;
  const std::chrono::duration<double> room =
      steady_clock::time_point::max() - now - std::chrono::seconds(1);
  if (!(wanted < room)) return steady_clock::time_point::max();
  return now + std::chrono::ceil<steady_clock::duration>(d);
}

/// A timeout in poll's convention (negative: no deadline) as a deadline.
inline steady_clock::time_point deadline_or_forever(std::chrono::nanoseconds timeout) {
  return timeout < timeout.zero() ? steady_clock::time_point::max() : deadline_after(timeout);
}

/// Whether a deadline from deadline_after() or to_steady() means "no deadline".
constexpr bool is_forever(steady_clock::time_point t) noexcept {
  return t == steady_clock::time_point::max();
}

/// A deadline on any clock, as a steady_clock deadline (saturating as deadline_after
/// does). The time left is taken in double, so that neither a far deadline in coarse
/// units nor one long past (time_point::min()) overflows on the way.
template <class Clock, class Duration>
steady_clock::time_point to_steady(const std::chrono::time_point<Clock, Duration>& t) {
  using seconds = std::chrono::duration<double>;
  return deadline_after(seconds(t.time_since_epoch()) - seconds(Clock::now().time_since_epoch()));
}

}  // namespace mproc::detail
