#pragma once
// Helpers for the reliability tests: the process tree seen through /proc, a test
// process that adopts the orphans of the programs it runs (a child subreaper), so it
// can check that every process of a killed program's tree died and reap them itself,
// and the resource counts (descriptors, threads, resident memory) that must stay flat.

// First: it must come before catch.hpp (it registers the /dev/shm listener).
#include "shared_state_support.hpp"

#include "pool_test_support.hpp"

#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/os/resident_memory.hpp>

#include <catch2/catch.hpp>

#include <dirent.h>
#include <malloc.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

// MPROC_TEST_ASAN: defined in an AddressSanitizer build, where resident memory and
// address-space limits mean nothing (its quarantine and shadow memory).
#if defined(__SANITIZE_ADDRESS__)
#define MPROC_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPROC_TEST_ASAN 1
#endif
#endif

namespace mproc_test {

/// 0, 1, ..., n - 1.
inline std::vector<int> iota_vector(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i);
  return v;
}

/// A process as /proc/<pid>/stat shows it: its state letter (R, S, D, Z, ...) and
/// its parent.
struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
};

/// The state and parent of pid, or nothing if there is no such process (reaped).
/// Unlike kill(pid, 0), this tells a zombie ('Z') from a live process.
inline std::optional<ProcStat> proc_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse
  // from the last ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  ProcStat s;
  rest >> s.state >> s.ppid;
  if (!rest) return std::nullopt;
  return s;
}

/// True while pid runs (exists and is not a zombie).
inline bool is_running(pid_t pid) {
  const auto s = proc_stat(pid);
  return s && s->state != 'Z' && s->state != 'X';
}

/// Every process whose parent chain leads to root (root excluded), parents before
/// their children. A snapshot: processes may appear or end meanwhile.
inline std::vector<pid_t> descendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;  // ppid -> pid
  if (DIR* d = ::opendir("/proc")) {
    while (const dirent* e = ::readdir(d)) {
      char* end = nullptr;
      const long pid = std::strtol(e->d_name, &end, 10);
      if (end == e->d_name || *end != '\0') continue;
      if (const auto s = proc_stat(static_cast<pid_t>(pid))) children.emplace(s->ppid, static_cast<pid_t>(pid));
    }
    ::closedir(d);
  }
  std::vector<pid_t> out;
  std::vector<pid_t> todo{root};
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    const auto [first, last] = children.equal_range(p);
    for (auto it = first; it != last; ++it) {
      out.push_back(it->second);
      todo.push_back(it->second);
    }
  }
  return out;
}

/// Makes this process the child subreaper while it lives: the orphans of its
/// descendants become its children (not init's), so it can see them end and reap them.
class Subreaper {
 public:
  Subreaper() { REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0); }
  Subreaper(const Subreaper&) = delete;
  Subreaper& operator=(const Subreaper&) = delete;
  ~Subreaper() { (void)::prctl(PR_SET_CHILD_SUBREAPER, 0); }
};

/// Watches a set of processes through pidfds, which become readable when the process
/// ends (whoever its parent is), and never point to a recycled pid.
class ProcessWatch {
 public:
  /// Starts watching pid; returns false if it had already been reaped.
  bool add(pid_t pid) {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) return false;
    watched_.push_back({pid, mproc::detail::Fd(fd)});
    return true;
  }
  std::size_t size() const noexcept { return watched_.size(); }

  /// Waits until every watched process has ended; false if some still run at the deadline.
  bool wait_all_ended(std::chrono::steady_clock::time_point deadline) {
    for (auto& w : watched_) {
      pollfd p{w.fd.get(), POLLIN, 0};
      if (mproc::detail::poll_until(&p, 1, mproc::detail::Deadline::at(deadline)) == 0) return false;
    }
    return true;
  }
  /// The watched processes still running, as "pid (state)" for messages.
  std::string survivors() const {
    std::string out;
    for (const auto& w : watched_) {
      pollfd p{w.fd.get(), POLLIN, 0};
      if (::poll(&p, 1, 0) == 0) {
        const auto s = proc_stat(w.pid);
        out += std::to_string(w.pid) + " (" + (s ? std::string(1, s->state) : std::string("gone")) + ") ";
      }
    }
    return out;
  }
  /// SIGKILLs whatever still runs (cleanup after a failed check).
  void kill_all() const {
    for (const auto& w : watched_) (void)::syscall(SYS_pidfd_send_signal, w.fd.get(), SIGKILL, nullptr, 0);
  }
  std::vector<pid_t> pids() const {
    std::vector<pid_t> out;
    for (const auto& w : watched_) out.push_back(w.pid);
    return out;
  }

 private:
  struct Watched {
    pid_t pid;
    mproc::detail::Fd fd;
  };
  std::vector<Watched> watched_;
};

