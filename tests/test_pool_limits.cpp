// A Pool at the machine's limits: out of descriptors (RLIMIT_NOFILE) when it starts
// or when it replaces a worker, and out of processes (fork's EAGAIN under
// RLIMIT_NPROC) when it replaces one. A shortage that passes does not break a pool
// that still has a worker; one that lasts, or leaves it with none, breaks it with an
// OSError that names the errno and the limit.
//
// Each scenario runs in a forked child, so that the limits it lowers stay there; the
// child reports what it saw as text. RLIMIT_NPROC does not hold for root, so the
// scenarios that need it first become a user of their own.

#include "reliability_support.hpp"  // first: it configures Catch2

#include <mproc/mproc.hpp>

#include <grp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::Gate;
using mproc_test::iota_vector;

/// Runs body in a forked child; returns what it returned, or the exception it threw.
/// The child ends with _exit; one still running after the deadline is killed.
std::string in_child(const std::function<std::string()>& body, Clock::duration limit = 60s) {
  auto report = mproc::detail::make_pipe();
  auto child = mproc::detail::fork_child({}, [&] {
    std::string text;
    try {
      text = body();
    } catch (const std::exception& e) {
      text = std::string("exception: ") + e.what();
    }
    (void)mproc::detail::write_all(report.write.get(), text.data(), text.size());
    return 0;
  });
  report.write.reset();
  const auto deadline = Clock::now() + limit;
  const std::string text = mproc_test::read_until(report.read.get(), "\n(end)", deadline);  // until end of file
  if (!child.wait(mproc::detail::Deadline::at(deadline))) {
    child.kill(SIGKILL);
    (void)child.wait();
    return text + " (the child hung)";
  }
  return text;
}

/// Makes the calling process (a test's child) a user of its own: no other process
/// runs as it, so only the test's processes count against its RLIMIT_NPROC, and
/// without root's privileges the limit holds.
void become_unprivileged() {
  constexpr uid_t uid = 64'123;
  if (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) {
    throw mproc::OSError("setresuid", errno);
  }
}

using Resource = decltype(RLIMIT_NOFILE);  // glibc's enum of limits, which prlimit takes

/// Sets the soft limit `resource` of process pid (0: this one); returns the old limits.
rlimit set_soft_limit(pid_t pid, Resource resource, rlim_t soft) {
  rlimit old{};
  if (::prlimit(pid, resource, nullptr, &old) != 0) {
    throw mproc::OSError("prlimit", errno);
  }
  const rlimit now{soft, old.rlim_max};
  if (::prlimit(pid, resource, &now, nullptr) != 0) {
    throw mproc::OSError("prlimit", errno);
  }
  return old;
}
void restore_limit(pid_t pid, Resource resource, const rlimit& old) {
  if (::prlimit(pid, resource, &old, nullptr) != 0) {
    throw mproc::OSError("prlimit", errno);
  }
}

/// F for these pools: -1 kills its worker, -2 waits for the gate, -3 returns the
/// worker's parent (the pool's fork server); any other x gives 2x.
struct Task {
  const Gate* gate;
  int operator()(int x) const {
    if (x == -1) mproc_test::die_by_signal(SIGKILL);
    if (x == -2) gate->wait();
    if (x == -3) return static_cast<int>(::getppid());
    return 2 * x;
  }
};

/// In a child made unprivileged: a pool whose fork server may fork no more (its
/// RLIMIT_NPROC is set to one process, and its user has more already), once one of its
/// workers has been killed.
struct NoForksLeft {
  bool unprivileged = (become_unprivileged(), true);
  Gate gate;
  mproc::Pool<Task> pool;
  pid_t server = pool.apply(-3);
  rlimit old = set_soft_limit(server, RLIMIT_NPROC, 1);
  bool worker_lost = lose_a_worker();

  explicit NoForksLeft(std::size_t processes) : pool(Task{&gate}, {.processes = processes}) {}
  bool lose_a_worker() {
    try {
      (void)pool.apply(-1);
      return false;
    } catch (const mproc::WorkerLost&) {
      return true;
    }
  }
};

/// "ok" if the pool's map gives the right results, else what went wrong.
template <class P>
std::string check_map(P& pool) {
  const auto out = pool.map(iota_vector(200));
  for (int i = 0; i < 200; ++i) {
    if (out[static_cast<std::size_t>(i)] != 2 * i) return "wrong result at " + std::to_string(i);
  }
  return "ok";
}

/// Waits until the pool has n workers. Nothing tells the test that a replacement
/// started, so it looks again every millisecond, until the hang limit.
template <class P>
bool wait_for_workers(const P& pool, std::size_t n) {
  const auto deadline = Clock::now() + mproc_test::hang_limit;
  while (pool.worker_pids().size() < n) {
    if (Clock::now() > deadline) return false;
    ::usleep(1000);
  }
  return true;
}

/// "ok" if the error names what ran out: the errno's name, the limit, and the code.
std::string names_limit(const mproc::OSError& e, int code, const char* errno_name, const char* limit) {
  const std::string what = e.what();
  if (e.error_code() != code || what.find(errno_name) == std::string::npos || what.find(limit) == std::string::npos) {
    return std::string("an OSError that does not name ") + errno_name + " and " + limit + ": " + what;
  }
  return "ok";
}

/// Fills every free descriptor below `below` with copies of fd; returns them.
std::vector<mproc::detail::Fd> fill_descriptors(int fd, rlim_t below) {
  const rlimit old = set_soft_limit(0, RLIMIT_NOFILE, below);
  std::vector<mproc::detail::Fd> fillers;
  for (int d; (d = ::dup(fd)) >= 0;) fillers.emplace_back(d);
  const int err = errno;
  restore_limit(0, RLIMIT_NOFILE, old);
  if (err != EMFILE) throw mproc::OSError("dup", err);
  return fillers;
}

}  // namespace

