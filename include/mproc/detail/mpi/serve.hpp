#pragma once
// What a serving rank of an MPI pool runs inside the pool's constructor: the
// initializer, then task frames from the master, each run by run_chunk (exactly as
// a local worker runs it) and answered with its outcome, until the master says stop.
//
// The rank reads ahead whatever the master has already sent before it runs the next
// chunk, so a stop from terminate() drops the chunks queued behind it instead of
// running them. A rank cannot be interrupted inside a chunk.
//
// A task's exception goes back to the master as its outcome. Anything else that
// escapes (a malformed frame, bad_alloc, an MPI error) ends the job: the master would
// wait for this rank's answers forever.

#include <mproc/codec.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/detail/mpi/env.hpp>
#include <mproc/detail/mpi/frames.hpp>
#include <mproc/detail/mpi/wait.hpp>
#include <mproc/detail/engine/run_chunk.hpp>
#include <mproc/errors.hpp>

#include <algorithm>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <string>
#include <utility>

namespace mproc::detail {

inline constexpr int mpi_master = 0;
/// The id of a stop frame from terminate(): drop the chunks not started yet.
inline constexpr std::uint64_t mpi_stop_now = 1;

/// One frame received from the master, kept whole.
struct MpiInbound {
  FrameHeader header;
  Bytes bytes;  // header and payload
  std::span<const std::byte> payload() const { return {bytes.data() + frame_header_size, header.size}; }
};

/// The next frame from the master: waits until it comes, or with `wait` false
/// returns nothing unless it is already here. A rank waits with nothing to run: it
/// spins a while, for the next task of a caller that sends one at a time, then backs
/// off (mpi/wait.hpp) and leaves its core to the others.
inline std::optional<MpiInbound> receive_from_master(MPI_Comm comm, bool wait) {
  MPI_Message message;
  MPI_Status status;
  if (wait) {
    mpi_mprobe(mpi_master, mpi_tag_frame, comm, message, status, MpiBackoff::long_spin);
  } else {
    int found = 0;
    check_mpi(MPI_Improbe(mpi_master, mpi_tag_frame, comm, &found, &message, &status), "MPI_Improbe");
    if (found == 0) return std::nullopt;
  }
  MpiInbound in;
  in.header = receive_frame(comm, message, status, in.bytes).header;
  return in;
}

/// Serves the master's tasks until it sends stop, then answers with a stop frame
/// and returns. If the initializer throws, the master hears it (the pool is broken
/// there) and this rank runs nothing.
template <class F>
void serve_tasks(F& fn, const std::function<void()>& initializer, const Comm& comm) {
  struct Busy {  // while serving, exit() inside F must not wait in MPI_Finalize
    Busy() { busy_pools().fetch_add(1); }
    ~Busy() { busy_pools().fetch_sub(1); }
    Busy(const Busy&) = delete;
    Busy& operator=(const Busy&) = delete;
  } busy;
  Bytes out;  // one outcome frame; kept to reuse its memory
  bool ready = true;
  if (initializer) {
    try {
      initializer();
    } catch (...) {
      const Bytes payload = encode_initializer_failure(describe_current_exception());
      const FrameHeader h = make_frame_header(FrameKind::init_failed, 0, payload.size());
      out.append(&h, sizeof h);
      out.append(payload.data(), payload.size());
      send_frame(comm.get(), mpi_master, out.span());
      ready = false;
    }
  }
  if (ready) send_empty_frame(comm.get(), mpi_master, FrameKind::ready);

  std::deque<MpiInbound> inbox;  // frames already sent by the master, in order
  for (;;) {
    if (inbox.empty()) inbox.push_back(*receive_from_master(comm.get(), true));
    while (auto more = receive_from_master(comm.get(), false)) inbox.push_back(std::move(*more));
    const auto now = std::find_if(inbox.begin(), inbox.end(), [](const MpiInbound& f) {
      return f.header.kind == FrameKind::stop && f.header.id == mpi_stop_now;
    });
    if (now != inbox.end()) inbox.erase(inbox.begin(), now);  // terminate(): what it queued never runs

    const MpiInbound frame = std::move(inbox.front());
    inbox.pop_front();
    if (frame.header.kind == FrameKind::stop) {
      send_empty_frame(comm.get(), mpi_master, FrameKind::stop);  // nothing more comes from here
      return;
    }
    if (frame.header.kind != FrameKind::task || !ready) {
      throw ProtocolError("mproc: a serving rank got an unexpected frame from the master");
    }
    out.resize(frame_header_size);
    run_chunk(fn, frame.header.id, frame.payload(), out, nullptr, false);
    const FrameHeader h = make_frame_header(FrameKind::result, frame.header.id, out.size() - frame_header_size);
    std::memcpy(out.data(), &h, sizeof h);
    send_frame(comm.get(), mpi_master, out.span());
  }
}

/// serve_tasks, or the end of the job with the message of what escaped it.
template <class F>
void serve_or_abort(F& fn, const std::function<void()>& initializer, const Comm& comm) noexcept {
  std::string what;
  try {
    serve_tasks(fn, initializer, comm);
    return;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    what = "an exception that is not a std::exception";
  }
  abort_job(comm.get(), "mproc::mpi::Pool: serving rank " + std::to_string(comm.rank()) +
                            " can't go on (" + what + "); the master would wait for it forever, so the job ends");
}

}  // namespace mproc::detail
