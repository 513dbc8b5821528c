#pragma once
// File descriptors: one RAII owner (Fd), pipes, EINTR-safe I/O, and the registry of
// descriptors private to this process's pools, which forked children close.

#include <mproc/detail/deadline.hpp>
#include <mproc/errors.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace mproc::detail {

/// Descriptors a pool keeps for itself (its workers' pipes, pidfds, wake-up fds).
/// A child forked by mproc closes them all but the ones it is handed, so a worker never
/// holds another worker's pipe open and end-of-file still means what it should.
/// A lock-free bitmap, because a child reads it right after fork, when a mutex held by
/// another thread of the parent would never be released.
class PrivateFds {
 public:
  static constexpr int capacity = 1 << 16;

  static void add(int fd) noexcept {
    if (fd >= 0 && fd < capacity) word(fd).fetch_or(bit(fd), std::memory_order_relaxed);
  }
  static void remove(int fd) noexcept {
    if (fd >= 0 && fd < capacity) word(fd).fetch_and(~bit(fd), std::memory_order_relaxed);
  }
  /// In a freshly forked child: close every private descriptor not in keep.
  template <class Keep>
  static void close_all_except(const Keep& keep) noexcept {
    for (int w = 0; w < capacity / 64; ++w) {
      std::uint64_t bits = words()[static_cast<std::size_t>(w)].load(std::memory_order_relaxed);
      while (bits != 0) {
        const int fd = w * 64 + __builtin_ctzll(bits);
        bits &= bits - 1;
        bool kept = false;
        for (int k : keep) kept = kept || k == fd;
        if (!kept) {
          ::close(fd);
          remove(fd);
        }
      }
    }
  }

 private:
  static std::array<std::atomic<std::uint64_t>, capacity / 64>& words() noexcept {
    static std::array<std::atomic<std::uint64_t>, capacity / 64> bits{};
    return bits;
  }
  static std::atomic<std::uint64_t>& word(int fd) noexcept { return words()[static_cast<std::size_t>(fd) / 64]; }
  static std::uint64_t bit(int fd) noexcept { return std::uint64_t{1} << (fd % 64); }
};

/// Owns one file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    PrivateFds::remove(fd_);
    return std::exchange(fd_, -1);
  }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) {
      PrivateFds::remove(fd_);
      ::close(fd_);
    }
    fd_ = fd;
  }
  /// Marks the descriptor private to this process's pools (see PrivateFds).
  Fd&& make_private() && noexcept {
    PrivateFds::add(fd_);
    return std::move(*this);
  }
  void make_private() & noexcept { PrivateFds::add(fd_); }

 private:
  int fd_ = -1;
};

inline void set_nonblocking(int fd, bool on) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK)) < 0) {
    throw OSError("fcntl(O_NONBLOCK)", errno);
  }
}

struct PipeEnds {
  Fd read;
  Fd write;
};

/// A close-on-exec pipe. size_hint asks the kernel for a bigger buffer (fewer
/// wake-ups for large payloads); refusal (the per-user pipe quota) is not an error.
inline PipeEnds make_pipe(int size_hint = 0) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw OSError("pipe2", errno);
  PipeEnds ends{Fd(fds[0]), Fd(fds[1])};
  if (size_hint > 0) (void)::fcntl(fds[1], F_SETPIPE_SZ, size_hint);
  return ends;
}

/// Writes all n bytes, blocking; returns false if the reader is gone (EPIPE).
inline bool write_all(int fd, const void* data, std::size_t n) {
  const auto* p = static_cast<const std::byte*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE) return false;
      throw OSError("write", errno);
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

/// Reads up to n bytes, retrying on EINTR; 0 means end of file, -1 means EAGAIN.
inline ssize_t read_some(int fd, void* data, std::size_t n) {
  for (;;) {
    const ssize_t r = ::read(fd, data, n);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    throw OSError("read", errno);
  }
}

/// poll() that survives EINTR, waiting until deadline (time_point::max(): forever).
inline int poll_until(pollfd* fds, nfds_t n, std::chrono::steady_clock::time_point deadline) {
  using clock = std::chrono::steady_clock;
  for (;;) {
    int ms = -1;
    if (deadline != clock::time_point::max()) {
      const auto left = deadline - clock::now();
      // Round up so that a sub-millisecond wait does not spin at zero.
      ms = left <= std::chrono::nanoseconds::zero()
               ? 0
               : static_cast<int>(std::min<std::int64_t>(
                     std::chrono::ceil<std::chrono::milliseconds>(left).count(), 1 << 30));
    }
    const int r = ::poll(fds, n, ms);
    if (r >= 0) return r;
    if (errno != EINTR) throw OSError("poll", errno);
  }
}

/// poll_until with a timeout; a negative timeout waits forever.
inline int poll_fds(pollfd* fds, nfds_t n, std::chrono::nanoseconds timeout) {
  return poll_until(fds, n, timeout < timeout.zero() ? std::chrono::steady_clock::time_point::max() : deadline_after(timeout));
}

}  // namespace mproc::detail
