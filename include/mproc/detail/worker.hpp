#pragma once
// The loop a pool worker runs after the fork: read task frames, run them, send
// outcomes. It leaves on end-of-file from the parent (close, retirement) and dies
// with the parent.

#include <mproc/codec.hpp>
#include <mproc/detail/frame.hpp>
#include <mproc/detail/pool_core.hpp>
#include <mproc/detail/task.hpp>

#include <sys/prctl.h>

#include <csignal>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>

namespace mproc::detail {

/// Outcomes are batched while more tasks are already waiting in the pipe (one write
/// for many tiny tasks), and sent before the worker would block reading.
inline constexpr std::size_t max_result_batch = 1 << 20;

template <class F>
int worker_main(F& fn, const std::function<void()>& initializer, const WorkerEnv& env) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != env.parent) return 0;  // the parent died before prctl took effect
  std::signal(SIGINT, SIG_IGN);             // Ctrl-C is the parent's to handle
  std::setvbuf(stdout, nullptr, _IOLBF, 0); // whole lines from concurrent workers

  if (initializer) {
    try {
      initializer();
    } catch (...) {
      const ExceptionInfo info = describe_current_exception();
      const Bytes payload = encode(std::pair<std::string, std::string>(info.type, info.message));
      write_frame(env.result_fd, make_frame_header(FrameKind::init_failed, 0, payload.size()), payload);
      return 1;
    }
  }
  if (!write_frame(env.result_fd, make_frame_header(FrameKind::ready, 0, 0), {})) return 0;

  FrameReader reader(env.task_fd);
  Bytes batch;
  auto flush = [&] {
    const bool ok = batch.empty() || write_all(env.result_fd, batch.data(), batch.size());
    batch.clear();
    return ok;
  };
  for (;;) {
    if (!batch.empty() && (batch.size() >= max_result_batch || !reader.has_buffered_frame())) {
      if (!flush()) return 0;  // the parent is gone
    }
    const auto frame = reader.read();
    if (!frame || frame->header.kind == FrameKind::stop) break;
    if (frame->header.kind != FrameKind::task) throw ProtocolError("mproc: worker got an unexpected frame");
    const bool task_in_lane = (frame->header.flags & frame_flag_in_lane) != 0;
    const auto task_size = static_cast<std::size_t>(frame->header.size);
    const auto items = task_in_lane ? env.task_lane->view(task_size) : frame->payload;
    const std::size_t header_at = batch.size();
    batch.extend(frame_header_size);
    run_chunk(fn, frame->header.id, items, batch, env.slot, env.timed);
    if (task_in_lane) env.task_lane->release(task_size);
    const std::span<const std::byte> outcome{batch.data() + header_at + frame_header_size,
                                             batch.size() - header_at - frame_header_size};
    FrameHeader h = make_frame_header(FrameKind::result, frame->header.id, outcome.size());
    if (env.result_lane->try_put(outcome)) {  // the header follows the data, so the parent sees both
      h.flags |= frame_flag_in_lane;
      batch.resize(header_at + frame_header_size);
    }
    std::memcpy(batch.data() + header_at, &h, sizeof h);
  }
  flush();
  return 0;
}

}  // namespace mproc::detail
