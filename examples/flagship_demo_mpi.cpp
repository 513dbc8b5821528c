// The flagship demo over MPI: the same code as flagship_demo (flagship_demo.hpp), on
// a Pool over the ranks of the MPI job.
//
//   mpirun -n 3 ./flagship_demo_mpi 0.1
//
// Every rank runs main(). Rank 0 goes through the demo as on one machine; the others
// serve the map inside the pool's constructor and, as AfterServing::exit_process
// says, leave the program when the master closes its pool (so their part of the demo
// after the pool never runs). The demo's `processes` option is ignored: the workers
// are the ranks.
#include "flagship_demo.hpp"

#include <mproc/mpi.hpp>

#include <utility>

/// mpi::Pool made as the demo makes mproc::Pool, with the serving ranks leaving the
/// program once the master's pool is closed.
template <class F>
class PoolOverMpi : public mproc::mpi::Pool<F> {
 public:
  explicit PoolOverMpi(F fn, mproc::PoolOptions options = {})
      : mproc::mpi::Pool<F>(std::move(fn), std::move(options),
                            {.after_serving = mproc::mpi::AfterServing::exit_process}) {}
};

int main(int argc, char** argv) { return run_flagship_demo<PoolOverMpi>(argc, argv); }
