#pragma once
// The resident memory of this process, for PoolOptions::max_memory_per_child.

#include <mproc/detail/os/deadline.hpp>  // monotonic_ns
#include <mproc/detail/os/fd.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

namespace mproc::detail {

/// Resident set size in bytes from /proc/self/statm (read through fd if given, else
/// opened for the occasion), or 0 if it can't be read.
inline std::size_t resident_bytes(int fd = -1) noexcept {
  const int own = fd < 0 ? ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC) : -1;
  if (fd < 0 && own < 0) return 0;
  char buf[128];
  const ssize_t n = ::pread(fd < 0 ? own : fd, buf, sizeof buf - 1, 0);  // the file is made afresh at offset 0
  if (own >= 0) ::close(own);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char* rest = nullptr;
  std::strtoull(buf, &rest, 10);                           // total program size
  const unsigned long long pages = std::strtoull(rest, nullptr, 10);  // resident
  return static_cast<std::size_t>(pages) * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

/// A worker's watch on its resident memory, asked after every item it runs.
///
/// Reading the resident size costs about 2 us (a pread of /proc/self/statm kept open;
/// 10 us with the open and close), and even the clock costs 20 to 50 ns: both more
/// than a tiny task. So the resident size is read only once `interval_ns` (250 us)
/// has passed since the last reading, and the clock itself only every few items:
/// as many as took about a quarter of the interval last time, at most `max_stride`.
/// The rule this gives: once over the limit, a worker starts new items for at most
/// 250 us of work (or `max_stride` items, if they suddenly take far longer than the
/// ones before); the readings cost at most 1% of the work, the clock about 1 ns an
/// item. Idle time between chunks counts as work, which only makes readings sooner.
class MemoryGuard {
 public:
  static constexpr std::int64_t interval_ns = 250'000;
  static constexpr std::int64_t max_stride = 32;

  explicit MemoryGuard(std::size_t limit) noexcept : limit_(limit) {}

  /// After an item: reads the resident size if it is due; true once the worker was
  /// seen over the limit (and from then on).
  bool check() noexcept {
    if (over_) return true;
    if (--countdown_ > 0) return false;
    const std::int64_t now = monotonic_ns();
    const std::int64_t per_item = std::max<std::int64_t>((now - clock_ns_) / stride_, 1);
    stride_ = std::clamp<std::int64_t>(interval_ns / 4 / per_item, 1, max_stride);
    countdown_ = stride_;
    clock_ns_ = now;
    if (now - reading_ns_ < interval_ns) return false;
    reading_ns_ = now;
    if (!statm_) {
      const auto no_fork = PrivateFds::hold_forks();  // a task's own Process children need no copy
      statm_ = Fd(::open("/proc/self/statm", O_RDONLY | O_CLOEXEC)).make_private();
    }
    over_ = resident_bytes(statm_.get()) > limit_;
    return over_;
  }
  /// Whether a reading saw the worker over the limit.
  bool over() const noexcept { return over_; }

 private:
  std::size_t limit_;
  std::int64_t countdown_ = 1;  // items until the clock is read
  std::int64_t stride_ = 1;
  std::int64_t clock_ns_ = 0;
  std::int64_t reading_ns_ = INT64_MIN / 2;  // the first clock reading is followed by a size reading
  bool over_ = false;
  Fd statm_;
};

}  // namespace mproc::detail
