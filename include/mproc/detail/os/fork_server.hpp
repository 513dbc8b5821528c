#pragma once
// The pool's fork server: a single-threaded process forked once, when the pool
// starts, that forks every worker (the first ones and each replacement) and reaps
// them. Replacements are therefore copies of the same snapshot as the first workers,
// never of a parent whose other threads happen to hold locks at that moment (a user's
// mutex, a logging library's lock): forking from a multithreaded process copies
// those locks held, forever. The server reports each worker's pid, pipes and pidfd
// to the pool over a Unix socket, and later how it ended.

#include <mproc/current_process.hpp>
#include <mproc/detail/os/child.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/errors.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace mproc::detail {

/// Sends one datagram with up to 4 descriptors attached; with `dontwait`, EAGAIN
/// (a full socket) is an OSError rather than a wait.
inline void send_with_fds(int sock, const void* data, std::size_t size, std::initializer_list<int> fds,
                          bool dontwait = false) {
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
  while (::sendmsg(sock, &msg, MSG_NOSIGNAL | (dontwait ? MSG_DONTWAIT : 0)) < 0) {
    if (errno != EINTR) throw OSError("sendmsg", errno);
  }
}

/// What recv_with_fds got.
struct Received {
  ssize_t bytes;  // the byte count (0 at end of file), or -1 if nothing was there
  /// Descriptors sent with the datagram were dropped by the kernel (MSG_CTRUNC): this
  /// process had no descriptor free for them (EMFILE). None of them is kept.
  bool fds_lost = false;
};

/// Receives one datagram and its descriptors, without blocking (poll first). The
/// descriptors come close-on-exec and private (PrivateFds), with no fork of this
/// process in between.
inline Received recv_with_fds(int sock, void* data, std::size_t size, std::vector<Fd>& fds) {
  msghdr msg{};
  iovec iov{data, size};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  const auto no_fork = PrivateFds::hold_forks();
  while ((n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT)) < 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return {-1};
    throw OSError("recvmsg", errno);
  }
  const std::size_t had = fds.size();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.push_back(Fd(fd).make_private());
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0) {
    fds.resize(had);  // a partial set is of no use: close what did come
    return {n, true};
  }
  return {n};
}

/// A worker the server started, as the pool sees it: its pid, a pidfd to signal it
/// safely (never a recycled pid), and the pool's ends of its pipes.
struct SpawnedWorker {
  pid_t pid = -1;
  Fd pidfd;
  Fd task_w;    // the pool writes tasks here
  Fd result_r;  // the pool reads outcomes here
};

/// No worker this time: a call failed with `error`, an errno (EAGAIN from fork, or
/// EMFILE: a resource ran out, which may pass). `call` says where (see limit_call).
struct SpawnRefused {
  std::string call;
  int error;
};

/// What ForkServer::spawn() got: a worker, a refusal, or nothing (the caller gave up).
using SpawnAnswer = std::variant<std::monostate, SpawnedWorker, SpawnRefused>;

class ForkServer {
 public:
  /// Runs in each worker: (slot, task read end, result write end, the worker's parent).
  using WorkerMain = std::function<int(std::size_t, int, int, pid_t)>;

