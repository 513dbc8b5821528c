#pragma once
// Child processes: fork with the hygiene every mproc child needs, and one RAII owner
// (Child) per pid that holds its pidfd, waits with deadlines, and always reaps.

#include <mproc/detail/fd.hpp>
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

/// How a process ended: an exit code or a signal.
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
    const char* abbrev = ::sigabbrev_np(*signal);
    return "was killed by signal " + std::to_string(*signal) + (abbrev ? std::string(" (SIG") + abbrev + ")" : "");
  }
};

/// Owns a child process: its pid and a pidfd that becomes readable when it exits.
/// The destructor kills (SIGKILL) and reaps a child still running, so no zombie
/// and no orphan outlives its owner; call wait() first for a graceful end.
class Child {
 public:
  Child() = default;
  Child(pid_t pid, Fd pidfd) noexcept : pid_(pid), pidfd_(std::move(pidfd)) {}
  Child(Child&& other) noexcept
      : pid_(std::exchange(other.pid_, -1)), pidfd_(std::move(other.pidfd_)), status_(std::move(other.status_)) {}
  Child& operator=(Child&& other) noexcept {
    if (this != &other) {
      finish();
      pid_ = std::exchange(other.pid_, -1);
      pidfd_ = std::move(other.pidfd_);
      status_ = std::move(other.status_);
    }
    return *this;
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { finish(); }

  pid_t pid() const noexcept { return pid_; }
  /// Readable (POLLIN) once the child has exited; -1 after it was reaped.
  int pidfd() const noexcept { return pidfd_.get(); }
  bool running() const noexcept { return pid_ > 0 && !status_; }
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

  /// Waits up to timeout (forever if negative) for the child to exit and reaps it.
  const std::optional<ExitStatus>& wait(std::chrono::nanoseconds timeout = std::chrono::nanoseconds(-1)) {
    if (!running()) return status_;
    pollfd p{pidfd_.get(), POLLIN, 0};
    if (poll_fds(&p, 1, timeout) > 0) reap(0);
    return status_;
  }

 private:
  void reap(int flags) {
    siginfo_t info{};
    for (;;) {
      if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | flags) == 0) break;
      if (errno == EINTR) continue;
      if (errno == ECHILD) {  // reaped behind our back (SIGCHLD set to SIG_IGN)
        status_ = ExitStatus{0, std::nullopt};
        pidfd_.reset();
        return;
      }
      throw OSError("waitid", errno);
    }
    if (info.si_pid == 0) return;  // WNOHANG and still running
    status_ = ExitStatus::from_siginfo(info);
    pidfd_.reset();
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
};

/// Flushes the C and C++ standard streams, so that output buffered before a fork is
/// written once, by the parent, and not again by every child.
inline void flush_std_streams() noexcept {
  std::fflush(stdout);
  std::fflush(stderr);
  try {
    std::cout.flush();
    std::cerr.flush();
  } catch (...) {
  }
}

/// Forks a child that runs body() and then _exit()s with its return value (an int)
/// — never returning into the caller's stack, never running the parent's static
/// destructors or atexit handlers twice. Before body() the child closes the pools'
/// private descriptors except keep, and unblocks all signals. An exception escaping
/// body() is printed to stderr and exits with 1.
template <class Body>
Child fork_child(std::initializer_list<int> keep, Body&& body) {
  flush_std_streams();
  const pid_t pid = ::fork();
  if (pid < 0) throw OSError("fork", errno);
  if (pid == 0) {
    int code = 1;
    try {
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
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    const int err = errno;
    ::kill(pid, SIGKILL);
    siginfo_t info{};
    ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED);
    throw OSError("pidfd_open", err);
  }
  return Child(pid, Fd(pidfd).make_private());
}

}  // namespace mproc::detail
