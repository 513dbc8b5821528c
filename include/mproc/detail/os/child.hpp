#pragma once
// Child processes: fork with the hygiene every mproc child needs, and one RAII owner
// (Child) per pid that holds its pidfd, waits with deadlines, and always reaps.

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/os/fork_gate.hpp>
#include <mproc/errors.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <iostream>
#include <optional>
#include <string>
#include <utility>

namespace mproc::detail {

/// How a process ended: an exit code or a signal (neither: unknown, see Child).
struct ExitStatus {
  std::optional<int> exit_code;
  std::optional<int> signal;

  static ExitStatus from_siginfo(const siginfo_t& info) {
    ExitStatus s;
    if (info.si_code == CLD_EXITED) s.exit_code = info.si_status;
    else s.signal = info.si_status;
    return s;
  }
  bool clean() const noexcept { return exit_code == 0; }
  /// Python's Process.exitcode: the exit code, or -N after signal N.
  int python_exitcode() const noexcept { return exit_code ? *exit_code : -signal.value_or(0); }
  /// "exited with code 3" or "was killed by signal 9 (SIGKILL)".
  std::string describe() const {
    if (exit_code) return "exited with code " + std::to_string(*exit_code);
    if (!signal) return "ended, how is unknown (its exit status was discarded: is SIGCHLD ignored?)";
    const char* abbrev = ::sigabbrev_np(*signal);
    return "was killed by signal " + std::to_string(*signal) + (abbrev ? std::string(" (SIG") + abbrev + ")" : "");
  }
};

/// Owns a child process: its pid and a pidfd that becomes readable when it exits.
/// The destructor kills (SIGKILL) and reaps a child still running, so no zombie
/// and no orphan outlives its owner; call wait() first for a graceful end.
///
/// If the program ignores SIGCHLD (SIG_IGN or SA_NOCLDWAIT), the kernel reaps its
/// children itself and discards how they ended. The child is then seen to end
/// (running() turns false) but status() stays empty: never a made-up exit code 0.
/// Process::exitcode() thus stays nullopt, as Python's exitcode stays None. mproc
/// does not reset SIGCHLD for the program, whose own children it would turn into
/// zombies; a pool's fork server, a process of its own, does (fork_server.hpp).
class Child {
 public:
  Child() = default;
  Child(pid_t pid, Fd pidfd) noexcept : pid_(pid), pidfd_(std::move(pidfd)) {}
  Child(Child&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)),
        pidfd_(std::move(other.pidfd_)),
        status_(std::move(other.status_)),
        ended_(std::exchange(other.ended_, false)) {}
  Child& operator=(Child&& other) noexcept {
    if (this != &other) {
      finish();
      pid_ = std::exchange(other.pid_, -1);
      pidfd_ = std::move(other.pidfd_);
      status_ = std::move(other.status_);
      ended_ = std::exchange(other.ended_, false);
    }
    return *this;
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { finish(); }

  pid_t pid() const noexcept { return pid_; }
  /// Readable (POLLIN) once the child has exited. Open until the Child is destroyed,
  /// reaped or not, so that a copy of the number taken earlier never names a
  /// descriptor reused for something else.
  int pidfd() const noexcept { return pidfd_.get(); }
  bool running() const noexcept { return pid_ > 0 && !status_ && !ended_; }
  /// How it ended, once reaped; stays empty if the status was discarded (see above).
  const std::optional<ExitStatus>& status() const noexcept { return status_; }

  /// Sends a signal if the child has not been reaped (so never to a recycled pid).
  void kill(int sig) noexcept {
    if (running()) (void)::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0);
  }

  /// Reaps the child if it has exited; returns its status then.
  const std::optional<ExitStatus>& try_reap() {
    if (running()) reap(WNOHANG);
    return status_;
  }

  /// Waits until the deadline at most for the child to exit, and reaps it.
  const std::optional<ExitStatus>& wait(Deadline deadline = Deadline::forever()) {
    if (!running()) return status_;
    pollfd p{pidfd_.get(), POLLIN, 0};
    if (poll_until(&p, 1, deadline) > 0) reap(0);
    return status_;
  }

