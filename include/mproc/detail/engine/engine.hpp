#pragma once
// Engine: what a Pool runs its calls on. The Pool encodes a call's items into a Job
// and hands the job over; the engine runs the items (in forked workers, on MPI ranks,
// or in the calling thread in serial mode) and delivers each outcome to the job.
// A job's input state after submission (locking, refills of a stream, cancel) is the
// engine's alone: the Pool never takes an engine's lock.
//
//   Engine
//   ├── DispatchEngine (dispatch_engine.hpp): a queue and a thread, chunks to workers
//   │   ├── LocalEngine (local_engine.hpp): forked workers over pipes
//   │   └── MpiEngine (mpi/engine.hpp): MPI ranks
//   ├── SerialEngine (serial_engine.hpp): the calling thread
//   └── RefusingEngine (mpi/refusing_engine.hpp): an MPI rank that served, takes nothing

#include <mproc/detail/engine/job.hpp>
#include <mproc/detail/engine/scheduling.hpp>  // StreamFeed
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/errors.hpp>

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <vector>

namespace mproc::detail {

class Engine {
 public:
  Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  virtual ~Engine() = default;

  /// How many tasks run at once (1 when they run in the calling thread).
  virtual std::size_t workers() const noexcept = 0;
  /// The pids of the current worker processes; empty where the workers are not
  /// local processes (serial mode, MPI ranks) or are gone.
  virtual std::vector<pid_t> worker_pids() const { return {}; }

  /// Runs a job whose input is complete; one with no items finishes at once.
  /// awaited: the caller waits for the result at once (Pool::apply), so the engine
  /// may do the round trip on the caller's thread. Throws PoolClosed after close()
  /// or terminate(), or the error that broke the pool.
  virtual void submit(std::shared_ptr<Job> job, bool awaited) = 0;

  // ---- a stream: a job whose input comes in pieces (imap)

  /// Starts a stream; its items come by append_input. Throws as submit() does.
  virtual void open_stream(std::shared_ptr<Job> job) = 0;
  /// How many items the stream should encode and append now (0: enough are ahead).
  virtual std::size_t stream_room(const Job& job, const StreamFeed& feed) = 0;
  /// Adds n encoded items (offsets as ItemStore::append takes them); last: the
  /// input ended with them. Returns false, adding nothing, if close() ended the
  /// stream's input first.
  virtual bool append_input(const std::shared_ptr<Job>& job, Bytes bytes, std::vector<std::size_t> offsets,
                            std::size_t n, bool last) = 0;
  /// The stream's consumer left: its items not yet run are dropped.
  virtual void cancel(const std::shared_ptr<Job>& job) noexcept = 0;

  // ---- life cycle (Pool::close, join, terminate)

  /// No more work will be submitted; the queued work still runs.
  virtual void close() = 0;
  /// Waits for the queued work to finish. Requires close() or terminate() first.
  virtual void join() = 0;
  /// Stops at once; unfinished tasks fail with PoolClosed.
  virtual void terminate() = 0;

 protected:
  [[noreturn]] static void throw_closed() {
    throw PoolClosed("mproc: the pool is closed (close() or terminate() was called)");
  }
  [[noreturn]] static void throw_join_while_open() {
    throw ValueError("mproc: Pool::join() needs close() or terminate() first");
  }
};

}  // namespace mproc::detail
