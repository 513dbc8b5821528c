#pragma once
// Timeouts as deadlines on the monotonic clock, which every blocking wait in mproc's
// shared-memory primitives takes (pthread_*_clock* calls on CLOCK_MONOTONIC).

#include <chrono>
#include <type_traits>

namespace mproc::detail {

using steady_clock = std::chrono::steady_clock;

/// now + d, saturating at time_point::max() (a timeout of hours::max() means
/// "forever", not an overflow into the past). A negative d is "now".
template <class Rep, class Period>
steady_clock::time_point deadline_after(const std::chrono::duration<Rep, Period>& d) {
  const auto now = steady_clock::now();
  if (d <= d.zero()) return now;
  const std::chrono::duration<double> wanted = d;
  const std::chrono::duration<double> room = steady_clock::time_point::max() - now;
  if (wanted >= room) return steady_clock::time_point::max();
  return now + std::chrono::ceil<steady_clock::duration>(d);
}

/// A deadline on any clock, as a steady_clock deadline.
template <class Clock, class Duration>
steady_clock::time_point to_steady(const std::chrono::time_point<Clock, Duration>& t) {
  if constexpr (std::is_same_v<Clock, steady_clock>) {
    return std::chrono::ceil<steady_clock::duration>(t);
  } else {
    return deadline_after(t - Clock::now());
  }
}

}  // namespace mproc::detail
