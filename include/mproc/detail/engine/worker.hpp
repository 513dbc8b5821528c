#pragma once
// The loop a pool worker runs after the fork: read task frames, run them, send
// outcomes. It leaves on a stop frame from the parent (retirement, the pool closing),
// at end-of-file, once over its memory limit, and dies with the parent.

#include <mproc/codec.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/detail/os/resident_memory.hpp>
#include <mproc/detail/engine/worker_env.hpp>
#include <mproc/detail/engine/run_chunk.hpp>

#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <utility>

namespace mproc::detail {


template <class F>
int worker_main(F& fn, const std::function<void()>& initializer, const WorkerEnv& env) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != env.parent) return 0;  // the parent (the fork server) died before prctl took effect
  std::signal(SIGINT, SIG_IGN);             // Ctrl-C is the parent's to handle
  std::setvbuf(stdout, nullptr, _IOLBF, 0); // whole lines from concurrent workers
  // A task that calls std::exit(N) ends the worker with N at once, as the normal way
  // out (_exit) does: the static destructors and atexit handlers it inherited belong
  // to the parent's objects. (on_exit handlers run newest first, so this one leads.)
  ::on_exit([](int status, void*) {
    std::fflush(nullptr);
    ::_exit(status);
  }, nullptr);

  if (initializer) {
    try {
      initializer();
    } catch (...) {
      const Bytes payload = encode_initializer_failure(describe_current_exception());
      write_frame(env.result_fd, make_frame_header(FrameKind::init_failed, 0, payload.size()), payload);
      return 1;
    }
  }
  if (!write_frame(env.result_fd, make_frame_header(FrameKind::ready, 0, 0), {})) return 0;

  FrameReader reader(env.task_fd);
  Bytes out;  // one chunk's result frame; kept to reuse its memory
  std::optional<MemoryGuard> memory;
  if (env.max_memory != 0) memory.emplace(env.max_memory);
  std::uint32_t sequence = 0;  // the chunks received, counted as the parent counts those it sent
  while (const auto frame = reader.read()) {
    if (frame->header.kind == FrameKind::stop) break;  // retired, or the pool is closing
    if (frame->header.kind != FrameKind::task) throw ProtocolError("mproc: worker got an unexpected frame");
    const bool task_in_lane = (frame->header.flags & frame_flag_in_lane) != 0;
    const auto task_size = static_cast<std::size_t>(frame->header.size);
    if (!env.slot->claim(++sequence)) {  // the parent took it back for an idle worker: no outcome
      if (task_in_lane) env.task_lane->discard(task_size);
      continue;
    }
    if (env.slot->take_watch() && !write_frame(env.result_fd, make_frame_header(FrameKind::started, 0, 0), {})) {
      return 0;  // the parent is gone
    }
    out.resize(frame_header_size);
    // Over the memory limit, the chunk ends early: the parent runs the rest elsewhere.
    run_chunk(fn, frame->header.id, task_in_lane ? env.task_lane->view(task_size) : frame->payload, out, env.slot,
              env.timed, memory ? &*memory : nullptr);
    if (task_in_lane) env.task_lane->release(task_size);
    const std::span<const std::byte> outcome{out.data() + frame_header_size, out.size() - frame_header_size};
    FrameHeader h = make_frame_header(FrameKind::result, frame->header.id, outcome.size());
    if (env.result_lane->try_put(outcome)) {  // written before the header, so the parent sees both
      h.flags |= frame_flag_in_lane;
      out.resize(frame_header_size);
    }
    const bool retiring = memory && memory->over();
    if (retiring) h.flags |= frame_flag_retiring;
    std::memcpy(out.data(), &h, sizeof h);
    // Sent before the next chunk starts, never held back behind it: the next task
    // may be long, or may even wait for this result.
    if (!write_all(env.result_fd, out.data(), out.size())) return 0;  // the parent is gone
    if (retiring) break;  // the pool runs what else it gave us elsewhere
  }
  return 0;
}

}  // namespace mproc::detail
