#pragma once
// mproc::Pipe<T> and mproc::Connection<T>: Python's multiprocessing.Pipe.
//
//   auto [a, b] = mproc::Pipe<std::string>();        // duplex: both ends send and receive
//   auto [r, w] = mproc::Pipe<int>(false);           // one-way: r receives, w sends
//   mproc::Process p(child_main, std::move(b));      // hand an end to a child by value
//   p.start();  a.send("hi");  std::string s = a.recv();
//
// Each message is one frame (see detail/wire/frame.hpp) over a pipe: one per direction
// (two for a duplex Pipe, where Python uses a socketpair: a round trip over pipes is
// faster). send() blocks while the OS buffer is full, as in Python; recv() throws
// EOFError once every copy of the other end is closed and nothing is left. Like
// Python's, a Connection is for one thread at a time (a Queue is for any number).
//
// Who holds which end: a forked child inherits every open descriptor, and an end
// still open anywhere keeps recv() at the other end from ever seeing end-of-file.
// So hand a child its end by value (std::move it into the Process arguments): the
// parent's copy is closed when start() returns, and the child closes the end's peer
// (the one the parent keeps). An end a child reaches any other way (a lambda's
// capture, a Process subclass member) is left open in both processes, as in Python:
// close() it where it is not used.

#include <mproc/codec.hpp>
#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/detail/wire/scratch.hpp>
#include <mproc/errors.hpp>

#include <poll.h>
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>

namespace mproc {

template <class T>
class Connection;

template <class T>
std::pair<Connection<T>, Connection<T>> Pipe(bool duplex = true);

namespace detail {

/// The descriptors of one Pipe, shared by its two Connections in this process, so
/// that a child handed one end can find and close the other. End s receives from
/// read[s] and sends to write[s].
struct PipeLink {
  Fd read[2];
  Fd write[2];
  void close(int side) noexcept {
    read[side].reset();
    write[side].reset();
  }
  bool open(int side) const noexcept { return read[side] || write[side]; }
};

/// write_frame, with a reader that went away reported as false instead of killing
/// the process with SIGPIPE: the signal is blocked for the call and a SIGPIPE it
/// raised is taken back before the mask is restored.
inline bool write_frame_nosigpipe(int fd, const FrameHeader& header, std::span<const std::byte> payload) {
  sigset_t pipe_only, old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  bool ok = false;
  try {
    ok = write_frame(fd, header, payload);
  } catch (...) {
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    throw;
  }
  if (!ok && !sigismember(&old, SIGPIPE)) {
    const timespec zero{};
    while (::sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return ok;
}

}  // namespace detail

/// One end of a Pipe. Move-only: each end has one owner in each process.
template <class T>
class Connection {
 public:
  /// A closed connection (what a moved-from one becomes).
  Connection() = default;
  Connection(Connection&& other) noexcept = default;
  Connection& operator=(Connection&& other) noexcept {
    if (this != &other) {
      close();
      link_ = std::move(other.link_);
      side_ = other.side_;
      reader_ = std::move(other.reader_);
    }
    return *this;
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  /// Closes this end (in this process).
  ~Connection() { close(); }

  /// Sends value to the other end, blocking while the pipe's buffer is full. Throws
  /// OSError (EPIPE) if the other end is closed everywhere.
  void send(const T& value) {
    check_usable(writable(), "send", "read-only");
    detail::ScratchBytes scratch;
    encode_into(scratch.get(), value);
    const Bytes& payload = scratch.get();
    const auto header = detail::make_frame_header(detail::FrameKind::message, 0, payload.size());
    if (!detail::write_frame_nosigpipe(link_->write[side_].get(), header, payload)) {
      throw OSError("mproc: Connection.send", EPIPE);
    }
  }

  /// Receives the next value, blocking until one arrives. Throws EOFError when the
  /// other end is closed everywhere and everything it sent has been received.
  T recv() {
    check_usable(readable(), "recv", "write-only");
    const auto frame = reader_.read();
    if (!frame) throw EOFError("mproc: Connection.recv: the other end is closed and nothing is left to receive");
    if (frame->header.kind != detail::FrameKind::message || frame->header.flags != 0) {
      throw ProtocolError("mproc: Connection.recv: not a Pipe message frame");
    }
    return decode<T>(frame->payload);
  }

  /// Whether recv() would not block: a message (or end-of-file) is there. Waits up
  /// to timeout for that; the default, like a negative timeout, does not wait.
  template <class Rep = long, class Period = std::ratio<1>>
  bool poll(std::chrono::duration<Rep, Period> timeout = std::chrono::seconds(0)) {
    return poll_until(detail::Deadline::after(timeout));
  }
  /// As poll(), waiting as long as it takes (Python's poll(None)).
  bool poll_forever() { return poll_until(detail::Deadline::forever()); }

  /// Closes this end in this process; further use throws ValueError.
  void close() noexcept {
    if (link_) link_->close(side_);
    link_.reset();
  }
  /// Whether this end is closed in this process.
  bool closed() const noexcept { return !link_ || !link_->open(side_); }
  /// Whether this end may recv().
  bool readable() const noexcept { return link_ && link_->read[side_]; }
  /// Whether this end may send().
  bool writable() const noexcept { return link_ && link_->write[side_]; }
  /// The descriptor recv() reads from (for poll/epoll together with others), or -1
  /// if this end cannot receive.
  int fileno() const noexcept { return readable() ? link_->read[side_].get() : -1; }

  /// Called by Process in a child that was handed this end: closes the other end of
  /// the Pipe in the child, so end-of-file can reach both sides.
  void handed_to_child() noexcept {
    if (link_) link_->close(1 - side_);
  }

 private:
  friend std::pair<Connection<T>, Connection<T>> Pipe<T>(bool);

  Connection(std::shared_ptr<detail::PipeLink> link, int side)
      : link_(std::move(link)), side_(side), reader_(link_->read[side_].get()) {}

  bool poll_until(detail::Deadline deadline) {
    check_usable(readable(), "poll", "write-only");
    if (reader_.has_buffered_frame()) return true;
    pollfd p{fileno(), POLLIN, 0};
    return detail::poll_until(&p, 1, deadline) > 0;
  }

  void check_usable(bool allowed, const char* what, const char* kind) const {
    if (closed()) throw ValueError(std::string("mproc: Connection.") + what + ": the connection is closed");
    if (!allowed) throw ValueError(std::string("mproc: Connection.") + what + ": the connection is " + kind);
  }

  std::shared_ptr<detail::PipeLink> link_;
  int side_ = 0;
  detail::FrameReader reader_{-1};
};

/// A connected pair of Connections. Duplex (the default): both ends send and
/// receive. One-way (duplex = false): the first end only receives and the second
/// only sends, in Python's order.
template <class T>
std::pair<Connection<T>, Connection<T>> Pipe(bool duplex) {
  require_sendable<T>();
  auto link = std::make_shared<detail::PipeLink>();
  detail::PipeEnds to_first = detail::make_pipe();
  link->read[0] = std::move(to_first.read);
  link->write[1] = std::move(to_first.write);
  if (duplex) {
    detail::PipeEnds to_second = detail::make_pipe();
    link->read[1] = std::move(to_second.read);
    link->write[0] = std::move(to_second.write);
  }
  return {Connection<T>(link, 0), Connection<T>(link, 1)};
}

}  // namespace mproc