 private:
  void reap(int flags) {
    siginfo_t info{};
    for (;;) {
      if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | flags) == 0) break;
      if (errno == EINTR) continue;
      if (errno == ECHILD) {  // reaped by the kernel (SIGCHLD ignored) or by someone else
        if (flags & WNOHANG) {
          // Gone, or still running while SIGCHLD is ignored (waitid then says ECHILD
          // only once it ended): the pidfd tells which.
          pollfd p{pidfd_.get(), POLLIN, 0};
          if (::poll(&p, 1, 0) == 0) return;
        }
        ended_ = true;
        return;
      }
      throw OSError("waitid", errno);
    }
    if (info.si_pid == 0) return;  // WNOHANG and still running
    status_ = ExitStatus::from_siginfo(info);
  }
  void finish() noexcept {
    if (!running()) return;
    kill(SIGKILL);
    try {
      wait();
    } catch (...) {
    }
  }

  pid_t pid_ = -1;
  Fd pidfd_;
  std::optional<ExitStatus> status_;
  bool ended_ = false;  // ended without a status (see above)
};

/// Flushes the C and C++ standard streams, so that output buffered before a fork is
/// written once, by the parent, and not again by every child. C stdio locks each FILE,
/// so any thread may flush it; std::cout and std::cerr only from a thread that may use
/// them (after sync_with_stdio(false) their buffers have no lock), never the pool's.
inline void flush_c_streams() noexcept {
  std::fflush(stdout);
  std::fflush(stderr);
}
inline void flush_std_streams() noexcept {
  flush_c_streams();
  try {
    std::cout.flush();
    std::cerr.flush();
  } catch (...) {
  }
}

/// Which standard streams the parent flushes before fork_child forks: all of them, or
/// only C stdio when forking from a thread of mproc's own (the caller's thread flushed
/// std::cout and std::cerr beforehand, see flush_std_streams).
enum class FlushBeforeFork { all_streams, c_streams };

/// Forks a child that runs body() and then _exit()s with its return value (an int)
/// — never returning into the caller's stack, never running the parent's static
/// destructors or atexit handlers twice. Before body() the child closes the pools'
/// private descriptors except keep, and unblocks all signals. An exception escaping
/// body() is printed to stderr and exits with 1.
template <class Body>
Child fork_child(std::initializer_list<int> keep, Body&& body, FlushBeforeFork flush = FlushBeforeFork::all_streams) {
  if (flush == FlushBeforeFork::all_streams) flush_std_streams();
  else flush_c_streams();
  // The child waits for a go from the parent until its pidfd is open: a child that
  // someone else may reap the moment it exits (SIGCHLD ignored, or a handler that
  // reaps) has no pidfd to open once reaped, and a parent that can't open one (out of
  // descriptors) kills the child before it ran anything. The go pipe's two
  // descriptors also make a program at its open-file limit fail here, before a fork.
  PipeEnds go = make_private_pipe();
  pid_t pid;
  {
    ForkGate::Forking gate;  // no pool thread is inside malloc (sanitized builds only)
    pid = ::fork();  // pthread_atfork takes PrivateFds::hold_forks() around it
    gate.forked(pid);
  }
  if (pid < 0) throw limit_error("fork", errno);
  if (pid == 0) {
    int code = 1;
    try {
      {
        ::close(go.write.release());  // no lock: this child may come from a program with other threads
        char byte;
        while (::read(go.read.get(), &byte, 1) < 0 && errno == EINTR) {
          // a byte, or end of file if the parent is gone (a parent that gave up killed
          // this child first: SIGKILL is taken before the read returns to user code)
        }
      }
      PrivateFds::close_all_except(keep);
      sigset_t none;
      sigemptyset(&none);
      ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mproc: uncaught exception in child process %d: %s\n", static_cast<int>(::getpid()),
                   e.what());
    } catch (...) {
      std::fprintf(stderr, "mproc: uncaught non-standard exception in child process %d\n",
                   static_cast<int>(::getpid()));
    }
    flush_std_streams();
    ::_exit(code);
  }
  Fd pidfd;
  int err = 0;
  {
    const auto no_fork = PrivateFds::hold_forks();
    pidfd = Fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))).make_private();
    err = errno;
  }
  if (!pidfd) {
    ::kill(pid, SIGKILL);  // before the go pipe closes: the child runs nothing of body()
    siginfo_t info{};
    ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED);
    throw limit_error("pidfd_open", err);
  }
  (void)write_all(go.write.get(), "g", 1);
  return Child(pid, std::move(pidfd));
}

}  // namespace mproc::detail
