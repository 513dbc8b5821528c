// Flat resources: 1,000 pools made and destroyed, and 10^6 tasks through one pool
// whose workers are replaced all along, leave the descriptor count, the thread count
// and the child processes where they were, and resident memory within a bound that a
// leak per pool or per task would pass.
//
// Under AddressSanitizer freed memory sits in its quarantine (256 MiB by default)
// before it is reused, so resident memory says nothing there: only the descriptor,
// thread and process counts are checked in that build.

#include "reliability_support.hpp"  // first: it configures Catch2

#include <mproc/mproc.hpp>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <vector>

namespace {

using mproc_test::iota_vector;

using Clock = std::chrono::steady_clock;
using mproc_test::Gate;

/// Growth of resident memory that no leak-free run reaches and a leak of 16 bytes
/// per task over 10^6 tasks, or 16 KiB per pool over 1,000 pools, does.
constexpr double rss_bound_mib = 16;

#ifdef MPROC_TEST_ASAN
constexpr bool rss_is_meaningful = false;
#else
constexpr bool rss_is_meaningful = true;
#endif

/// What must not grow: this process's descriptors, threads and processes under it,
/// and its resident memory.
struct Footprint {
  std::size_t fds = mproc_test::open_fd_count();
  std::size_t threads = mproc_test::thread_count();
  std::size_t processes = mproc_test::descendants(::getpid()).size();
  double rss_mib = mproc_test::resident_mib();
};

/// Checks now against before: at most `fd_slack` more descriptors (a worker being
/// replaced at that instant holds three), the same threads, at most `max_processes`
/// processes below this one, and resident memory within the bound.
void check_flat(const Footprint& before, const Footprint& now, std::size_t fd_slack, std::size_t max_processes,
                const char* when) {
  INFO(when << ": " << now.fds << " descriptors (were " << before.fds << "), " << now.threads << " threads (were "
            << before.threads << "), " << now.processes << " processes below (were " << before.processes << "), "
            << now.rss_mib << " MiB resident (was " << before.rss_mib << ")");
  CHECK(now.fds <= before.fds + fd_slack);
  CHECK(now.threads == before.threads);
  CHECK(now.processes <= max_processes);
  if (rss_is_meaningful) CHECK(now.rss_mib - before.rss_mib < rss_bound_mib);
}

/// F for the pool churn: doubles x; x == -1 kills its worker, x == -2 waits for a
/// gate that never opens (until terminate()).
struct DoubleOrDie {
  const Gate* gate;
  int operator()(int x) const {
    if (x == -1) mproc_test::die_by_signal(SIGKILL);
    if (x == -2) gate->wait();
    return 2 * x;
  }
};

}  // namespace

TEST_CASE("1,000 pools made and destroyed: descriptors, threads, children and memory stay flat") {
  REQUIRE(mproc_test::has_no_children());
  Gate gate;  // never opened: keeps a task busy until terminate()
  for (int i = 0; i < 10; ++i) {  // warm-up: first-use allocations are not leaks
    mproc::Pool pool(DoubleOrDie{&gate}, {.processes = 2});
    (void)pool.map(iota_vector(100));
  }
  const Footprint before;
  const auto start = Clock::now();
  for (int i = 0; i < 1000; ++i) {
    mproc::Pool pool(DoubleOrDie{&gate}, {.processes = 2});
    switch (i % 5) {
      case 0:  // destroyed before any work
        break;
      case 1:
        CHECK(pool.map(iota_vector(50)).back() == 98);
        break;
      case 2:  // closed and joined by hand
        CHECK(pool.apply(21) == 42);
        pool.close();
        pool.join();
        break;
      case 3: {  // terminated while a task is running
        auto pending = pool.apply_async(-2);
        pool.terminate();
        CHECK_THROWS_AS(pending.get(), mproc::PoolClosed);
        break;
      }
      case 4:  // a worker dies and is replaced
        CHECK_THROWS_AS(pool.apply(-1), mproc::WorkerLost);
        CHECK(pool.apply(4) == 8);
        break;
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("1,000 pools with 2 workers each made and destroyed in %.1f s\n", seconds);
  check_flat(before, Footprint{}, 0, 0, "after 1,000 pools");
  CHECK(mproc_test::has_no_children());
}

/// One round of 10^5 tasks through the pool, by map, imap_unordered or apply_async
/// (one job per task, so per-job bookkeeping shows too); returns the sum of results.
template <class P>
long long run_round(P& pool, const std::vector<int>& inputs, int kind) {
  long long sum = 0;
  switch (kind % 3) {
    case 0:
      for (int r : pool.map(inputs)) sum += r;
      break;
    case 1:
      for (int r : pool.imap_unordered(inputs)) sum += r;
      break;
    default: {
      std::vector<mproc::AsyncResult<int>> pending;
      pending.reserve(inputs.size());
      for (int x : inputs) pending.push_back(pool.apply_async(x));
      for (auto& r : pending) sum += r.get();
    }
  }
  return sum;
}

TEST_CASE("10^6 tasks through one pool whose workers are replaced along the way: nothing grows") {
  // maxtasksperchild makes about 200 replacements over the run, so a leak per worker
  // shows as well as one per task.
  mproc::Pool pool([](int x) { return x ^ 0x5a5a; }, {.processes = 2, .maxtasksperchild = 10'000});
  const auto inputs = iota_vector(100'000);
  long long expected = 0;
  for (int x : inputs) expected += x ^ 0x5a5a;
  // Warm-up: one round of each kind (first-use allocations are not leaks).
  for (int kind = 0; kind < 3; ++kind) CHECK(run_round(pool, inputs, kind) == expected);
  const Footprint before;
  // The fork server and up to two workers (both may be between their exit and their
  // replacement at this instant).
  REQUIRE(before.processes >= 1);
  for (int round = 0; round < 10; ++round) {
    INFO("round " << round);
    CHECK(run_round(pool, inputs, round) == expected);
    check_flat(before, Footprint{}, 3, 3, "after a round of 10^5 tasks");
  }
}