/// Reaps every child of this process, waiting (until the deadline) for those still
/// running; false if one still ran then. With the test a subreaper, that includes
/// the orphans of the programs it ran.
inline bool reap_all_children(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    siginfo_t info{};
    if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG) != 0) {
      if (errno == EINTR) continue;
      REQUIRE(errno == ECHILD);
      return true;  // none left
    }
    if (info.si_pid != 0) continue;  // reaped one
    // The rest still run (or are just leaving): wait for them to end.
    ProcessWatch running;
    for (pid_t pid : descendants(::getpid())) {
      const auto s = proc_stat(pid);
      if (s && s->ppid == ::getpid()) running.add(pid);
    }
    if (!running.wait_all_ended(deadline)) return false;
  }
}

/// The number of threads of this process.
inline std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

/// This process's resident memory in MiB, once the heap's free pages went back to
/// the system: what the process holds, not what its allocator keeps for reuse (glibc
/// keeps tens of MiB after a peak, more or less depending on fragmentation).
inline double resident_mib() {
  (void)::malloc_trim(0);
  return static_cast<double>(mproc::detail::resident_bytes()) / (1 << 20);
}

/// Reads from fd until the text read so far contains `needle` or the deadline
/// passes; returns everything read. fd may be blocking or not.
inline std::string read_until(int fd, const std::string& needle, std::chrono::steady_clock::time_point deadline) {
  std::string text;
  char buf[4096];
  while (text.find(needle) == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    if (std::chrono::steady_clock::now() >= deadline) break;
    if (mproc::detail::poll_until(&p, 1, mproc::detail::Deadline::at(deadline)) == 0) break;
    const ssize_t n = mproc::detail::read_some(fd, buf, sizeof buf);
    if (n == 0) break;  // end of file
    if (n > 0) text.append(buf, static_cast<std::size_t>(n));
  }
  return text;
}

/// Waits until at least n processes two levels or more below root (the workers of
/// its pools, under their fork servers) are running or ready to run ('R'); false if
/// root ends or the deadline passes first. Nothing signals that a process appeared,
/// so the tree is looked at again every 5 ms.
inline bool wait_for_busy_workers(pid_t root, std::size_t n, std::chrono::steady_clock::time_point deadline) {
  const mproc::detail::Fd root_fd(static_cast<int>(::syscall(SYS_pidfd_open, root, 0)));
  if (!root_fd) return false;
  for (;;) {
    std::size_t busy = 0;
    for (pid_t pid : descendants(root)) {
      const auto s = proc_stat(pid);
      if (s && s->ppid != root && s->state == 'R') ++busy;
    }
    if (busy >= n) return true;
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration{}) return false;
    pollfd p{root_fd.get(), POLLIN, 0};
    const auto pause = std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(5));
    if (mproc::detail::poll_until(&p, 1, mproc::detail::Deadline::after(pause)) > 0) {
      return false;  // root ended
    }
  }
}

/// Waits until fd reaches end of file (every process holding its write end has
/// closed it or ended), discarding what arrives; false at the deadline.
inline bool wait_eof(int fd, std::chrono::steady_clock::time_point deadline) {
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (mproc::detail::poll_until(&p, 1, mproc::detail::Deadline::at(deadline)) == 0) return false;
    if (mproc::detail::read_some(fd, buf, sizeof buf) == 0) return true;
  }
}

}  // namespace mproc_test
