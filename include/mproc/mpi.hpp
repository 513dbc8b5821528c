#pragma once
// mproc::mpi::Pool<F>: the same Pool over the ranks of an MPI job, for a map that
// outgrows one machine (as mpi4py.futures' MPICommExecutor, or Ray's Pool).
//
//   mpirun -n 9 --hostfile hosts ./app
//
// Every rank runs main() (SPMD). Making the pool is collective: rank 0 becomes the
// master and gets the pool; every other rank serves tasks inside the constructor and
// returns from it (or leaves the program, see AfterServing) once the master's pool is
// closed. F is made on every rank the same way, so only arguments and results cross
// machines, through the same codec, chunking and errors as the local Pool.
//
//   mproc::mpi::Pool pool(simulate);
//   if (pool.is_master()) results = pool.map(inputs);
//
// Needs Open MPI (or another MPI) with MPI_THREAD_MULTIPLE; link mproc::mpi.

#include <mproc/detail/mpi/engine.hpp>
#include <mproc/detail/mpi/env.hpp>
#include <mproc/detail/mpi/refusing_engine.hpp>
#include <mproc/detail/mpi/serve.hpp>
#include <mproc/detail/wire/type_name.hpp>
#include <mproc/errors.hpp>
#include <mproc/pool.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

namespace mproc::mpi {

/// Starts MPI (MPI_Init_thread with MPI_THREAD_MULTIPLE) unless it is running, and
/// finalizes it when destroyed if it started it. Optional: a pool made without one
/// starts MPI itself and finalizes it at exit. Make it first in main(), before any
/// pool, so that it outlives them.
class Environment {
 public:
  /// Starts MPI without the command line.
  Environment() : owns_(detail::init_mpi()) {}
  /// Starts MPI with the command line (MPI_Init_thread may take its own arguments out).
  Environment(int& argc, char**& argv) : owns_(detail::init_mpi(&argc, &argv)) {}
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  /// Finalizes MPI if this object started it.
  ~Environment() {
    if (owns_) detail::finalize_mpi();
  }

  /// This process's rank in MPI_COMM_WORLD.
  int rank() const { return detail::comm_rank(MPI_COMM_WORLD); }
  /// The number of ranks in MPI_COMM_WORLD.
  int size() const { return detail::comm_size(MPI_COMM_WORLD); }

 private:
  bool owns_;
};

/// What a serving rank does once the master's pool is closed.
enum class AfterServing {
  /// Return from the Pool constructor: the SPMD program goes on, and skips the
  /// master's part with `if (pool.is_master())`.
  return_from_constructor,
  /// Finalize MPI and std::exit(0) right there (static destructors run, the
  /// stack is not unwound): a program written for one machine runs unchanged,
  /// its master alone going past the pool. One pool per program then.
  exit_process,
};

/// The MPI side of a pool's settings.
struct Options {
  /// The ranks the pool spans; its rank 0 is the master. Every rank of it must make
  /// the pool. The pool talks on its own duplicate of it.
  MPI_Comm comm = MPI_COMM_WORLD;
  /// Whether serving ranks return from the constructor or leave the program.
  AfterServing after_serving = AfterServing::return_from_constructor;
};

/// mproc::Pool's API (map, starmap, imap, imap_unordered, apply, the _async forms,
/// close, join, terminate) over the ranks of `options.comm`.
///
/// PoolOptions: `processes` is ignored (the workers are the ranks but the master);
/// `initializer` runs once on each serving rank (on the master instead when the
/// tasks run there: one rank, serial mode); `chunksize`, `progress` and
/// `serial` work as locally; `maxtasksperchild`, `task_timeout`, `retries` and
/// `max_memory_per_child` need workers that the pool can replace and are refused
/// (ValueError). The master's options decide serial mode and refusals for every
/// rank, so all ranks go on or throw alike. With one rank only, tasks run serially
/// on it. Only the master submits tasks; on a serving rank those calls throw
/// ValueError.
///
/// A master has one pool over MPI at a time (the serving ranks are inside one
/// constructor at a time): making the next waits for a closed one to finish its
/// work, as join() would, and ends the job with a message if the last is still open.
/// A rank whose F has another type than the master's ends the job with a message;
/// the check is by type only, so one function pointer type (or std::function) bound
/// to different functions on different ranks is not detected.
template <class F>
class Pool : public mproc::Pool<F> {
  using Base = mproc::Pool<F>;
  using State = typename Base::State;

