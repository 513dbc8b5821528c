#pragma once
// A pool worker after the fork: serve_chunks (worker.hpp) over the pipes, the slot
// and the lanes its parent gave it (WorkerEnv). It leaves on a stop frame from the
// parent (retirement, the pool closing), at end-of-file, once over its memory limit,
// and dies with the parent.

#include <mproc/codec.hpp>
#include <mproc/detail/engine/lane.hpp>
#include <mproc/detail/engine/worker.hpp>
#include <mproc/detail/engine/worker_env.hpp>
#include <mproc/detail/engine/worker_slots.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/os/resident_memory.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/errors.hpp>

#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <span>

namespace mproc::detail {

/// serve_chunks' transport in a forked worker: task frames from the parent's pipe (big
/// payloads in the task lane), result frames back (big outcomes in the result lane).
/// A chunk the parent took back before the worker claimed it is dropped unanswered.
class WorkerPipes {
 public:
  explicit WorkerPipes(const WorkerEnv& env) : env_(env), reader_(env.task_fd) {
    if (env.max_memory != 0) memory_ = &guard_.emplace(env.max_memory);
  }

  bool send_ready() { return write_frame(env_.result_fd, make_frame_header(FrameKind::ready, 0, 0), {}); }
  bool send_init_failed(std::span<const std::byte> payload) {
    write_frame(env_.result_fd, make_frame_header(FrameKind::init_failed, 0, payload.size()), payload);
    return false;  // the parent breaks the pool and reaps this process
  }

  // Inlined into the loop: out of line it costs 6% more instructions per chunk
  // of tiny items.
  [[gnu::always_inline]] std::optional<TaskView> receive() {
    while (const auto frame = reader_.read()) {
      if (frame->header.kind == FrameKind::stop) break;  // retired, or the pool is closing
      if (frame->header.kind != FrameKind::task) throw ProtocolError("mproc: worker got an unexpected frame");
      const bool in_lane = (frame->header.flags & frame_flag_in_lane) != 0;
      const auto size = static_cast<std::size_t>(frame->header.size);
      if (!env_.slot->claim(++sequence_)) {  // the parent took it back for an idle worker: no outcome
        if (in_lane) env_.task_lane->discard(size);
        continue;
      }
      if (env_.slot->take_watch() && !write_frame(env_.result_fd, make_frame_header(FrameKind::started, 0, 0), {})) {
        break;  // the parent is gone
      }
      task_in_lane_ = in_lane;
      task_size_ = size;
      return TaskView{frame->header.id, in_lane ? env_.task_lane->view(size) : frame->payload};
    }
    return std::nullopt;
  }

  WorkerSlot* slot() const noexcept { return env_.slot; }
  bool timed() const noexcept { return env_.timed; }
  MemoryGuard* memory() const noexcept { return memory_; }

  bool send_result(FrameHeader h, Bytes& frame) {
    if (task_in_lane_) env_.task_lane->release(task_size_);  // the task's items are done with
    task_in_lane_ = false;
    const std::span<const std::byte> outcome{frame.data() + frame_header_size, frame.size() - frame_header_size};
    if (env_.result_lane->try_put(outcome)) {  // written before the header, so the parent sees both
      h.flags |= frame_flag_in_lane;
      frame.resize(frame_header_size);
    }
    std::memcpy(frame.data(), &h, sizeof h);
    return write_all(env_.result_fd, frame.data(), frame.size());
  }

 private:
  const WorkerEnv env_;
  FrameReader reader_;
  std::optional<MemoryGuard> guard_;
  MemoryGuard* memory_ = nullptr;  // &*guard_, if there is a limit
  std::uint32_t sequence_ = 0;  // the chunks received, counted as the parent counts those it sent
  bool task_in_lane_ = false;  // the running task's items are in the task lane, task_size_ bytes
  std::size_t task_size_ = 0;
};

template <class F>
int worker_main(F& fn, const std::function<void()>& initializer, const WorkerEnv& env) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != env.parent) return 0;  // the parent (the fork server) died before prctl took effect
  std::signal(SIGINT, SIG_IGN);             // Ctrl-C is the parent's to handle
  std::setvbuf(stdout, nullptr, _IOLBF, 0); // whole lines from concurrent workers
  // A task that calls std::exit(N) ends the worker with N at once, as the normal way
  // out (_exit) does: the static destructors and atexit handlers it inherited belong
  // to the parent's objects. (on_exit handlers run newest first, so this one leads.)
  ::on_exit(
      [](int status, void*) {
        std::fflush(nullptr);
        ::_exit(status);
      },
      nullptr);
  WorkerPipes pipes(env);
  return serve_chunks(fn, initializer, pipes);
}

}  // namespace mproc::detail
