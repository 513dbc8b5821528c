#pragma once
// Helpers for the hostile tests (tests/test_hostile_*.cpp): real limits set in a
// forked child (the last free descriptor taken, an address-space or file-size limit,
// a process limit for an unprivileged user), a machine whose every core is busy, and
// kills at random moments. Children report through their exit code and end with _exit
// (mproc_test::spawn); the test runner itself never runs under a limit.

// First: reliability_support.hpp brings shared_state_support.hpp, which must come
// before catch.hpp.
#include "reliability_support.hpp"

#include <mproc/errors.hpp>

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <typeinfo>
#include <vector>

// AddressSanitizer reserves terabytes of address space for its shadow memory, so no
// RLIMIT_AS a test could set leaves it room to start: the address-space tests are left
// out of sanitizer builds (and said so where they are).
#if defined(__SANITIZE_ADDRESS__)
#define MPROC_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPROC_TEST_UNDER_ASAN 1
#endif
#endif
#ifndef MPROC_TEST_UNDER_ASAN
#define MPROC_TEST_UNDER_ASAN 0
#endif

namespace mproc_test {

/// Exit codes of limit children: 0 is success, these say which step failed.
enum LimitChildCode : int {
  limit_not_set = 90,      // setrlimit or the user switch failed
  limit_wrong_error = 91,  // an exception other than the promised one
  limit_no_error = 92,     // a call that must fail at the limit succeeded
};

/// Takes every descriptor this process may still open, below a soft RLIMIT_NOFILE of
/// `limit`, then gives back `spare` of them: the next calls have exactly that many.
/// (Descriptors above the limit that were open before stay open; only new ones count.)
class DescriptorFiller {
 public:
  explicit DescriptorFiller(std::size_t spare, rlim_t limit = 128) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit lowered = saved_;
    lowered.rlim_cur = limit;
    ok_ = ::setrlimit(RLIMIT_NOFILE, &lowered) == 0;
    for (;;) {
      const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      fds_.push_back(fd);
    }
    give_back(spare);
  }
  DescriptorFiller(const DescriptorFiller&) = delete;
  DescriptorFiller& operator=(const DescriptorFiller&) = delete;
  ~DescriptorFiller() { release(); }

  /// Whether the limit was set.
  bool ok() const noexcept { return ok_; }
  /// Frees n more descriptors.
  void give_back(std::size_t n) {
    for (; n > 0 && !fds_.empty(); --n) {
      ::close(fds_.back());
      fds_.pop_back();
    }
  }
  /// Frees them all and restores the limit.
  void release() {
    give_back(fds_.size());
    (void)::setrlimit(RLIMIT_NOFILE, &saved_);
  }

 private:
  rlimit saved_{};
  std::vector<int> fds_;
  bool ok_ = false;
};

/// UndefinedBehaviorSanitizer checks the dynamic type of an object the first time it
/// sees its type through a pipe, which a process with no descriptor left cannot make:
/// it then reports a false "invalid vptr". A test that runs at the open-file limit
/// first shows it, above the limit, every type it will use there (a no-op in other
/// builds): an OSError through each of its bases, and whatever make() touches.
template <class Make>
void show_types_to_the_sanitizer(Make&& make) {
  try {
    throw mproc::OSError("warm-up", EMFILE);
  } catch (const std::exception& e) {
    (void)typeid(e).name();
    (void)e.what();
    if (const auto* os = dynamic_cast<const mproc::OSError*>(&e)) (void)os->error_code();
    if (const auto* error = dynamic_cast<const mproc::Error*>(&e)) (void)error->what();
  }
  make();
}

/// Sets the soft limit `resource` to `value`, at most the hard one (which stays, so
/// that an unprivileged process may raise the soft one again); false if refused.
inline bool set_soft_limit(int resource, rlim_t value) {
  rlimit r{};
  if (::getrlimit(resource, &r) != 0) return false;
  r.rlim_cur = r.rlim_max != RLIM_INFINITY && r.rlim_max < value ? r.rlim_max : value;
  return ::setrlimit(resource, &r) == 0;
}

