#pragma once
// MPI itself, as mproc uses it: starting and ending MPI (at the thread level the
// pool needs), checking calls, and the communicator a pool owns.
//
// A pool's engine thread makes MPI calls while user threads submit work and wake it
// with a message, so mproc needs MPI_THREAD_MULTIPLE.

// Only the C API: Open MPI's and MPICH's old C++ bindings are not wanted (and warn).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <mproc/errors.hpp>

#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>

namespace mproc::detail {

/// Throws MpiError unless rc is MPI_SUCCESS (reached only when the communicator's
/// error handler returns errors; MPI's default handler aborts the job first).
inline void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) length = 0;
  throw MpiError(std::string("mproc: ") + call + " failed: " + std::string(text, static_cast<std::size_t>(length)), rc);
}

/// Ends the whole job with `message` on stderr: for a mistake that would otherwise
/// leave other ranks waiting forever, where an exception on this rank alone can't
/// help.
[[noreturn]] inline void abort_job(MPI_Comm comm, const std::string& message) noexcept {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  MPI_Abort(comm, 1);
  std::abort();  // MPI_Abort does not return; in case an MPI does
}

inline bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

/// Initializes MPI with MPI_THREAD_MULTIPLE unless it already is; returns whether
/// this call did it. Throws ValueError if MPI was finalized, or was initialized
/// elsewhere without MPI_THREAD_MULTIPLE.
inline bool init_mpi(int* argc = nullptr, char*** argv = nullptr) {
  static std::mutex mutex;  // two threads making the first pools at once
  std::lock_guard lock(mutex);
  if (mpi_finalized()) throw ValueError("mproc: MPI was already finalized; a pool over MPI can't start");
  int initialized = 0;
  MPI_Initialized(&initialized);
  bool here = false;
  if (initialized == 0) {
    // A pool's master mostly waits, inside MPI, for results; Open MPI waits by
    // spinning, which on a node with as many ranks as cores takes a core from the
    // ranks doing the work. Yielding in the spin gives it back (the user's own
    // setting, from the environment or mpirun --mca, wins).
    ::setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
    int provided = 0;
    check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    here = true;
  }
  int level = 0;
  MPI_Query_thread(&level);
  if (level < MPI_THREAD_MULTIPLE) {
    throw ValueError("mproc: a pool over MPI needs MPI_THREAD_MULTIPLE (its own thread makes MPI calls while yours "
                     "submit work), but MPI was initialized with less: initialize it with MPI_Init_thread(..., "
                     "MPI_THREAD_MULTIPLE, ...), or let mproc::mpi::Environment or the pool do it");
  }
  return here;
}

/// Pools at work in this process: a master's pool that has not stopped its ranks
/// yet, or a serving rank's pool while it serves.
inline std::atomic<int>& busy_pools() noexcept {
  static std::atomic<int> count{0};
  return count;
}

/// MPI_Finalize, unless MPI is not running (never started, or already finalized) or
/// a pool is at work here. MPI_Finalize waits for every rank, so exit() called inside
/// a task, or with a master's pool open, would hang there; leaving without it makes
/// mpirun end the job with a report instead.
inline void finalize_mpi() noexcept {
  if (busy_pools().load() > 0) return;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized != 0 && !mpi_finalized()) MPI_Finalize();
}

inline int comm_rank(MPI_Comm comm) {
  int rank = 0;
  check_mpi(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  return rank;
}
inline int comm_size(MPI_Comm comm) {
  int size = 0;
  check_mpi(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  return size;
}

/// A communicator of the pool's own (a duplicate of the user's, so the pool's
/// messages never meet the program's); freed on destruction.
class Comm {
 public:
  Comm() = default;
  /// MPI_Comm_dup: collective, every rank of parent calls it.
  static Comm dup(MPI_Comm parent) {
    Comm c;
    check_mpi(MPI_Comm_dup(parent, &c.comm_), "MPI_Comm_dup");
    c.rank_ = comm_rank(c.comm_);
    c.size_ = comm_size(c.comm_);
    return c;
  }
  Comm(Comm&& other) noexcept
      : comm_(std::exchange(other.comm_, MPI_COMM_NULL)), rank_(other.rank_), size_(other.size_) {}
  Comm& operator=(Comm&& other) noexcept {
    if (this != &other) {
      reset();
      comm_ = std::exchange(other.comm_, MPI_COMM_NULL);
      rank_ = other.rank_;
      size_ = other.size_;
    }
    return *this;
  }
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;
  ~Comm() { reset(); }

  MPI_Comm get() const noexcept { return comm_; }
  /// This process's rank in it.
  int rank() const noexcept { return rank_; }
  /// How many ranks it has.
  int size() const noexcept { return size_; }

  void reset() noexcept {
    if (comm_ != MPI_COMM_NULL && !mpi_finalized()) MPI_Comm_free(&comm_);
    comm_ = MPI_COMM_NULL;
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 0;
};

}  // namespace mproc::detail
