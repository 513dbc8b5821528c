#pragma once
// The MPI transport of a Pool, on the master (rank 0 of the pool's communicator):
// the other ranks are the workers. Chunks go to a rank as it has room (a result
// coming back makes room: ranks take work on demand), as task frames sent without
// blocking; outcomes come back as result frames and go to DispatchEngine::complete().
//
// Waiting: while a rank holds work (or has not said it is ready) the pool's thread
// tests for a message without spinning (mpi/wait.hpp): at full speed for a moment,
// then sleeping between tests on the eventfd user threads wake it with, so a wake-up
// ends the wait at once. While no rank holds anything no message can come, and it
// sleeps on the eventfd alone: an idle pool costs no CPU on the master.
//
// A rank that dies is not survived: Open MPI's mpirun ends the whole job.

#include <mproc/detail/engine/dispatch_engine.hpp>
#include <mproc/detail/mpi/env.hpp>
#include <mproc/detail/mpi/frames.hpp>
#include <mproc/detail/mpi/serve.hpp>
#include <mproc/detail/mpi/wait.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/errors.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace mproc::detail {

/// This process's master pools over MPI whose ranks have not stopped yet. Their
/// serving ranks are inside one pool's constructor at a time, so the next pool
/// can start only once they have left the last one.
class MasterPools {
 public:
  static MasterPools& instance() {
    static MasterPools pools;
    return pools;
  }
  void add(const DispatchEngine* pool) {
    std::lock_guard lock(mutex_);
    pools_.push_back(pool);
  }
  /// The pool's ranks have stopped (or it is being destroyed).
  void remove(const DispatchEngine* pool) noexcept {
    {
      std::lock_guard lock(mutex_);
      pools_.erase(std::remove(pools_.begin(), pools_.end(), pool), pools_.end());
    }
    stopped_.notify_all();
  }
  /// Waits until every pool has stopped its ranks, as join() would. Returns false
  /// at once if one is still open: nothing will ever stop its ranks then.
  bool wait_until_stopped() {
    std::unique_lock lock(mutex_);
    for (;;) {
      if (pools_.empty()) return true;
      if (std::any_of(pools_.begin(), pools_.end(), [](const DispatchEngine* p) { return !p->closed(); })) return false;
      stopped_.wait(lock);
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable stopped_;
  std::vector<const DispatchEngine*> pools_;
};

class MpiEngine final : public DispatchEngine {
 public:
  /// Takes the pool's communicator (this process is its rank 0); every other rank
  /// must be in serve_tasks().
  explicit MpiEngine(Comm comm) : DispatchEngine(static_cast<std::size_t>(comm.size() - 1), 0), comm_(std::move(comm)) {
    ranks_.resize(static_cast<std::size_t>(comm_.size() - 1));
    for (std::size_t i = 0; i < ranks_.size(); ++i) ranks_[i].rank = static_cast<int>(i) + 1;
    wake_fd_ = make_private_fd("eventfd", [] { return ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); });
    busy_pools().fetch_add(1);
    MasterPools::instance().add(this);
    try {
      launch();
    } catch (...) {
      uncount();
      throw;
    }
  }
  ~MpiEngine() override {
    shut_down_thread();
    uncount();
  }


 private:
  struct Outgoing {
    FrameHeader header;
    std::span<const std::byte> payload;  // in the job's input, alive while the chunk is held
  };
  struct Rank {
    int rank = 0;
    bool answered = false;  // said ready, or that its initializer failed
    bool ready = false;
    HeldChunks held;  // in the order sent; the rank answers in that order
    std::int64_t last_answer_ns = 0;
    std::deque<Outgoing> out;  // cut, not yet sent
  };
  struct Sending {
    Bytes message;
    std::vector<MPI_Request> requests;
  };

  /// The ranks have left this pool: MPI may be finalized, the next pool may start.
  void uncount() noexcept {
    if (!counted_.exchange(false)) return;
    busy_pools().fetch_sub(1);
    MasterPools::instance().remove(this);
  }

  // ------------------------------------------------------------------ DispatchEngine steps

  void start() override {}

  void wake() override {
    woken_.store(true, std::memory_order_release);  // seen by a wait that is not asleep yet
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_.get(), &one, sizeof one);
  }

  /// One chunk to each ready rank with room per round, so work spreads evenly.
  void hand_out_locked() override {
    for (bool progress = true; progress;) {
      progress = false;
      for (Rank& r : ranks_) {
        if (!r.ready || !wants_more_locked(r.held, r.last_answer_ns)) continue;
        auto chunk = cut_chunk_locked();
        if (!chunk) return;
        const auto bytes = chunk->job->input.bytes(chunk->first, chunk->count);
        r.out.push_back({make_frame_header(FrameKind::task, chunk->id, bytes.size()), bytes});
        r.held.push_back(std::move(*chunk));
        progress = true;
      }
    }
  }

  void wait_and_handle() override {
    send_queued();
    reap_sends();
    if (expecting_messages()) {
      wait_for_message();
    } else {
      pollfd p{wake_fd_.get(), POLLIN, 0};
      poll_until(&p, 1, Deadline::forever());
      take_wake();
    }
    // Whatever else has arrived, a bounded number so the chunks get handed out too.
    for (int i = 0; i < 64 && handle_next(); ++i) {
    }
  }

