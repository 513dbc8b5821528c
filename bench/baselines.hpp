#pragma once
// What the machine allows with no mproc layer beyond the RAII owners of fds,
// children and mappings: plain pipes, sockets, eventfds and futexes between this
// process and a forked child, and a robust mutex in shared memory. bench_limits.cpp reports them as the machine's limits; bench_channels.cpp
// and bench_shared.cpp time them in the same rounds as a Pipe and a Value.

#include <mproc/detail/os/child.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/shm/shared_mapping.hpp>
#include <mproc/detail/sync/robust_mutex.hpp>

#include <sys/eventfd.h>
#include <sys/socket.h>

#include <atomic>
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

/// The ways two processes can hand each other a small message and wake the other up,
/// with no mproc layer: the candidates for the latency floor of a request/response.
enum class RawWay {
  pipes,  // a pipe each way (what a Pool's workers use)
  stream_socket,  // a socketpair(SOCK_STREAM) (what Python's duplex Pipe uses)
  seqpacket_socket,  // a socketpair(SOCK_SEQPACKET)
  eventfd_shm,  // the message in shared memory, an eventfd each way to wake the reader
  futex_shm,  // the message in shared memory, a futex word each way to wake the reader
};

/// The message words and wake-up words of eventfd_shm and futex_shm, in shared memory.
struct RawMailbox {
  std::atomic<std::uint64_t> message[2];  // [0]: to the child, [1]: back
  std::atomic<std::uint32_t> sequence[2];  // futex_shm: bumped once per message
};

/// A child that sends back every 8-byte message it gets, by one of the RawWays: the
/// latency floor of any request/response between two processes. Message 0 ends it.
class RawEcho {
 public:
  explicit RawEcho(RawWay way = RawWay::pipes) : way_(way) {
    int in = -1, out = -1;  // the child's ends
    switch (way) {
      case RawWay::pipes:
        in = channel_.down.read.get();
        out = channel_.up.write.get();
        break;
      case RawWay::stream_socket:
      case RawWay::seqpacket_socket: {
        const int type = way == RawWay::stream_socket ? SOCK_STREAM : SOCK_SEQPACKET;
        const auto no_fork = mproc::detail::PrivateFds::hold_forks();
        int sv[2];
        if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) throw mproc::OSError("socketpair", errno);
        mine_ = mproc::detail::Fd(sv[0]).make_private();
        theirs_ = mproc::detail::Fd(sv[1]).make_private();
        in = out = theirs_.get();
        break;
      }
      case RawWay::eventfd_shm:
        for (auto& e : events_) e = mproc::detail::make_private_fd("eventfd", [] { return ::eventfd(0, EFD_CLOEXEC); });
        in = events_[0].get();
        out = events_[1].get();
        break;
      case RawWay::futex_shm:
        break;
    }
    child_ = mproc::detail::fork_child({in, out}, [&] { return serve(in, out); });
    channel_.down.read.reset();
    channel_.up.write.reset();
    theirs_.reset();
  }
  RawEcho(const RawEcho&) = delete;
  RawEcho& operator=(const RawEcho&) = delete;
  ~RawEcho() {
    if (way_ == RawWay::eventfd_shm || way_ == RawWay::futex_shm) (void)round_trip(0);  // the end
    channel_.down.write.reset();
    mine_.reset();
    child_.wait();
  }

  /// Sends msg and waits for it to come back; whether it came back intact.
  bool round_trip(std::uint64_t msg) {
    switch (way_) {
      case RawWay::pipes:
        return mproc_bench::round_trip(channel_.down.write.get(), channel_.up.read.get(), msg);
      case RawWay::stream_socket:
      case RawWay::seqpacket_socket:
        return mproc_bench::round_trip(mine_.get(), mine_.get(), msg);
      case RawWay::eventfd_shm:
      case RawWay::futex_shm:
        post(0, msg, events_[0].get());
        return take(1, events_[1].get()) == msg;
    }
    return false;
  }

 private:
  int serve(int in, int out) {
    if (way_ == RawWay::eventfd_shm || way_ == RawWay::futex_shm) {
      for (std::uint64_t msg; (msg = take(0, in)) != 0;) post(1, msg, out);
      post(1, 0, out);
      return 0;
    }
    while (echo_message(in, out)) {
    }
    return 0;
  }
  /// Puts msg in mailbox slot `to` and wakes its reader (by the eventfd, or the futex).
  void post(int to, std::uint64_t msg, int event) {
    mailbox_->message[to].store(msg, std::memory_order_relaxed);
    if (way_ == RawWay::eventfd_shm) {
      const std::uint64_t one = 1;
      (void)mproc::detail::write_all(event, &one, sizeof one);
    } else {
      mailbox_->sequence[to].fetch_add(1, std::memory_order_release);
      mproc::detail::futex_wake(mailbox_->sequence[to], 1);
    }
  }
  /// Sleeps until slot `from` has a message, and takes it.
  std::uint64_t take(int from, int event) {
    if (way_ == RawWay::eventfd_shm) {
      std::uint64_t count = 0;
      if (!read_exact(event, &count, sizeof count)) return 0;
    } else {
      const std::uint32_t seen = taken_[from];
      while (mailbox_->sequence[from].load(std::memory_order_acquire) == seen) {
        (void)mproc::detail::futex_wait(mailbox_->sequence[from], seen, mproc::detail::Deadline::forever());
      }
      taken_[from] = seen + 1;
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    return mailbox_->message[from].load(std::memory_order_relaxed);
  }

  RawWay way_;
  Channel channel_;  // pipes
  mproc::detail::Fd mine_, theirs_;  // the socket ends
  mproc::detail::Fd events_[2];  // eventfd_shm: to the child, back
  mproc::detail::SharedMapping mapping_{sizeof(RawMailbox)};
  RawMailbox* mailbox_ = new (mapping_.data()) RawMailbox{};
  std::uint32_t taken_[2] = {0, 0};  // futex_shm: messages taken from each slot
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
  SharedGuarded() : mapping_(sizeof(Guarded)), guarded_(new(mapping_.data()) Guarded) {}
  Guarded& operator*() const noexcept { return *guarded_; }
  Guarded* operator->() const noexcept { return guarded_; }

 private:
  mproc::detail::SharedMapping mapping_;
  Guarded* guarded_;  // lives in mapping_; trivially destructible, never destroyed
};

}  // namespace mproc_bench