 public:
  /// Collective over options.comm: every rank calls it, with F made the same way.
  /// Returns at once on the master; a serving rank returns (or exits) once the
  /// master's pool is closed. Throws ValueError on every rank if the master's
  /// options are refused.
  explicit Pool(F fn, PoolOptions pool_options = {}, Options options = {})
      : Base(std::move(fn), std::move(pool_options), [&options](State& s) { return setup(s, options); }),
        rank_(detail::comm_rank(options.comm)) {}

  /// Whether this rank is the master, which submits the tasks.
  bool is_master() const noexcept { return rank_ == detail::mpi_master; }
  /// This rank's rank in Options::comm.
  int rank() const noexcept { return rank_; }

 private:
  /// Returns the master's engine (null: serial mode), or a serving rank's, which
  /// refuses tasks.
  static std::shared_ptr<detail::Engine> setup(State& s, const Options& options) {
    if (detail::init_mpi()) std::atexit(+[] { detail::finalize_mpi(); });
    // Before the first collective call. The serving ranks come out of this master's
    // last pool only once it stops: a closed one is waited for, as join() would; an
    // open one never lets them out, and the master can't tell them.
    if (detail::comm_rank(options.comm) == detail::mpi_master && detail::comm_size(options.comm) > 1 &&
        !detail::MasterPools::instance().wait_until_stopped()) {
      detail::abort_job(options.comm,
                        "mproc::mpi::Pool: the master made a pool over MPI while its previous one is still open; "
                        "the serving ranks are inside that pool's constructor until it stops, so the job can't go "
                        "on. close() (or destroy) the previous pool before making the next");
    }
    detail::Comm comm = detail::Comm::dup(options.comm);
    // The master decides for all (serial mode, options refused), so that every rank
    // goes on, or throws the same error; the type of F must match on every rank.
    std::int64_t config[3] = {s.serial || comm.size() == 1 ? 1 : 0, static_cast<std::int64_t>(typeid(F).hash_code()),
                              replaces_workers(s.options) ? 1 : 0};
    const std::int64_t own_type = config[1];
    detail::check_mpi(MPI_Bcast(config, 3, MPI_INT64_T, detail::mpi_master, comm.get()), "MPI_Bcast");
    if (config[1] != own_type) {
      // The ranks are out of step (the master would wait for this one forever).
      detail::abort_job(comm.get(), "mproc::mpi::Pool: rank " + std::to_string(comm.rank()) + " makes a pool of " +
                                        detail::demangle(typeid(F).name()) +
                                        ", which is not the master's: every rank must make the same pools in the "
                                        "same order");
    }
    if (config[2] != 0) {
      throw ValueError("mproc::mpi::Pool: maxtasksperchild, task_timeout, retries and max_memory_per_child replace or "
                       "kill workers, which a pool over MPI can't do to its ranks; leave them at 0");
    }
    s.serial = config[0] != 0;
    s.options.processes = static_cast<std::size_t>(std::max(comm.size() - 1, 1));
    if (comm.rank() == detail::mpi_master) {
      if (s.serial) return nullptr;
      return std::make_shared<detail::MpiEngine>(std::move(comm));
    }
    auto refusing = std::make_shared<detail::RefusingEngine>(
        "mproc::mpi::Pool: rank " + std::to_string(comm.rank()) +
            " served the tasks; only the master (rank 0) submits them (check pool.is_master())",
        s.serial ? 1 : s.options.processes);
    if (!s.serial) detail::serve_or_abort(s.fn, s.options.initializer, comm);
    comm.reset();
    if (options.after_serving == AfterServing::exit_process) {
      detail::finalize_mpi();
      std::exit(0);
    }
    return refusing;
  }

  static bool replaces_workers(const PoolOptions& o) {
    return o.maxtasksperchild != 0 || o.task_timeout.count() != 0 || o.retries != 0 || o.max_memory_per_child != 0;
  }

  int rank_;
};

template <class F>
Pool(F) -> Pool<F>;
template <class F>
Pool(F, PoolOptions) -> Pool<F>;
template <class F>
Pool(F, PoolOptions, Options) -> Pool<F>;

}  // namespace mproc::mpi