  /// Handles the next message if one has arrived; returns whether one had.
  bool handle_next() {
    MPI_Message message;
    MPI_Status status;
    int found = 0;
    check_mpi(MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_.get(), &found, &message, &status), "MPI_Improbe");
    if (found != 0) handle(message, status);
    return found != 0;
  }

  /// Until a message comes (handled) or a user thread wakes the pool's thread. It
  /// spins longer while a rank runs a chunk predicted to be short: its answer is due.
  void wait_for_message() {
    MpiBackoff backoff(answer_due() ? MpiBackoff::long_spin : MpiBackoff::short_spin);
    for (;;) {
      if (handle_next()) return;
      if (woken_.load(std::memory_order_acquire)) return take_wake();
      // Sends still under way need this thread's calls into MPI to move on (over TCP
      // a big one moves only then): shorter pauses while there are any.
      const auto pause = backoff.next(sending_.empty() ? MpiBackoff::max_sleep : sending_pause);
      if (pause.count() == 0) continue;
      if (pause_unless_readable(wake_fd_.get(), pause)) return take_wake();
      reap_sends();
    }
  }

  /// Whether a rank runs a chunk predicted to take less than MpiBackoff::long_spin.
  bool answer_due() const {
    constexpr double due = std::chrono::duration<double>(MpiBackoff::long_spin).count();
    return std::any_of(ranks_.begin(), ranks_.end(), [](const Rank& r) {
      return !r.held.empty() && r.held.front().predicted_seconds >= 0 && r.held.front().predicted_seconds < due;
    });
  }

  /// Consumes a wake-up (the flag, and the eventfd's count if already written).
  void take_wake() {
    woken_.store(false, std::memory_order_relaxed);
    std::uint64_t count;
    (void)!::read(wake_fd_.get(), &count, sizeof count);
  }

  /// Tells every rank to stop (`now`: drop what it has not started) and waits for
  /// each to answer, throwing away outcomes that still come (their tasks were
  /// abandoned). Ranks cannot be killed: one running a chunk answers after it.
  void stop(bool now) override {
    for (Rank& r : ranks_) r.out.clear();  // with `now`, their tasks were abandoned; else there are none
    for (Rank& r : ranks_) send_empty_frame(comm_.get(), r.rank, FrameKind::stop, now ? mpi_stop_now : 0);
    std::vector<bool> stopped(ranks_.size(), false);
    for (std::size_t left = ranks_.size(); left > 0;) {
      MPI_Message message;
      MPI_Status status;
      mpi_mprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_.get(), message, status);
      Rank& r = sender(status);
      if (receive_frame(comm_.get(), message, status, inbox_).header.kind == FrameKind::stop &&
          !stopped[static_cast<std::size_t>(r.rank - 1)]) {
        stopped[static_cast<std::size_t>(r.rank - 1)] = true;
        --left;
      }
    }
    for (Sending& s : sending_) mpi_wait_all(s.requests);
    sending_.clear();
    uncount();  // the ranks have left this pool
  }

  // ------------------------------------------------------------------ messages

  /// Whether a rank may send something now: one that holds work or has not
  /// answered yet.
  bool expecting_messages() const {
    for (const Rank& r : ranks_) {
      if (!r.answered || !r.held.empty()) return true;
    }
    return false;
  }

  Rank& sender(const MPI_Status& status) {
    if (status.MPI_SOURCE < 1 || status.MPI_SOURCE > static_cast<int>(ranks_.size()) ||
        status.MPI_TAG != mpi_tag_frame) {
      throw ProtocolError("mproc: unexpected MPI message on the pool's communicator");
    }
    return ranks_[static_cast<std::size_t>(status.MPI_SOURCE - 1)];
  }

  void handle(MPI_Message& message, const MPI_Status& status) {
    Rank& r = sender(status);
    const FrameView f = receive_frame(comm_.get(), message, status, inbox_);
    switch (f.header.kind) {
      case FrameKind::ready:
        if (r.answered) throw ProtocolError("mproc: a serving rank said ready twice");
        r.answered = r.ready = true;
        return;
      case FrameKind::init_failed:
        r.answered = true;
        break_pool(initializer_error(f.payload));
        return;
      case FrameKind::result:
        return complete_front(r.held, r.last_answer_ns, f, "a serving rank");
      default:
        throw ProtocolError("mproc: unexpected frame from a serving rank");
    }
  }

  /// Starts sending the frames cut since the last round (header and payload copied
  /// into one message).
  void send_queued() {
    for (Rank& r : ranks_) {
      for (; !r.out.empty(); r.out.pop_front()) {
        const Outgoing& o = r.out.front();
        Sending s;
        s.message.reserve(frame_header_size + o.payload.size());
        s.message.append(&o.header, frame_header_size);
        s.message.append(o.payload.data(), o.payload.size());
        isend_frame(comm_.get(), r.rank, s.message.span(), s.requests);
        sending_.push_back(std::move(s));
      }
    }
  }

  /// Frees the messages whose sends have completed.
  void reap_sends() {
    for (auto it = sending_.begin(); it != sending_.end();) {
      int done = 0;
      check_mpi(MPI_Testall(static_cast<int>(it->requests.size()), it->requests.data(), &done, MPI_STATUSES_IGNORE),
                "MPI_Testall");
      it = done != 0 ? sending_.erase(it) : std::next(it);
    }
  }

  /// The longest pause between tests for a message while sends are under way.
  static constexpr std::chrono::nanoseconds sending_pause = std::chrono::microseconds(100);

  Comm comm_;
  Fd wake_fd_;
  std::atomic<bool> woken_{false};  // wake() was called: set before the eventfd is written
  std::atomic<bool> counted_{true};  // in busy_pools() and MasterPools

  // The pool's thread only (hand_out_locked also runs there, with the mutex).
  std::vector<Rank> ranks_;
  std::list<Sending> sending_;  // list: the requests point into each message
  Bytes inbox_;                 // the frame being handled
};

}  // namespace mproc::detail