  /// Forks the server. Call from a thread that lives as long as the server (the
  /// server dies with that thread, by PR_SET_PDEATHSIG), and that is mproc's own: it
  /// does not flush std::cout (see flush_std_streams).
  explicit ForkServer(WorkerMain worker_main) {
    Fd ours, theirs;
    {
      const auto no_fork = PrivateFds::hold_forks();
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        throw limit_error("socketpair (for the pool's fork server)", errno);
      }
      ours = Fd(sv[0]).make_private();
      theirs = Fd(sv[1]).make_private();
    }
    const pid_t parent = ::getpid();
    server_ = fork_child(
        {theirs.get()}, [&] { return serve(theirs.get(), parent, worker_main); }, FlushBeforeFork::c_streams);
    sock_ = std::move(ours);
  }
  ForkServer(const ForkServer&) = delete;
  ForkServer& operator=(const ForkServer&) = delete;
  /// Tells the server to kill what is left and exit: in so many words, and by closing
  /// the socket (a copy of it inherited by a process forked outside mproc would keep
  /// the end of file away).
  ~ForkServer() {
    if (server_.running()) {
      const Message quit{Message::quit, 0, 0, 0, 0};
      try {
        send_with_fds(sock_.get(), &quit, sizeof quit, {}, /*dontwait=*/true);
      } catch (const OSError&) {
        // Gone already, or stuck: the wait below ends with SIGKILL.
      }
    }
    sock_.reset();
    server_.wait(Deadline::after(std::chrono::seconds(5)));
  }

  /// Kills the server (and so its workers, by PR_SET_PDEATHSIG): it stopped answering.
  void kill() noexcept { server_.kill(SIGKILL); }

  /// Readable when the server has news (an exited worker, or that it died).
  int fd() const noexcept { return sock_.get(); }

  /// How long a worker may take to start before the server is taken to be stuck.
  /// Forking a small single-threaded process takes milliseconds, even under load.
  static constexpr std::chrono::seconds spawn_deadline{15};

  /// Starts a worker for `slot` and waits for the server's answer. While waiting,
  /// each time `wake_fd` is readable `give_up()` is asked (it drains wake_fd) whether
  /// to stop waiting: then nothing is returned (a worker started anyway is left to
  /// find its pipes closed, and exit). A resource that ran out, in the server (fork's
  /// EAGAIN, EMFILE) or here (no descriptor free for the new worker's: that worker is
  /// killed), is a SpawnRefused. After spawn_deadline of waiting the server is killed
  /// and Error thrown: the pool can't go on. The waiting is counted in slices of a
  /// second, and a slice that lasted far longer than that spanned a stop of the whole
  /// program (Ctrl-Z) and does not count: the server was stopped too.
  SpawnAnswer spawn(std::size_t slot, int wake_fd, const std::function<bool()>& give_up) {
    using clock = std::chrono::steady_clock;
    constexpr std::chrono::seconds slice{1};
    const Message request{Message::spawn, 0, static_cast<std::int32_t>(slot), 0, 0};
    send_with_fds(sock_.get(), &request, sizeof request, {});
    clock::duration waited{0};
    for (;;) {
      pollfd p[2] = {{sock_.get(), POLLIN, 0}, {wake_fd, POLLIN, 0}};
      const auto before = clock::now();
      const int ready = poll_until(p, 2, Deadline::after(slice));
      if (const auto took = clock::now() - before; took < 2 * slice) waited += took;
      if (ready == 0) {
        if (waited < spawn_deadline) continue;
        kill();
        throw Error("mproc: the pool's fork server did not start a worker within " +
                    std::to_string(spawn_deadline.count()) + " s; it was killed and the pool is broken");
      }
      if (p[1].revents != 0 && give_up()) return std::monostate{};
      if (p[0].revents == 0) continue;
      std::vector<Fd> fds;
      bool fds_lost = false;
      const auto reply = try_receive(fds, &fds_lost);
      if (!reply) continue;
      if (reply->type == Message::exited) {
        exits_.emplace_back(reply->pid, reply->status());
        continue;
      }
      if (reply->type == Message::spawn_failed) {
        return SpawnRefused{"the pool's fork server could not start a worker", reply->code};
      }
      if (reply->type == Message::spawned && fds_lost) {
        // Without its pipes the worker would only find them closed, or wait in its
        // initializer until the pool ends: ask the server to kill it now.
        const Message kill_it{Message::kill, reply->pid, reply->slot, 0, 0};
        send_with_fds(sock_.get(), &kill_it, sizeof kill_it, {});
        return SpawnRefused{"receiving a new worker's descriptors from the pool's fork server (MSG_CTRUNC)", EMFILE};
      }
      if (reply->type != Message::spawned || fds.size() != 3) throw ProtocolError("mproc: bad fork server reply");
      return SpawnedWorker{reply->pid, std::move(fds[2]), std::move(fds[0]), std::move(fds[1])};
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

  /// Waits until the server has news or the deadline passes.
  bool wait_readable(Deadline deadline) {
    if (!exits_.empty()) return true;
    pollfd p{sock_.get(), POLLIN, 0};
    return poll_until(&p, 1, deadline) > 0;
  }

 private:
  struct Message {
    enum Type : std::int32_t { spawn = 1, spawned, spawn_failed, exited, quit, kill };
    std::int32_t type;
    std::int32_t pid;
    std::int32_t slot;
    std::int32_t code;    // exit code (-1: unknown), or errno for spawn_failed
    std::int32_t signal;  // the signal that killed it, or 0
    ExitStatus status() const {
      ExitStatus s;
      if (signal != 0) s.signal = signal;
      else if (code >= 0) s.exit_code = code;
      return s;
    }
  };

  /// The next message, or nothing if none is there yet; `fds_lost`, if given, says
  /// whether descriptors sent with it were dropped (see Received). Throws if the
  /// server is gone.
  std::optional<Message> try_receive(std::vector<Fd>& fds, bool* fds_lost = nullptr) {
    Message m{};
    const Received r = recv_with_fds(sock_.get(), &m, sizeof m, fds);
    if (r.bytes == 0) throw Error("mproc: the pool's fork server died; the pool is broken");
    if (r.bytes < 0) return std::nullopt;
    if (r.bytes != static_cast<ssize_t>(sizeof m)) throw ProtocolError("mproc: bad fork server message");
    if (fds_lost != nullptr) *fds_lost = r.fds_lost;
    return m;
  }

  /// The server's loop: fork workers on request, report their exits, and when the
  /// pool says so (or closes the socket), kill whatever is left and leave.
  static int serve(int sock, pid_t parent, const WorkerMain& worker_main) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) return 0;
    std::signal(SIGINT, SIG_IGN);
    // The server needs its workers' exit statuses: a program that ignores SIGCHLD
    // (or handles it by reaping every child) would have them discarded or taken.
    // The workers get the program's own setting back.
    struct sigaction program_sigchld{};
    ::sigaction(SIGCHLD, nullptr, &program_sigchld);
    std::signal(SIGCHLD, SIG_DFL);
    const pid_t server = ::getpid();  // for the workers: whether it is still there
    std::map<pid_t, Child> children;
    std::vector<pollfd> fds;
    for (;;) {
      fds.assign(1, pollfd{sock, POLLIN, 0});
      for (auto& [pid, child] : children) fds.push_back({child.pidfd(), POLLIN, 0});
      poll_until(fds.data(), fds.size(), Deadline::forever());
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        auto it = std::find_if(children.begin(), children.end(),
                               [&](const auto& c) { return c.second.pidfd() == fds[i].fd; });
        const ExitStatus s = it->second.wait().value_or(ExitStatus{});  // empty: reaped by someone else
        Message m{Message::exited, it->first, 0, s.exit_code.value_or(-1), s.signal.value_or(0)};
        children.erase(it);
        send_with_fds(sock, &m, sizeof m, {});
      }
      if (fds[0].revents == 0) continue;
      Message request{};
      std::vector<Fd> none;
      const ssize_t n = recv_with_fds(sock, &request, sizeof request, none).bytes;
      if (n < 0) continue;
      if (n == 0 || request.type == Message::quit) break;  // the pool is done
      if (request.type == Message::kill) {
        if (const auto it = children.find(request.pid); it != children.end()) it->second.kill(SIGKILL);
        continue;
      }
      if (request.type != Message::spawn) continue;
      try {
        PipeEnds task = make_private_pipe(worker_pipe_bytes);
        PipeEnds result = make_private_pipe(worker_pipe_bytes);
        const auto slot = static_cast<std::size_t>(request.slot);
        const int task_r = task.read.get(), result_w = result.write.get();
        // Named as Python names them; counted here, where every worker is forked.
        // (A pair, not a structured binding: clang 14 cannot capture those in a lambda.)
        const auto identity_name = this_process().next_child("ForkPoolWorker");
        Child child = fork_child({task_r, result_w}, [&] {
          ::sigaction(SIGCHLD, &program_sigchld, nullptr);
          set_current_process(identity_name.second, /*daemon=*/true, identity_name.first);
          return worker_main(slot, task_r, result_w, server);
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
