#pragma once
// The pool's fork server: a single-threaded process forked once, when the pool
// starts, that forks every worker (the first ones and each replacement) and reaps
// them. Replacements are therefore copies of the same snapshot as the first workers,
// never of a parent whose other threads happen to hold locks at that moment (a user's
// mutex, a logging library's lock): forking from a multithreaded process copies
// those locks held, forever. The server reports each worker's pid, pipes and pidfd
// to the pool over a Unix socket, and later how it ended.

#include <mproc/current_process.hpp>
#include <mproc/detail/child.hpp>
#include <mproc/detail/fd.hpp>
#include <mproc/errors.hpp>

#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <utility>
#include <vector>

namespace mproc::detail {

/// Sends one datagram with up to 4 descriptors attached.
inline void send_with_fds(int sock, const void* data, std::size_t size, std::initializer_list<int> fds) {
  msghdr msg{};
  iovec iov{const_cast<void*>(data), size};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))]{};
  if (fds.size() != 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(fds.size() * sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds.begin(), fds.size() * sizeof(int));
  }
  while (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) {
    if (errno != EINTR) throw OSError("sendmsg", errno);
  }
}

/// Receives one datagram and its descriptors. Returns the byte count (0 at end of
/// file), or -1 if `dontwait` and nothing is there.
inline ssize_t recv_with_fds(int sock, void* data, std::size_t size, std::vector<Fd>& fds, bool dontwait) {
  msghdr msg{};
  iovec iov{data, size};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  while ((n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | (dontwait ? MSG_DONTWAIT : 0))) < 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    throw OSError("recvmsg", errno);
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  return n;
}

/// A worker the server started, as the pool sees it: its pid, a pidfd to signal it
/// safely (never a recycled pid), and the pool's ends of its pipes.
struct SpawnedWorker {
  pid_t pid = -1;
  Fd pidfd;
  Fd task_w;    // the pool writes tasks here
  Fd result_r;  // the pool reads outcomes here
};

class ForkServer {
 public:
  /// Runs in each worker: (slot, task read end, result write end, the worker's parent).
  using WorkerMain = std::function<int(std::size_t, int, int, pid_t)>;