TEST_CASE("at the open-file limit a Pool raises OSError naming EMFILE and RLIMIT_NOFILE, never a bad fork server "
          "reply") {
  // With k descriptors free, for every k from none to enough: the pool works, or its
  // constructor or first call raises the OSError. Some k leave the pool room for its
  // own descriptors but not for a new worker's, which then come truncated (MSG_CTRUNC).
  std::vector<std::string> seen;
  for (int free = 0; free <= 12; ++free) {
    const std::string outcome = in_child([free] {
      const auto spare = mproc::detail::make_pipe();
      const rlim_t limit = static_cast<rlim_t>(mproc_test::open_fd_count()) + 64;
      auto fillers = fill_descriptors(spare.read.get(), limit);
      fillers.resize(fillers.size() - static_cast<std::size_t>(free));
      set_soft_limit(0, RLIMIT_NOFILE, limit);
      std::string result;
      try {
        mproc::Pool pool(+[](int x) { return 2 * x; }, {.processes = 1});
        result = pool.apply(21) == 42 ? "ok" : "wrong result";
      } catch (const mproc::OSError& e) {
        const std::string named = names_limit(e, EMFILE, "EMFILE", "RLIMIT_NOFILE");
        result = named == "ok" ? "EMFILE" : named;
      }
      if (!mproc_test::has_no_children()) result += ", and a process was left behind";
      return result;
    });
    INFO(free << " descriptors free: " << outcome);
    CHECK((outcome == "ok" || outcome == "EMFILE"));
    seen.push_back(outcome);
  }
  CHECK(seen.front() == "EMFILE");  // none free
  CHECK(seen.back() == "ok");       // enough
}

TEST_CASE("a replacement worker refused by fork (EAGAIN under RLIMIT_NPROC) starts once processes free up, and the "
          "pool goes on meanwhile") {
  const std::string outcome = in_child([] {
    NoForksLeft p(2);
    if (!p.worker_lost) return std::string("the task that kills its worker succeeded");
    // Its result is read after the pool tried to replace the worker, and was refused.
    if (p.pool.apply(5) != 10) return std::string("wrong result while a worker is missing");
    restore_limit(p.server, RLIMIT_NPROC, p.old);
    if (!wait_for_workers(p.pool, 2)) return std::string("the worker was not replaced");
    return check_map(p.pool);
  });
  CHECK(outcome == "ok");
}

TEST_CASE("a pool whose only worker can't be replaced (fork's EAGAIN) breaks with an OSError naming EAGAIN and "
          "RLIMIT_NPROC") {
  const std::string outcome = in_child([] {
    NoForksLeft p(1);
    try {
      (void)p.pool.apply_async(5).get(mproc_test::hang_limit);
      return std::string("a task ran with no worker");
    } catch (const mproc::OSError& e) {
      return names_limit(e, EAGAIN, "EAGAIN", "RLIMIT_NPROC");
    }
  });
  CHECK(outcome == "ok");
}

TEST_CASE("a replacement refused for 10 s breaks the pool with an OSError naming EAGAIN and RLIMIT_NPROC, although "
          "a worker lives") {
  const std::string outcome = in_child([] {
    NoForksLeft p(2);
    auto busy = p.pool.apply_async(-2);  // the gate opens only at the end: the live worker stays busy
    std::string result;
    try {
      (void)p.pool.apply_async(5).get(mproc_test::hang_limit);  // longer than the 10 s
      result = "a task ran on a worker that is busy for good";
    } catch (const mproc::TimeoutError&) {
      result = "the pool neither replaced the worker nor broke";
    } catch (const mproc::OSError& e) {
      result = names_limit(e, EAGAIN, "EAGAIN", "RLIMIT_NPROC");
      if (std::string(e.what()).find("for 10 s") == std::string::npos) result += " (no 'for 10 s')";
    }
    p.gate.open(2);
    return result;
  });
  CHECK(outcome == "ok");
}

TEST_CASE("a replacement worker at the open-file limit starts once descriptors free up, and the pool goes on "
          "meanwhile") {
  const std::string outcome = in_child([] {
    Gate gate;
    const auto spare = mproc::detail::make_pipe();
    // Every descriptor below the limit is taken before the pool starts, so the pool's
    // own ones, and those a dead worker frees, are above it: no new one fits.
    const rlim_t limit = static_cast<rlim_t>(mproc_test::open_fd_count()) + 64;
    auto fillers = fill_descriptors(spare.read.get(), limit);
    std::string result;
    {
      mproc::Pool pool(Task{&gate}, {.processes = 2});
      if (pool.map(iota_vector(10)).back() != 18) return std::string("wrong result");
      const rlimit old = set_soft_limit(0, RLIMIT_NOFILE, limit);
      try {
        (void)pool.apply(-1);
        return std::string("the task that kills its worker succeeded");
      } catch (const mproc::WorkerLost&) {
      }
      // Its result is read after the pool tried to take a new worker's descriptors.
      if (pool.apply(5) != 10) return std::string("wrong result while a worker is missing");
      fillers.resize(fillers.size() - 16);
      if (!wait_for_workers(pool, 2)) return std::string("the worker was not replaced");
      result = check_map(pool);
      restore_limit(0, RLIMIT_NOFILE, old);
    }
    // A worker started while its descriptors could not be taken is killed, not left.
    if (!mproc_test::has_no_children()) result += ", and a process was left behind";
    return result;
  });
  CHECK(outcome == "ok");
}
