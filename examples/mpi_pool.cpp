// The Pool over MPI, SPMD style (as mpi4py's MPICommExecutor): every rank runs this
// program; rank 0 is the master and submits, the others serve inside the pool's
// constructor and go on past it when the master's pool is closed.
//
//   mpirun -n 3 ./mpi_pool                          (one machine)
//   mpirun -n 9 --hostfile hosts ./mpi_pool         (across machines)
#include <mproc/mpi.hpp>

#include <cstdio>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

// clang-format off
// [snippet]
long cube(int n) { return long(n) * n * n; }

int parse(const std::string& s) { return std::stoi(s); }  // throws on "two"
// [/snippet]
// clang-format on

int main(int argc, char** argv) {
  // clang-format off
  // [snippet]
  mproc::mpi::Environment mpi(argc, argv);  // MPI_Init_thread ... MPI_Finalize
  {
    mproc::mpi::Pool pool(cube);  // collective: ranks 1..n-1 serve in here
    if (pool.is_master()) {
      std::vector<int> inputs = {1, 2, 3, 4, 5};
      std::vector<long> cubes = pool.map(inputs);            // {1, 8, 27, 64, 125}
      long twelve_cubed = pool.apply_async(12).get();        // 1728
      long sum = 0;
      for (long c : pool.imap(std::vector<int>{1, 2, 3})) sum += c;   // 36
      std::printf("cubes: %ld %ld %ld %ld %ld, 12^3 = %ld, imap sum %ld, over %zu serving ranks\n", cubes[0],
                  cubes[1], cubes[2], cubes[3], cubes[4], twelve_cubed, sum, pool.processes());
    }
  }  // the master's pool closes here; every rank goes on
  // [/snippet]
  // clang-format on

  // Errors come back as RemoteError, as from local workers.
  mproc::mpi::Pool pool(parse);
  if (pool.is_master()) {
    try {
      pool.map(std::vector<std::string>{"1", "two", "3"});
    } catch (const mproc::RemoteError& e) {
      std::printf("task failed: %s\n", e.what());
    }
    std::vector<int> many(10000);
    std::iota(many.begin(), many.end(), 0);
    std::vector<std::string> texts;
    for (int x : many) texts.push_back(std::to_string(x));
    const std::vector<int> back = pool.map(texts);
    std::printf("parsed %zu strings on the serving ranks, all equal: %s\n", back.size(), back == many ? "yes" : "no");
  } else {
    std::printf("rank %d served and returned\n", pool.rank());
  }
}
