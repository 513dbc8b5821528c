// The Pool over MPI against itself with more ranks, and against the local Pool.
//
//   bench_mpi                      one rank: the MPI pool runs serially
//   mpirun -n 2 bench_mpi          1 serving rank
//   mpirun -n 3 bench_mpi          2 serving ranks (and the call sequences)
//
// bench/mpi_scaling.py runs all three and prints the scaling, per-task costs and the
// call sequences. Every rank runs main(); the serving ranks serve the one pool inside
// its constructor and leave the program when the master is done. The serial loop and
// the local Pool (2 workers) run in every job, so each is held against the MPI pool
// in the same run, under the same load: the serving ranks wait for work without
// taking a core meanwhile.
#include "bench_support.hpp"
#include "sequences.hpp"
#include "workloads.hpp"

#include <mproc/mpi.hpp>

#include <cstdint>
#include <memory>
#include <vector>

namespace {

using mproc_bench::check;
using mproc_bench::scaled;

/// The pool's task: its one pool runs both kinds, seed 001's cube(n) and the call
/// sequences' naps of n milliseconds (sequences.hpp).
struct Work {
  std::uint64_t nap;  // 1: nap for n ms; 0: cube(n)
  std::uint64_t n;
};
std::uint64_t work(Work w) {
  return w.nap != 0 ? static_cast<std::uint64_t>(mproc_bench::nap(static_cast<int>(w.n))) : mproc_bench::cube(w.n);
}
Work cube_of(std::uint64_t n) { return {0, n}; }

using WorkFn = std::uint64_t (*)(Work);
std::unique_ptr<mproc::mpi::Pool<WorkFn>> mpi_pool;

std::vector<Work> first_cubes(std::size_t n) {
  std::vector<Work> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = cube_of(i);
  return xs;
}

/// Seed 001's CPU-bound job, cube(n) for n in range(N): a plain loop.
void serial_cpu_map(benchmark::State& state) {
  const auto xs = first_cubes(scaled(26'000));
  std::vector<std::uint64_t> out;
  for (auto _ : state) {
    out.clear();
    for (const Work& x : xs) out.push_back(work(x));
    benchmark::DoNotOptimize(out.data());
  }
  check(state, out.size() == xs.size() && out.back() == mproc_bench::cube(xs.back().n), "cube results");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * xs.size()));
}

/// The same job on a running pool.
template <class P>
void cpu_map(benchmark::State& state, P& pool) {
  const auto xs = first_cubes(scaled(26'000));
  std::vector<std::uint64_t> out;
  for (auto _ : state) out = pool.map(xs);
  check(state, out.size() == xs.size() && out.back() == mproc_bench::cube(xs.back().n), "cube results");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * xs.size()));
  state.counters["workers"] = static_cast<double>(pool.processes());
}

/// 10^4 trivial apply_async calls, then get each: the cost of a task in flight.
template <class P>
void apply_async_many(benchmark::State& state, P& pool) {
  const std::size_t n = scaled(10'000);
  std::vector<mproc::AsyncResult<std::uint64_t>> results;
  bool ok = true;
  for (auto _ : state) {
    results.clear();
    for (std::size_t i = 0; i < n; ++i) results.push_back(pool.apply_async(cube_of(3)));
    for (auto& r : results) ok = ok && r.get() == mproc_bench::cube(3);
  }
  check(state, ok, "apply_async results");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

/// One apply at a time: a full round trip per task.
template <class P>
void apply_one(benchmark::State& state, P& pool) {
  bool ok = true;
  for (auto _ : state) ok = ok && pool.apply(cube_of(3)) == mproc_bench::cube(3);
  check(state, ok, "apply results");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

Work nap_of(int ms) { return {1, static_cast<std::uint64_t>(ms)}; }

}  // namespace

int main(int argc, char** argv) {
  mproc::mpi::Environment environment(argc, argv);
  // Serving ranks stay in here until the master's pool is gone, then exit.
  mpi_pool = std::make_unique<mproc::mpi::Pool<WorkFn>>(
      work, mproc::PoolOptions{}, mproc::mpi::Options{.after_serving = mproc::mpi::AfterServing::exit_process});
  // The local Pool's twins, with as many workers as a 3-rank job has serving ranks.
  auto local = std::make_unique<mproc::Pool<WorkFn>>(work, mproc::PoolOptions{.processes = 2});
  using benchmark::RegisterBenchmark;
  const auto ms = benchmark::kMillisecond;
  RegisterBenchmark("serial_cpu_map", serial_cpu_map)->UseRealTime()->Unit(ms);
  RegisterBenchmark("mpi_cpu_map", [](benchmark::State& s) { cpu_map(s, *mpi_pool); })->UseRealTime()->Unit(ms);
  RegisterBenchmark("mpi_apply_async_1e4", [](benchmark::State& s) { apply_async_many(s, *mpi_pool); })
      ->UseRealTime()
      ->Unit(ms);
  RegisterBenchmark("mpi_apply", [](benchmark::State& s) { apply_one(s, *mpi_pool); })->UseRealTime();
  RegisterBenchmark("local_cpu_map", [&](benchmark::State& s) { cpu_map(s, *local); })->UseRealTime()->Unit(ms);
  RegisterBenchmark("local_apply_async_1e4", [&](benchmark::State& s) { apply_async_many(s, *local); })
      ->UseRealTime()
      ->Unit(ms);
  RegisterBenchmark("local_apply", [&](benchmark::State& s) { apply_one(s, *local); })->UseRealTime();
  // The call sequences (sequences.hpp) where they mean something: 2 serving ranks or more.
  if (environment.size() >= 3) {
    static std::size_t rounds[3] = {0, 0, 0};
    const auto naps = [] { return mproc_bench::Naps(*mpi_pool, nap_of); };
    RegisterBenchmark("mpi_after_quick",
                      [naps](benchmark::State& s) { mproc_bench::after_quick(s, naps(), rounds[0]); })
        ->UseRealTime()
        ->Unit(ms);
    RegisterBenchmark("mpi_after_slow", [naps](benchmark::State& s) { mproc_bench::after_slow(s, naps(), rounds[1]); })
        ->UseRealTime()
        ->Unit(ms);
    RegisterBenchmark("mpi_interleaved",
                      [naps](benchmark::State& s) { mproc_bench::interleaved(s, naps(), rounds[2]); })
        ->UseRealTime()
        ->Unit(ms);
  }
  const int rc = mproc_bench::run(argc, argv);
  local.reset();
  mpi_pool.reset();  // before MPI is finalized
  return rc;
}