  /// Forks the server. Call from a thread that lives as long as the server (the
  /// server dies with that thread, by PR_SET_PDEATHSIG).
  explicit ForkServer(WorkerMain worker_main) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw OSError("socketpair", errno);
    Fd ours = Fd(sv[0]).make_private();
    Fd theirs = Fd(sv[1]).make_private();
    const pid_t parent = ::getpid();
    server_ = fork_child({theirs.get()}, [&] { return serve(theirs.get(), parent, worker_main); });
    sock_ = std::move(ours);
  }
  ForkServer(const ForkServer&) = delete;
  ForkServer& operator=(const ForkServer&) = delete;
  /// Closing the socket tells the server to kill what is left and exit.
  ~ForkServer() {
    sock_.reset();
    server_.wait(std::chrono::seconds(5));
  }

  /// Readable when the server has news (an exited worker, or that it died).
  int fd() const noexcept { return sock_.get(); }

  /// Starts a worker for `slot`; blocks for the server's answer.
  SpawnedWorker spawn(std::size_t slot) {
    Message request{Message::spawn, 0, static_cast<std::int32_t>(slot), 0, 0};
    send_with_fds(sock_.get(), &request, sizeof request, {});
    for (;;) {
      std::vector<Fd> fds;
      Message reply = receive(fds, false);
      if (reply.type == Message::exited) {
        exits_.emplace_back(reply.pid, reply.status());
        continue;
      }
      if (reply.type == Message::spawn_failed) throw OSError("fork (in the pool's fork server)", reply.code);
      if (reply.type != Message::spawned || fds.size() != 3) throw ProtocolError("mproc: bad fork server reply");
      return SpawnedWorker{reply.pid, std::move(fds[2]).make_private(), std::move(fds[0]).make_private(),
                           std::move(fds[1]).make_private()};
    }
  }

  /// Workers that have exited since the last call (pid and how), without blocking.
  /// Throws if the server itself is gone.
  std::deque<std::pair<pid_t, ExitStatus>> take_exits() {
    for (;;) {
      std::vector<Fd> fds;
      const auto m = try_receive(fds);
      if (!m) break;
      if (m->type == Message::exited) exits_.emplace_back(m->pid, m->status());
    }
    return std::exchange(exits_, {});
  }

  /// True when exits reported while spawn() waited for its answer are waiting for
  /// take_exits(): the socket no longer shows them as readable.
  bool has_queued_exits() const noexcept { return !exits_.empty(); }

  /// Waits until the server has news or the timeout passes.
  bool wait_readable(std::chrono::nanoseconds timeout) {
    if (!exits_.empty()) return true;
    pollfd p{sock_.get(), POLLIN, 0};
    return poll_fds(&p, 1, timeout) > 0;
  }

 private:
  struct Message {
    enum Type : std::int32_t { spawn = 1, spawned, spawn_failed, exited };
    std::int32_t type;
    std::int32_t pid;
    std::int32_t slot;
    std::int32_t code;    // exit code, or errno for spawn_failed
    std::int32_t signal;  // the signal that killed it, or 0
    ExitStatus status() const {
      ExitStatus s;
      if (signal != 0) s.signal = signal;
      else s.exit_code = code;
      return s;
    }
  };

  Message receive(std::vector<Fd>& fds, bool dontwait) {
    Message m{};
    const ssize_t n = recv_with_fds(sock_.get(), &m, sizeof m, fds, dontwait);
    if (n == 0) throw Error("mproc: the pool's fork server died; the pool is broken");
    if (n > 0 && n != static_cast<ssize_t>(sizeof m)) throw ProtocolError("mproc: bad fork server message");
    if (n < 0) m.type = 0;
    return m;
  }
  std::optional<Message> try_receive(std::vector<Fd>& fds) {
    Message m = receive(fds, true);
    if (m.type == 0) return std::nullopt;
    return m;
  }

  /// The server's loop: fork workers on request, report their exits, and when the
  /// pool closes the socket, kill whatever is left and leave.
  static int serve(int sock, pid_t parent, const WorkerMain& worker_main) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) return 0;
    std::signal(SIGINT, SIG_IGN);
    std::map<pid_t, Child> children;
    std::vector<pollfd> fds;
    for (;;) {
      fds.assign(1, pollfd{sock, POLLIN, 0});
      for (auto& [pid, child] : children) fds.push_back({child.pidfd(), POLLIN, 0});
      poll_fds(fds.data(), fds.size(), std::chrono::nanoseconds(-1));
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        auto it = std::find_if(children.begin(), children.end(),
                               [&](const auto& c) { return c.second.pidfd() == fds[i].fd; });
        const ExitStatus s = it->second.wait().value_or(ExitStatus{});
        Message m{Message::exited, it->first, 0, s.exit_code.value_or(0), s.signal.value_or(0)};
        children.erase(it);
        send_with_fds(sock, &m, sizeof m, {});
      }
      if (fds[0].revents == 0) continue;
      Message request{};
      std::vector<Fd> none;
      if (recv_with_fds(sock, &request, sizeof request, none, false) <= 0) break;  // the pool is done
      if (request.type != Message::spawn) continue;
      try {
        PipeEnds task = make_pipe(worker_pipe_bytes);
        PipeEnds result = make_pipe(worker_pipe_bytes);
        for (Fd* fd : {&task.read, &task.write, &result.read, &result.write}) fd->make_private();
        const auto slot = static_cast<std::size_t>(request.slot);
        const int task_r = task.read.get(), result_w = result.write.get();
        // Named as Python names them; counted here, where every worker is forked.
        // (A pair, not a structured binding: clang 14 cannot capture those in a lambda.)
        const auto identity_name = this_process().next_child("ForkPoolWorker");
        Child child = fork_child({task_r, result_w}, [&] {
          set_current_process(identity_name.second, /*daemon=*/true, identity_name.first);
          return worker_main(slot, task_r, result_w, ::getppid());
        });
        Message reply{Message::spawned, child.pid(), request.slot, 0, 0};
        send_with_fds(sock, &reply, sizeof reply, {task.write.get(), result.read.get(), child.pidfd()});
        children.emplace(child.pid(), std::move(child));
      } catch (const OSError& e) {
        Message reply{Message::spawn_failed, 0, request.slot, e.error_code(), 0};
        send_with_fds(sock, &reply, sizeof reply, {});
      }
    }
    for (auto& [pid, child] : children) child.kill(SIGKILL);
    children.clear();  // Child's destructor reaps
    return 0;
  }

  static constexpr int worker_pipe_bytes = 1 << 20;

  Child server_;
  Fd sock_;
  std::deque<std::pair<pid_t, ExitStatus>> exits_;
};

}  // namespace mproc::detail
