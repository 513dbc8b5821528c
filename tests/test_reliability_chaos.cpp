// Chaos: 200,000 tasks through imap_unordered while the consumer, every ~1,000
// results (about 0.1% of the tasks), sends SIGKILL or SIGSEGV to a random worker, and
// some tasks throw. Every task must be accounted for exactly once, by its id: a
// result, a RemoteError or a WorkerLost, nothing duplicated, nothing missing, and the
// pool never hangs. With retries, a task whose worker died runs again, so every task
// that does not throw delivers its result.
//
// The assertions are about accounting, never about timing: how many kills land on a
// running task varies from run to run, and only bounds that hold for any schedule
// are checked (each death fails at most one task).

#include "reliability_support.hpp"  // first: it configures Catch2

#include <mproc/mproc.hpp>

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <random>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int task_count = 200'000;
constexpr int kill_every = 1'000;     // results between two kills
constexpr int throw_every = 997;      // tasks whose id is a multiple of this throw
constexpr std::size_t pid_slots = 1 << 16;

/// The task: a few microseconds of work, then its id times three (so a result names
/// its task), or an exception naming it. It also marks its worker as one that has run
/// tasks (slot pid % pid_slots holds the pid), so the killer only shoots workers that
/// are up: several workers in a row dying before they are ready is how the pool
/// recognises a crashing initializer, and it then gives up on purpose.
struct ChaosTask {
  const mproc_test::SharedCounters* ran;
  static inline volatile std::uint64_t sink = 0;
  long operator()(int id) const {
    const pid_t self = ::getpid();
    (*ran)[static_cast<std::size_t>(self) % pid_slots].store(self, std::memory_order_relaxed);
    std::uint64_t x = static_cast<std::uint64_t>(id);
    for (int i = 0; i < 500; ++i) x = x * 6364136223846793005u + 1442695040888963407u;
    sink = x;  // keeps the work
    if (id % throw_every == 0) throw std::runtime_error("task " + std::to_string(id) + " throws");
    return static_cast<long>(id) * 3;
  }
};

/// Sends SIGKILL and SIGSEGV, in turn, to a random worker of the pool that has run
/// tasks; never to the fork server or any other process, even one that took a
/// worker's pid after it was reaped.
class Killer {
 public:
  Killer(pid_t server, const mproc_test::SharedCounters& ran) : server_(server), ran_(ran) {}

  template <class P>
  void kill_one(const P& pool) {
    auto pids = pool.worker_pids();
    std::shuffle(pids.begin(), pids.end(), rng_);
    for (pid_t pid : pids) {
      if (ran_[static_cast<std::size_t>(pid) % pid_slots].load() != pid) continue;
      const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
      if (fd < 0) continue;
      const mproc::detail::Fd pidfd(fd);
      // With the pidfd open, pid names this process until it is reaped: if it is
      // still the fork server's child now, it is a worker.
      const auto stat = mproc_test::proc_stat(pid);
      if (!stat || stat->ppid != server_) continue;
      const int sig = kills_ % 2 == 0 ? SIGKILL : SIGSEGV;
      if (::syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0) == 0) {
        ++kills_;
        return;
      }
    }
  }
  int kills() const noexcept { return kills_; }

 private:
  pid_t server_;
  const mproc_test::SharedCounters& ran_;
  std::mt19937 rng_{20240601};
  int kills_ = 0;
};

/// How each task ended: counts per id, so a duplicate shows as a count of 2.
struct Ledger {
  std::vector<int> results = std::vector<int>(task_count);
  std::vector<int> remote = std::vector<int>(task_count);
  std::vector<int> lost = std::vector<int>(task_count);
  int strays = 0;  // outcomes that name no valid task
  int lost_total = 0;

  void count(std::vector<int>& what, long id) {
    if (id < 0 || id >= task_count) {
      ++strays;
      return;
    }
    ++what[static_cast<std::size_t>(id)];
  }
};

/// The task id in an error message ("... task 1234 ..."), or -1.
long task_in(const char* what) {
  static const std::regex pattern("task ([0-9]+)");
  std::cmatch m;
  return std::regex_search(what, m, pattern) ? std::stol(m[1].str()) : -1;
}

struct ChaosRun {
  Ledger ledger;
  int kills = 0;
  bool server_survived = false;
};

