#pragma once
// What the parent hands a worker process at the fork: the one thing the worker side
// (worker.hpp) and the local transport (local_engine.hpp) share.

#include <mproc/detail/engine/lane.hpp>
#include <mproc/detail/engine/worker_slots.hpp>

#include <sys/types.h>

#include <cstddef>

namespace mproc::detail {

/// What a worker process gets: its two pipe ends, its slot on the board, its lanes.
struct WorkerEnv {
  int task_fd;     // frames from the parent (read end)
  int result_fd;   // frames to the parent (write end)
  WorkerSlot* slot;
  pid_t parent;    // the fork server's pid, taken before the fork, to notice if it is already gone
  bool timed;      // post item start times (task_timeout is set)
  Lane* task_lane;    // big task payloads from the parent
  Lane* result_lane;  // big outcomes to the parent
  std::size_t max_memory;  // retire once more is resident (0: no limit); see MemoryGuard
};

}  // namespace mproc::detail
