// Force-included (-include) into a second build of flagship_demo.cpp, unchanged:
// from here on, the demo's `mproc::Pool` is a Pool over the ranks of the MPI job.
//
//   mpirun -n 3 ./flagship_demo_mpi 0.1
//
// Every rank runs the demo's main(). Rank 0 goes through it as on one machine; the
// others serve the map inside the pool's constructor and, as AfterServing::
// exit_process says, leave the program when the master closes its pool (so their
// part of main() after the pool never runs). The demo's `processes` option is
// ignored: the workers are the ranks.
#pragma once

#include <mproc/mproc.hpp>
#include <mproc/mpi.hpp>

namespace mproc {

template <class F>
class PoolOverMpi : public mpi::Pool<F> {
 public:
  explicit PoolOverMpi(F fn, PoolOptions options = {})
      : mpi::Pool<F>(std::move(fn), std::move(options), {.after_serving = mpi::AfterServing::exit_process}) {}
};
template <class F>
PoolOverMpi(F) -> PoolOverMpi<F>;
template <class F>
PoolOverMpi(F, PoolOptions) -> PoolOverMpi<F>;

}  // namespace mproc

// The demo's `mproc::Pool` names the class above (mproc's headers are already in).
// A macro because the demo's source names mproc::Pool and has no MPI code of its own
// to switch on; it renames the token `Pool` only in what comes after this file.
#define Pool PoolOverMpi
