#pragma once
// What a serving rank of an MPI pool runs inside the pool's constructor: serve_chunks
// (engine/worker.hpp, the loop a local worker runs too) over MPI messages from and to
// the master: the initializer, then task frames, each run and answered with its
// outcome, until the master says stop.
//
// The rank reads ahead whatever the master has already sent before it runs the next
// chunk, so a stop from terminate() drops the chunks queued behind it instead of
// running them. A rank cannot be interrupted inside a chunk.
//
// A task's exception goes back to the master as its outcome. Anything else that
// escapes (a malformed frame, bad_alloc, an MPI error) ends the job: the master would
// wait for this rank's answers forever.

#include <mproc/codec.hpp>
#include <mproc/detail/engine/worker.hpp>
#include <mproc/detail/mpi/env.hpp>
#include <mproc/detail/mpi/frames.hpp>
#include <mproc/detail/mpi/wait.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/errors.hpp>

#include <algorithm>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <optional>
#include <span>
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

/// serve_chunks' transport on a serving rank. It reads ahead whatever the master has
/// already sent before it hands out the next chunk, so that a stop from terminate()
/// drops the chunks queued behind it; a stop is answered with a stop frame.
class MasterLink {
 public:
  explicit MasterLink(const Comm& comm) : comm_(comm.get()) {}

  bool send_ready() {
    send_empty_frame(comm_, mpi_master, FrameKind::ready);
    return true;
  }
  bool send_init_failed(std::span<const std::byte> payload) {
    Bytes out;
    const FrameHeader h = make_frame_header(FrameKind::init_failed, 0, payload.size());
    out.append(&h, sizeof h);
    out.append(payload.data(), payload.size());
    send_frame(comm_, mpi_master, out.span());
    return true;  // the master still sends stop, to be answered
  }

  std::optional<TaskView> receive() {
    if (inbox_.empty()) inbox_.push_back(*receive_from_master(comm_, true));
    while (auto more = receive_from_master(comm_, false)) inbox_.push_back(std::move(*more));
    const auto now = std::find_if(inbox_.begin(), inbox_.end(), [](const MpiInbound& f) {
      return f.header.kind == FrameKind::stop && f.header.id == mpi_stop_now;
    });
    if (now != inbox_.end()) inbox_.erase(inbox_.begin(), now);  // terminate(): what it queued never runs

    current_ = std::move(inbox_.front());
    inbox_.pop_front();
    if (current_.header.kind == FrameKind::stop) {
      send_empty_frame(comm_, mpi_master, FrameKind::stop);  // nothing more comes from here
      return std::nullopt;
    }
    if (current_.header.kind != FrameKind::task) {
      throw ProtocolError("mproc: a serving rank got an unexpected frame from the master");
    }
    return TaskView{current_.header.id, current_.payload()};
  }

  // A rank posts no running item (it cannot be interrupted inside a chunk) and has no
  // memory limit.
  WorkerSlot* slot() const noexcept { return nullptr; }
  bool timed() const noexcept { return false; }
  MemoryGuard* memory() const noexcept { return nullptr; }

  bool send_result(const FrameHeader& h, Bytes& frame) {
    std::memcpy(frame.data(), &h, sizeof h);
    send_frame(comm_, mpi_master, frame.span());
    return true;
  }

 private:
  MPI_Comm comm_;
  std::deque<MpiInbound> inbox_;  // frames already sent by the master, in order
  MpiInbound current_{};          // the chunk running now
};

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
  MasterLink master(comm);
  serve_chunks(fn, initializer, master);
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
  abort_job(comm.get(), "mproc::mpi::Pool: serving rank " + std::to_string(comm.rank()) + " can't go on (" + what +
                            "); the master would wait for it forever, so the job ends");
}

}  // namespace mproc::detail