ChaosRun run_chaos(std::size_t retries) {
  // Workers killed by SIGSEGV would otherwise write core files.
  const rlimit no_core{0, 0};
  REQUIRE(::setrlimit(RLIMIT_CORE, &no_core) == 0);
  mproc_test::SharedCounters ran(pid_slots);
  // The test runner's SIGSEGV handler, inherited through fork, would report a
  // failure from inside a worker the killer shoots: workers get the default action.
  mproc::Pool pool(ChaosTask{&ran},
                   {.processes = 2, .initializer = [] { std::signal(SIGSEGV, SIG_DFL); }, .retries = retries});
  REQUIRE(pool.apply(1) == 3);  // the workers are up
  const auto first = pool.worker_pids();
  REQUIRE(!first.empty());
  const auto worker = mproc_test::proc_stat(first.front());
  REQUIRE(worker.has_value());
  const pid_t server = worker->ppid;

  std::vector<int> ids(task_count);
  for (int i = 0; i < task_count; ++i) ids[static_cast<std::size_t>(i)] = i;
  ChaosRun run;
  Killer killer(server, ran);
  auto results = pool.imap_unordered(ids);
  int seen = 0;
  int next_kill = kill_every;
  for (;;) {
    try {
      const auto r = results.next();
      if (!r) break;
      if (*r % 3 != 0) ++run.ledger.strays;
      run.ledger.count(run.ledger.results, *r / 3);
    } catch (const mproc::WorkerLost& e) {
      INFO(e.what());
      CHECK((e.signal() == SIGKILL || e.signal() == SIGSEGV));
      ++run.ledger.lost_total;
      run.ledger.count(run.ledger.lost, task_in(e.what()));
    } catch (const mproc::RemoteError& e) {
      CHECK(e.type_name() == "std::runtime_error");
      run.ledger.count(run.ledger.remote, task_in(e.what()));
    }
    if (++seen >= next_kill) {
      killer.kill_one(pool);
      next_kill = seen + kill_every;
    }
  }
  run.kills = killer.kills();
  run.server_survived = mproc_test::is_running(server);
  CHECK(pool.apply(2) == 6);  // and the pool goes on
  std::printf("chaos (retries = %zu): %d tasks, %d kills, %d WorkerLost\n", retries, task_count, run.kills,
              run.ledger.lost_total);
  return run;
}

/// Every id has exactly one outcome and nothing else came back.
void check_exactly_once(const ChaosRun& run) {
  const Ledger& l = run.ledger;
  CHECK(l.strays == 0);
  int wrong = 0;
  for (std::size_t id = 0; id < static_cast<std::size_t>(task_count); ++id) {
    const int outcomes = l.results[id] + l.remote[id] + l.lost[id];
    const bool throws = id % throw_every == 0;
    // A task that throws never has a result; one that does not never has a RemoteError.
    const bool ok = outcomes == 1 && (throws ? l.results[id] == 0 : l.remote[id] == 0);
    if (!ok && ++wrong <= 10) {
      INFO("task " << id << ": " << l.results[id] << " results, " << l.remote[id] << " RemoteError, " << l.lost[id]
                   << " WorkerLost");
      CHECK(ok);
    }
  }
  CHECK(wrong == 0);
  CHECK(run.server_survived);  // only workers were shot
}

}  // namespace

TEST_CASE("chaos, retries = 0: every task accounted for exactly once while workers are killed") {
  const ChaosRun run = run_chaos(0);
  check_exactly_once(run);
  CHECK(run.kills >= 50);
  // Each death fails at most the one task its worker was running.
  CHECK(run.ledger.lost_total <= run.kills);
  CHECK(run.ledger.lost_total > 0);
}

TEST_CASE("chaos, retries = 3: every task that does not throw delivers its result while workers are killed") {
  const ChaosRun run = run_chaos(3);
  check_exactly_once(run);
  CHECK(run.kills >= 50);
  CHECK(run.ledger.lost_total == 0);
  int results = 0, remote = 0;
  for (int n : run.ledger.results) results += n;
  for (int n : run.ledger.remote) remote += n;
  CHECK(remote == (task_count + throw_every - 1) / throw_every);
  CHECK(results == task_count - remote);
}
