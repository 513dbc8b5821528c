// The hybrid pattern: one MPI rank per machine, and inside each rank a local
// mproc::Pool over that machine's cores. The MPI pool hands blocks of work to the
// ranks; each rank maps its block over its own worker processes.
//
//   mpirun -n 3 ./mpi_hybrid                                                  (here)
//   mpirun --hostfile hosts --map-by ppr:1:node --bind-to none ./mpi_hybrid   (1 rank per host)
//
// --bind-to none matters: Open MPI binds each rank to a core by default, and the
// local pool would then see (and use) a single core.
#include <mproc/mpi.hpp>

#include <cstdint>
#include <cstdio>
#include <numeric>
#include <utility>
#include <vector>

// Some CPU-bound work per item.
std::uint64_t collatz_steps(std::uint64_t n) {
  std::uint64_t steps = 0;
  for (; n > 1; ++steps) n = n % 2 == 0 ? n / 2 : 3 * n + 1;
  return steps;
}

int main(int argc, char** argv) {
  mproc::mpi::Environment mpi(argc, argv);
  // [snippet]
  // Every rank makes its own local pool first: F is made the same way everywhere.
  mproc::Pool local(collatz_steps, {.processes = 2});  // this machine's cores
  auto block_total = [&local](std::pair<std::uint64_t, std::uint64_t> block) {
    std::vector<std::uint64_t> xs(block.second - block.first);
    std::iota(xs.begin(), xs.end(), block.first);
    const std::vector<std::uint64_t> steps = local.map(xs);  // over this rank's workers
    return std::accumulate(steps.begin(), steps.end(), std::uint64_t{0});
  };
  mproc::mpi::Pool machines(block_total);  // one rank per machine
  if (machines.is_master()) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> blocks;
    for (std::uint64_t first = 1; first < 200'001; first += 10'000) blocks.emplace_back(first, first + 10'000);
    const std::vector<std::uint64_t> totals = machines.map(blocks, 1);  // a block per task
    const auto total = std::accumulate(totals.begin(), totals.end(), std::uint64_t{0});
    // [/snippet]
    std::uint64_t serial = 0;
    for (std::uint64_t n = 1; n < 200'001; ++n) serial += collatz_steps(n);
    std::printf("%zu blocks over %zu ranks with local pools: %llu steps, serial: %llu, equal: %s\n", blocks.size(),
                machines.processes(), static_cast<unsigned long long>(total),
                static_cast<unsigned long long>(serial), total == serial ? "yes" : "no");
  }
}
