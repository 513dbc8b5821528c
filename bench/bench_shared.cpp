// Shared state updated from two processes at once: a Value guarded by its Lock and
// a Manager list. Each workload has a twin of the same name in
// bench/python/bench_shared.py; bench/compare.py holds the Value against a bare
// robust mutex timed in the same iterations, the most a lock gives two processes.
//
// Every call starts two Processes, each doing n updates, and joins them, as seed 001
// does: the time includes the forks (about a millisecond), a small share at these sizes.
#include "baselines.hpp"
#include "bench_support.hpp"
#include "processes.hpp"

#include <mproc/manager.hpp>
#include <mproc/shared.hpp>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace {

using mproc_bench::check;
using mproc_bench::run_in_processes;
using mproc_bench::scaled;

/// Two processes each run increment(v) n times on one Value<int> v; checks that no
/// increment was lost. How fast two processes can take turns on a lock depends on
/// the machine's load (on a busy one they rarely run at once), so each iteration
/// then times the same with a bare robust mutex and its counter on one cache line
/// (bench_limits' robust_mutex_contended): the counter raw_increments_per_second is
/// that rate over the same iterations, the limit the Value is held against.
template <class Increment>
void time_increments(benchmark::State& state, Increment increment) {
  const int n = static_cast<int>(scaled(1'000'000));
  mproc::Value<int> v(0);
  mproc_bench::SharedGuarded raw;
  const auto add = [v, n, increment]() mutable {
    for (int i = 0; i < n; ++i) increment(v);
  };
  const auto add_raw = [guarded = &*raw, n] {
    for (int i = 0; i < n; ++i) guarded->increment();
  };
  bool ok = true;
  double raw_s = 0;
  for (auto _ : state) {
    v.store(0);
    auto start = std::chrono::steady_clock::now();
    ok = ok && run_in_processes(2, add) && v.load() == 2 * n;
    state.SetIterationTime(mproc_bench::seconds_since(start));
    raw->counter = 0;
    start = std::chrono::steady_clock::now();
    ok = ok && run_in_processes(2, add_raw) && raw->counter == 2 * static_cast<std::uint64_t>(n);
    raw_s += mproc_bench::seconds_since(start);
  }
  if (!check(state, ok, "both processes counted every increment")) return;
  const double increments = static_cast<double>(state.iterations()) * 2 * n;
  state.counters["raw_increments_per_second"] = increments / raw_s;
  state.SetItemsProcessed(static_cast<std::int64_t>(increments));
}

// Each increment under the Value's lock (Python: `with v.get_lock(): v.value += 1`).
void value_lock_increments(benchmark::State& state) {
  time_increments(state, [](mproc::Value<int>& v) {
    std::lock_guard hold(v.get_lock());
    ++v.value();
  });
}
BENCHMARK(value_lock_increments)->UseManualTime()->Unit(benchmark::kMillisecond);

// Each increment by Value::update, which takes the lock itself (no Python twin:
// Python has no atomic read-modify-write on a Value).
void value_update_increments(benchmark::State& state) {
  time_increments(state, [](mproc::Value<int>& v) { v.update([](int& x) { ++x; }); });
}
BENCHMARK(value_update_increments)->UseManualTime()->Unit(benchmark::kMillisecond);

// Two processes each append 0..n-1 to a new Manager list (Python: Manager().list()
// and l.append(i)).
void manager_list_appends(benchmark::State& state) {
  const int n = static_cast<int>(scaled(500'000));
  mproc::Manager mgr;
  bool ok = true;
  for (auto _ : state) {
    mproc::SharedList<int> list = mgr.list<int>();
    ok = ok && run_in_processes(2, [list, n]() mutable {
           for (int i = 0; i < n; ++i) list.append(i);
         });
    state.PauseTiming();
    // Each process's items arrive in its order, interleaved with the other's.
    const std::vector<int> items = list.snapshot();
    std::vector<int> seen(static_cast<std::size_t>(n), 0);
    ok = ok && items.size() == 2 * static_cast<std::size_t>(n);
    for (int x : items) ok = ok && x >= 0 && x < n && ++seen[static_cast<std::size_t>(x)] <= 2;
    list.clear();
    state.ResumeTiming();
  }
  check(state, ok, "the list holds both processes' appends");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 2 * n);
}
BENCHMARK(manager_list_appends)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return mproc_bench::run(argc, argv); }
