#pragma once
// What the machine allows with no mproc layer beyond the RAII owners of fds,
// children and mappings: plain pipes to a forked child and a robust mutex in shared
// memory. bench_limits.cpp reports them as the machine's limits; bench_channels.cpp
// and bench_shared.cpp time them in the same rounds as a Pipe and a Value.

#include <mproc/detail/child.hpp>
#include <mproc/detail/fd.hpp>
#include <mproc/detail/robust_mutex.hpp>
#include <mproc/detail/shared_mapping.hpp>

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace mproc_bench {

/// Reads exactly n bytes; false on end of file.
inline bool read_exact(int fd, void* data, std::size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = mproc::detail::read_some(fd, p, n);
    if (r <= 0) return false;  // EOF (the pipes here block, so never EAGAIN)
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

/// Two pipes between this process and a child: down (to it) and up (from it), each
/// of pipe_bytes (0: the kernel's default). Every end is private, so the child keeps
/// only the two it is given.
struct Channel {
  mproc::detail::PipeEnds down;
  mproc::detail::PipeEnds up;
  explicit Channel(int pipe_bytes = 0)
      : down(mproc::detail::make_private_pipe(pipe_bytes)), up(mproc::detail::make_private_pipe(pipe_bytes)) {}
  /// Forks a child that runs body(down_read_fd, up_write_fd), and drops those ends here.
  template <class Body>
  mproc::detail::Child fork(Body body) {
    const int in = down.read.get(), out = up.write.get();
    mproc::detail::Child child = mproc::detail::fork_child({in, out}, [&] { return body(in, out); });
    down.read.reset();
    up.write.reset();
    return child;
  }
  /// Ends the child's input and reaps it.
  void finish(mproc::detail::Child& child) {
    down.write.reset();
    child.wait();
  }
};

/// Reads one 8-byte message from in and writes it back to out; false at end of input.
inline bool echo_message(int in, int out) {
  std::uint64_t msg;
  return read_exact(in, &msg, sizeof msg) && mproc::detail::write_all(out, &msg, sizeof msg);
}

/// Writes an 8-byte msg to out and reads the echo from in; whether it came back intact.
inline bool round_trip(int out, int in, std::uint64_t msg) {
  std::uint64_t back = 0;
  return mproc::detail::write_all(out, &msg, sizeof msg) && read_exact(in, &back, sizeof back) && back == msg;
}

/// A child that sends back every 8-byte message it gets over a Channel: the latency
/// floor of any request/response between two processes.
class RawEcho {
 public:
  RawEcho()
      : child_(channel_.fork([](int in, int out) {
          while (echo_message(in, out)) {
          }
          return 0;
        })) {}
  RawEcho(const RawEcho&) = delete;
  RawEcho& operator=(const RawEcho&) = delete;
  ~RawEcho() { channel_.finish(child_); }

  /// Sends msg and waits for it to come back; whether it came back intact.
  bool round_trip(std::uint64_t msg) {
    return mproc_bench::round_trip(channel_.down.write.get(), channel_.up.read.get(), msg);
  }

 private:
  Channel channel_;
  mproc::detail::Child child_;
};

/// A child that sends back every payload it gets over a Channel with 1 MiB pipes (the
/// best size of bench_limits' pipe_bandwidth): an 8-byte length, then the bytes, read
/// whole before they go back, as a Pool worker reads a task before it answers. The
/// floor of a payload round trip through pipes.
class RawPayloadEcho {
 public:
  RawPayloadEcho()
      : channel_(1 << 20), child_(channel_.fork([](int in, int out) {
          std::vector<char> buf;
          for (std::uint64_t size; read_exact(in, &size, sizeof size);) {
            buf.resize(size);
            if (!read_exact(in, buf.data(), size) || !mproc::detail::write_all(out, buf.data(), size)) return 1;
          }
          return 0;
        })) {}
  RawPayloadEcho(const RawPayloadEcho&) = delete;
  RawPayloadEcho& operator=(const RawPayloadEcho&) = delete;
  ~RawPayloadEcho() { channel_.finish(child_); }

  /// Sends payload and reads what comes back into back (sized like payload); false
  /// if the child is gone.
  bool round_trip(const std::vector<char>& payload, std::vector<char>& back) {
    const std::uint64_t size = payload.size();
    back.resize(payload.size());
    return mproc::detail::write_all(channel_.down.write.get(), &size, sizeof size) &&
           mproc::detail::write_all(channel_.down.write.get(), payload.data(), payload.size()) &&
           read_exact(channel_.up.read.get(), back.data(), back.size());
  }

 private:
  Channel channel_;
  mproc::detail::Child child_;
};

/// A robust mutex and the counter it guards, on one cache line.
struct Guarded {
  mproc::detail::RobustMutex mutex;
  std::uint64_t counter = 0;
  void increment() {
    mutex.lock();
    ++counter;
    mutex.unlock();
  }
};

/// A Guarded in memory shared with children forked after it was made.
class SharedGuarded {
 public:
  SharedGuarded() : mapping_(sizeof(Guarded)), guarded_(new (mapping_.data()) Guarded) {}
  Guarded& operator*() const noexcept { return *guarded_; }
  Guarded* operator->() const noexcept { return guarded_; }

 private:
  mproc::detail::SharedMapping mapping_;
  Guarded* guarded_;  // lives in mapping_; trivially destructible, never destroyed
};

}  // namespace mproc_bench
