// The Pool over MPI against itself with more ranks, and against the local Pool.
//
//   bench_mpi                      one rank: the MPI pool runs serially (the baseline),
//                                  and the local Pool's cases run on a quiet machine
//   mpirun -n 2 bench_mpi          1 serving rank
//   mpirun -n 3 bench_mpi          2 serving ranks
//
// bench/mpi_scaling.py runs all three and prints the scaling and per-task costs.
// Every rank runs main(); the serving ranks serve the one pool inside its
// constructor and leave the program when the master is done.
#include "bench_support.hpp"
#include "workloads.hpp"

#include <mproc/mpi.hpp>

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

namespace {

using mproc_bench::check;
using mproc_bench::scaled;
using Cube = std::uint64_t (*)(std::uint64_t);

std::unique_ptr<mproc::mpi::Pool<Cube>> mpi_pool;

std::vector<std::uint64_t> first_numbers(std::size_t n) {
  std::vector<std::uint64_t> xs(n);
  std::iota(xs.begin(), xs.end(), std::uint64_t{0});
  return xs;
}

/// Seed 001's CPU-bound job, cube(n) for n in range(N), on a running pool.
template <class P>
void cpu_map(benchmark::State& state, P& pool) {
  const auto xs = first_numbers(scaled(26'000));
  std::vector<std::uint64_t> out;
  for (auto _ : state) out = pool.map(xs);
  check(state, out.size() == xs.size() && out.back() == mproc_bench::cube(xs.back()), "cube results");
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
    for (std::size_t i = 0; i < n; ++i) results.push_back(pool.apply_async(std::uint64_t{3}));
    for (auto& r : results) ok = ok && r.get() == mproc_bench::cube(3);
  }
  check(state, ok, "apply_async results");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

/// One apply at a time: a full round trip per task.
template <class P>
void apply_one(benchmark::State& state, P& pool) {
  bool ok = true;
  for (auto _ : state) ok = ok && pool.apply(std::uint64_t{3}) == mproc_bench::cube(3);
  check(state, ok, "apply results");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

}  // namespace

int main(int argc, char** argv) {
  mproc::mpi::Environment environment(argc, argv);
  // Serving ranks stay in here until the master's pool is gone, then exit.
  mpi_pool = std::make_unique<mproc::mpi::Pool<Cube>>(
      mproc_bench::cube, mproc::PoolOptions{},
      mproc::mpi::Options{.after_serving = mproc::mpi::AfterServing::exit_process});
  using benchmark::RegisterBenchmark;
  const auto ms = benchmark::kMillisecond;
  RegisterBenchmark("mpi_cpu_map", [](benchmark::State& s) { cpu_map(s, *mpi_pool); })->UseRealTime()->Unit(ms);
  RegisterBenchmark("mpi_apply_async_1e4", [](benchmark::State& s) { apply_async_many(s, *mpi_pool); })
      ->UseRealTime()
      ->Unit(ms);
  RegisterBenchmark("mpi_apply", [](benchmark::State& s) { apply_one(s, *mpi_pool); })->UseRealTime();

  // The local Pool's twins, with as many workers as a 3-rank job has serving ranks,
  // only where no idle ranks share the machine (they spin inside MPI).
  std::unique_ptr<mproc::Pool<Cube>> local;
  if (environment.size() == 1) {
    local = std::make_unique<mproc::Pool<Cube>>(mproc_bench::cube, mproc::PoolOptions{.processes = 2});
    RegisterBenchmark("local_cpu_map", [&](benchmark::State& s) { cpu_map(s, *local); })->UseRealTime()->Unit(ms);
    RegisterBenchmark("local_apply_async_1e4", [&](benchmark::State& s) { apply_async_many(s, *local); })
        ->UseRealTime()
        ->Unit(ms);
    RegisterBenchmark("local_apply", [&](benchmark::State& s) { apply_one(s, *local); })->UseRealTime();
  }
  const int rc = mproc_bench::run(argc, argv);
  local.reset();
  mpi_pool.reset();  // before MPI is finalized
  return rc;
}
