#pragma once
// File descriptors: one RAII owner (Fd), pipes, EINTR-safe I/O, and the registry of
// descriptors private to this process's pools, which forked children close.

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/fork_safe_mutex.hpp>  // ForkBlock
#include <mproc/errors.hpp>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <string>
#include <utility>

namespace mproc::detail {

/// Descriptors a pool keeps for itself (its workers' pipes, pidfds, wake-up fds).
/// A child forked by mproc closes them all but the ones it is handed, so a worker never
/// holds another worker's pipe open and end-of-file still means what it should.
/// (Close-on-exec is not enough: workers are forked, never exec'd.) A lock-free
/// bitset, because a child reads it right after fork, when a mutex held by another
/// thread of the parent would never be released; any descriptor number fits.
class PrivateFds {
 public:
  /// Hold this while creating (or receiving) a pool's descriptor and marking it
  /// private, and while closing one and unmarking it: no child, another pool's fork
  /// server included, is ever forked in between, to inherit the descriptor unmarked.
  [[nodiscard]] static ForkBlock hold_forks() { return {}; }

  static void add(int fd) noexcept {
    if (auto* w = word(fd, true)) w->fetch_or(bit(fd), std::memory_order_relaxed);
  }
  static void remove(int fd) noexcept {
    if (auto* w = word(fd, false)) w->fetch_and(~bit(fd), std::memory_order_relaxed);
  }
  static bool contains(int fd) noexcept {
    const auto* w = word(fd, false);
    return w != nullptr && (w->load(std::memory_order_relaxed) & bit(fd)) != 0;
  }
  /// In a freshly forked child: close every private descriptor not in keep.
  template <class Keep>
  static void close_all_except(const Keep& keep) noexcept {
    const int blocks = used_blocks().load(std::memory_order_acquire);
    for (int b = 0; b < blocks; ++b) {
      Block* block = table()[static_cast<std::size_t>(b)].load(std::memory_order_acquire);
      if (block == nullptr) continue;
      for (int w = 0; w < block_words; ++w) {
        std::uint64_t bits = (*block)[static_cast<std::size_t>(w)].load(std::memory_order_relaxed);
        while (bits != 0) {
          const int fd = b * block_fds + w * 64 + __builtin_ctzll(bits);
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
  }

 private:
  // Descriptors [0, 65536) have a static block; each further 65536 get one on first
  // use, never freed (a child may be reading it).
  static constexpr int block_fds = 1 << 16;
  static constexpr int block_words = block_fds / 64;
  static constexpr int max_blocks = INT_MAX / block_fds + 1;
  using Block = std::array<std::atomic<std::uint64_t>, block_words>;

  static std::array<std::atomic<Block*>, max_blocks>& table() noexcept {
    static Block first{};
    static std::array<std::atomic<Block*>, max_blocks> blocks{};  // zero: no static constructor
    static const bool init = (blocks[0].store(&first, std::memory_order_release), true);
    (void)init;
    return blocks;
  }
  /// How many leading entries of table() may be non-null.
  static std::atomic<int>& used_blocks() noexcept {
    static std::atomic<int> used{1};
    return used;
  }
  static std::atomic<std::uint64_t>* word(int fd, bool create) noexcept {
    if (fd < 0) return nullptr;
    const int b = fd / block_fds;
    auto& slot = table()[static_cast<std::size_t>(b)];
    Block* block = slot.load(std::memory_order_acquire);
    if (block == nullptr) {
      if (!create) return nullptr;
      auto* fresh = new (std::nothrow) Block{};
      if (fresh == nullptr) return nullptr;  // out of memory: the descriptor stays inheritable
      if (slot.compare_exchange_strong(block, fresh, std::memory_order_acq_rel)) {
        block = fresh;
      } else {
        delete fresh;  // another thread made it first
      }
      for (int used = used_blocks().load(); used < b + 1 && !used_blocks().compare_exchange_weak(used, b + 1);) {
      }
    }
    return &(*block)[static_cast<std::size_t>(fd % block_fds / 64)];
  }
  static std::uint64_t bit(int fd) noexcept { return std::uint64_t{1} << (fd % 64); }
};

/// The call text of an OSError for `call` (one that makes descriptors or processes)
/// failing with err. A resource limit is named, with the setting that raises it, so
/// that the message says what ran out: strerror's "Too many open files" alone does
/// not say whose limit.
inline std::string limit_call(std::string call, int err) {
  switch (err) {
    case EMFILE:
      return call + " (EMFILE: the process is at its open-file limit, RLIMIT_NOFILE, ulimit -n)";
    case ENFILE:
      return call + " (ENFILE: the system is at its open-file limit, fs.file-max)";
    case EAGAIN:
      return call + " (EAGAIN: the limit on processes is reached, the user's RLIMIT_NPROC, ulimit -u, or the system's)";
    case ENOMEM:
      return call + " (ENOMEM: out of memory, or of process ids)";
    default:
      return call;
  }
}
/// OSError for `call` failing with err, naming the limit reached (see limit_call).
inline OSError limit_error(std::string call, int err) { return OSError(limit_call(std::move(call), err), err); }

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
    if (fd_ >= 0 && PrivateFds::contains(fd_)) {
      const auto no_fork = PrivateFds::hold_forks();  // a child forked in between would see a stale mark
      ::close(fd_);
      PrivateFds::remove(fd_);
    } else if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }
  /// Marks the descriptor private to this process's pools (see PrivateFds); do it
  /// under PrivateFds::hold_forks(), taken before the descriptor was made.
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
  if (::pipe2(fds, O_CLOEXEC) != 0) throw limit_error("pipe2", errno);
  PipeEnds ends{Fd(fds[0]), Fd(fds[1])};
  if (size_hint > 0) (void)::fcntl(fds[1], F_SETPIPE_SZ, size_hint);
  return ends;
}

/// A descriptor private to this process's pools, made by make() (which returns it, or
/// -1 with errno set: OSError naming `call`) and marked with no fork in between.
template <class Make>
Fd make_private_fd(const char* call, Make make) {
  const auto no_fork = PrivateFds::hold_forks();
  const int fd = make();
  if (fd < 0) throw limit_error(call, errno);
  return Fd(fd).make_private();
}

/// A pipe private to this process's pools, made and marked with no fork in between.
inline PipeEnds make_private_pipe(int size_hint = 0) {
  const auto no_fork = PrivateFds::hold_forks();
  PipeEnds ends = make_pipe(size_hint);
  ends.read.make_private();
  ends.write.make_private();
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

/// poll() that survives EINTR, waiting until the deadline (each retry for what is left).
inline int poll_until(pollfd* fds, nfds_t n, Deadline deadline) {
  for (;;) {
    int ms = -1;
    if (!deadline.is_forever()) {
      // Round up so that a sub-millisecond wait does not spin at zero.
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline.left());
      ms = static_cast<int>(std::min<std::int64_t>(left.count(), 1 << 30));
    }
    const int r = ::poll(fds, n, ms);
    if (r >= 0) return r;
    if (errno != EINTR) throw OSError("poll", errno);
  }
}

}  // namespace mproc::detail
