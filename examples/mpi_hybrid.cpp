// The hybrid pattern: one serving MPI rank per machine, and inside each a local
// mproc::Pool over that machine's cores. The MPI pool hands blocks of work to the
// ranks; each rank maps its block over its own worker processes.
//
//   mpirun -n 3 ./mpi_hybrid                                     (here)
//   mpirun -n 4 --hostfile hosts --bind-to none ./mpi_hybrid     (3 machines)
//
// with hosts listing "node1 slots=2", "node2 slots=1", "node3 slots=1": the master
// (rank 0), which runs no tasks, shares node1 with rank 1 rather than leave a machine
// to itself. --bind-to none matters: Open MPI binds each rank to a core by default,
// and the local pool would then see (and use) a single core.
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
  // clang-format off
  // [snippet]
  // Every rank makes its own local pool first: F is made the same way everywhere.
  // Its workers: this machine's cores; the master (rank 0) runs no tasks, so none.
  mproc::Pool local(collatz_steps, {.processes = 2, .serial = mpi.rank() == 0});
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
    // clang-format on
    std::uint64_t serial = 0;
    for (std::uint64_t n = 1; n < 200'001; ++n) serial += collatz_steps(n);
    std::printf("%zu blocks over %zu ranks with local pools: %llu steps, serial: %llu, equal: %s\n", blocks.size(),
                machines.processes(), static_cast<unsigned long long>(total), static_cast<unsigned long long>(serial),
                total == serial ? "yes" : "no");
  }
}