/// Sets RLIMIT_AS (soft and hard) to `bytes` above what this process maps now.
inline bool limit_address_space_above_current(std::size_t bytes) {
  std::size_t mapped = 0;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    std::uint64_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) == 2) mapped += hi - lo;
  }
  const rlimit r{mapped + bytes, mapped + bytes};
  return ::setrlimit(RLIMIT_AS, &r) == 0;
}

/// The number of tasks (threads of every process) whose real user is uid: what
/// RLIMIT_NPROC counts.
inline std::size_t tasks_of_user(uid_t uid) {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = proc.path().filename().string();
    if (name.empty() || name[0] < '0' || name[0] > '9') continue;
    std::ifstream status(proc.path() / "status");
    for (std::string line; std::getline(status, line);) {
      unsigned real = 0;
      if (std::sscanf(line.c_str(), "Uid: %u", &real) == 1) {
        if (real == uid) {
          std::error_code ec2;
          for ([[maybe_unused]] const auto& t : std::filesystem::directory_iterator(proc.path() / "task", ec2)) ++n;
        }
        break;
      }
    }
  }
  return n;
}

/// Makes the calling (forked) process an unprivileged user with room for `more`
/// tasks (threads or processes) beyond the one it is: RLIMIT_NPROC does not bind
/// root, so a limit test as root must leave root first. Each test passes its own
/// uid, one no account uses, so that tests running at the same time (and whatever
/// else runs as nobody on the machine) do not count against each other's limits.
/// Without root, the process already is unprivileged: the limit is set above what
/// its user runs now. False if a step failed.
inline bool become_unprivileged_with_task_room(uid_t uid, std::size_t more) {
  if (::geteuid() == 0) {
    const gid_t gid = static_cast<gid_t>(uid);
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) {
      return false;
    }
    // Changing user clears the dumpable flag, which would make this process's /proc
    // files root's and keep its children from reading each other's: a user who logs
    // in has it set, and so must this one.
    if (::prctl(PR_SET_DUMPABLE, 1) != 0) return false;
  }
  const std::size_t now = tasks_of_user(::getuid());
  return set_soft_limit(RLIMIT_NPROC, static_cast<rlim_t>(now + more));
}

/// Busy loops on every core, at the test's priority, while it lives: a machine
/// loaded by other work. Each loop dies with the test (PR_SET_PDEATHSIG) and with
/// this object.
class BusyMachine {
 public:
  explicit BusyMachine(unsigned per_core = 2) {
    const unsigned n = per_core * std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < n; ++i) {
      loops_.push_back(spawn([] {
        (void)::prctl(PR_SET_PDEATHSIG, SIGKILL);
        volatile std::uint64_t x = 0;
        for (;;) x = x + 1;
        return 0;
      }));
    }
  }
  std::size_t size() const noexcept { return loops_.size(); }

 private:
  std::vector<mproc::detail::Child> loops_;  // their destructors kill and reap
};

/// A pause of a random length, up to max_us microseconds, spent running (not
/// sleeping): the moment of a kill lands anywhere in what the victim does.
inline void random_pause(std::mt19937& rng, unsigned max_us) {
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::microseconds(std::uniform_int_distribution<unsigned>(0, max_us)(rng));
  while (std::chrono::steady_clock::now() < until) {
  }
}

/// Waits until process pid is stopped (state 'T'), as after SIGSTOP; false if it
/// ended instead. (No assertion inside: callable from any thread.)
[[nodiscard]] inline bool wait_until_stopped(pid_t pid) {
  for (;;) {
    const auto s = proc_stat(pid);
    if (!s || s->state == 'Z' || s->state == 'X') return false;
    if (s->state == 'T') return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

}  // namespace mproc_test
