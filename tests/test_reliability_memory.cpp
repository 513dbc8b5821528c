// PoolOptions::max_memory_per_child: a worker whose resident memory is past the limit
// after a task is replaced (the rest of its chunk, and what else it held, runs
// elsewhere), so a leaking F cannot grow a worker without bound. Tasks here leak on purpose and report
// the resident memory their worker had when they started.

#include "reliability_support.hpp"  // first: it configures Catch2

#include <mproc/mproc.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <map>
#include <set>
#include <tuple>
#include <vector>

namespace {

using mproc_test::iota_vector;

constexpr std::size_t mib = std::size_t{1} << 20;

/// Where the tasks' leaked blocks stay reachable (a leak the compiler may not elide).
std::vector<std::vector<char>> leaked;

/// A task that leaks `leak` bytes (touched, so resident) and returns (its input, its
/// worker's pid, that worker's resident memory when the task started).
struct Leaky {
  std::size_t leak;
  std::tuple<int, pid_t, std::size_t> operator()(int x) const {
    const std::size_t before = mproc::detail::resident_bytes();
    leaked.emplace_back(leak, static_cast<char>(x));  // never freed: the leak under test
    return {x, ::getpid(), before};
  }
};

/// The resident memory of a fresh worker of a pool like the ones under test.
std::size_t fresh_worker_rss() {
  mproc::Pool probe([](int) { return mproc::detail::resident_bytes(); }, {.processes = 1});
  return probe.apply(0);
}

}  // namespace

TEST_CASE("max_memory_per_child: a worker past the limit after a task is replaced and never starts another") {
  const std::size_t limit = fresh_worker_rss() + 64 * mib;
  constexpr int tasks = 48;
  mproc::Pool pool(Leaky{16 * mib}, {.processes = 2, .max_memory_per_child = limit});
  const auto out = pool.map(iota_vector(tasks), 1);
  REQUIRE(out.size() == static_cast<std::size_t>(tasks));
  std::map<pid_t, int> tasks_per_worker;
  for (int i = 0; i < tasks; ++i) {
    const auto& [x, pid, rss_at_start] = out[static_cast<std::size_t>(i)];
    INFO("task " << i << " ran in " << pid << " with " << rss_at_start / mib << " MiB resident (limit " << limit / mib
                 << " MiB)");
    CHECK(x == i);
    // A worker past the limit takes no further task (the slack covers the few pages
    // a worker touches between its check and its next task).
    CHECK(rss_at_start <= limit + 2 * mib);
    ++tasks_per_worker[pid];
  }
  // 16 MiB per task against 64 MiB of headroom: each worker runs about four or five
  // tasks, then makes way for a new one.
  for (const auto& [pid, n] : tasks_per_worker) CHECK(n <= 6);
  CHECK(tasks_per_worker.size() >= static_cast<std::size_t>(tasks / 6));
  CHECK(pool.worker_pids().size() == 2);
}

TEST_CASE("max_memory_per_child: the chunks a retiring worker still held run elsewhere, nothing lost") {
  const std::size_t limit = fresh_worker_rss() + 32 * mib;
  constexpr int tasks = 400;
  mproc::Pool pool(Leaky{mib}, {.processes = 2, .max_memory_per_child = limit});
  const auto out = pool.map(iota_vector(tasks), 8);  // chunks of 8: a worker holds several
  REQUIRE(out.size() == static_cast<std::size_t>(tasks));
  std::set<pid_t> workers;
  for (int i = 0; i < tasks; ++i) {
    CHECK(std::get<0>(out[static_cast<std::size_t>(i)]) == i);
    workers.insert(std::get<1>(out[static_cast<std::size_t>(i)]));
  }
  CHECK(workers.size() >= 10);  // 400 MiB leaked in all, at most ~40 MiB per worker
}

TEST_CASE("max_memory_per_child with automatic chunks: the check comes after each task, and a chunk stops there") {
  // Tiny tasks that leak 1 MiB each: automatic chunking hands a worker chunks of many
  // of them. The worker reads its resident size after each task (at most every
  // MemoryGuard::interval_ns), stops its chunk when over the limit, and the pool runs
  // the rest of the chunk elsewhere.
  const std::size_t limit = fresh_worker_rss() + 32 * mib;
  constexpr int tasks = 3000;
  mproc::Pool pool(Leaky{mib}, {.processes = 2, .max_memory_per_child = limit});
  const auto out = pool.map(iota_vector(tasks));
  REQUIRE(out.size() == static_cast<std::size_t>(tasks));
  std::map<pid_t, int> tasks_per_worker;
  std::size_t worst = 0;
  for (int i = 0; i < tasks; ++i) {
    const auto& [x, pid, rss_at_start] = out[static_cast<std::size_t>(i)];
    CHECK(x == i);
    worst = std::max(worst, rss_at_start);
    ++tasks_per_worker[pid];
  }
  INFO("the most a task started with: " << worst / mib << " MiB resident (limit " << limit / mib << " MiB)");
  // The slack: the task that crossed the limit and those started within the next
  // reading's interval (250 us; a 1 MiB leak takes longer than 60 us to fault in).
  CHECK(worst <= limit + 5 * mib);
  for (const auto& [pid, n] : tasks_per_worker) CHECK(n <= 40);
  CHECK(tasks_per_worker.size() >= static_cast<std::size_t>(tasks / 40));
}

TEST_CASE("without max_memory_per_child the same leaking tasks stay in the first workers") {
  // The control for the tests above: the replacements come from the option.
  mproc::Pool pool(Leaky{mib}, {.processes = 2});
  const auto out = pool.map(iota_vector(64), 1);
  std::set<pid_t> workers;
  for (const auto& r : out) workers.insert(std::get<1>(r));
  CHECK(workers.size() <= 2);
}
