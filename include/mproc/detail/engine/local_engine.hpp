#pragma once
// The local transport of a Pool: worker processes forked by the pool's fork server,
// a pipe each way to each of them (with a shared-memory lane beside each pipe for big
// payloads), and the board where each worker posts which item it is running. The
// pool's thread never blocks on one worker: every pipe is non-blocking and it sleeps
// only in poll(), with a deadline when a task timeout is due.
//
// Who holds what: each worker runs its chunks in the order it got them, so the chunks
// it holds form a queue (held), and its slot on the WorkerSlots board says which item
// of the front chunk it is running. When a worker dies, that one item fails (or is
// retried) and everything else it held goes back to the front of the queue.
//
// A worker gets its next chunk before it finished the one it runs (a round trip saved
// between chunks), but that prefetch is revocable: when nothing is left to hand out and
// a worker holds nothing, the chunks that another, quiet for a millisecond, holds
// behind the one it runs and has not started are taken back and handed to the idle one. The two sides agree on what the
// worker started through its slot's claims word (WorkerSlot::claim, revoke), so a
// chunk is run once, by one worker. A worker stuck in a long task thus keeps nothing
// waiting behind it, as in Python, where a busy worker holds nothing else.
//
// Who does the I/O: the pool's thread, which holds io_mutex_ whenever it is not asleep
// in poll(). While it sleeps, a thread calling Pool::apply may take io_mutex_ and do
// what the pool's thread would (hand its task to an idle worker, read the outcome),
// so that one call wakes two threads (the worker, then the caller), not four (the
// pool's thread and the worker, then the pool's thread and the caller). The worker is
// lent to that caller meanwhile: the pool's thread neither polls it nor gives it work,
// and takes it back (and its chunk, as from any worker) if it dies. See submit_awaited.
//
// A worker leaves when told to by a stop frame (maxtasksperchild, the pool closing),
// not only at end of file on its task pipe: a process forked outside mproc may hold a
// copy of that pipe, and the end of file would then never come.

#include <mproc/detail/engine/dispatch_engine.hpp>
#include <mproc/detail/engine/lane.hpp>
#include <mproc/detail/engine/worker_env.hpp>
#include <mproc/detail/engine/worker_slots.hpp>
#include <mproc/detail/os/child.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/os/fork_server.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/errors.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace mproc::detail {

struct LocalConfig {
  std::size_t processes = 1;
  std::size_t maxtasksperchild = 0;
  std::chrono::nanoseconds task_timeout{0};
  std::size_t retries = 0;
  std::size_t max_memory_per_child = 0;
  std::function<int(const WorkerEnv&)> worker_main;  // runs in the child; returns its exit code
};

class LocalEngine final : public DispatchEngine {
 public:
  explicit LocalEngine(LocalConfig config)
      : DispatchEngine(config.processes, config.retries),
        config_(std::move(config)),
        slots_(config_.processes, config_.task_timeout.count() > 0) {
    // Made before the fork server, so every worker shares them.
    for (std::size_t i = 0; i < config_.processes; ++i) {
      task_lanes_.push_back(std::make_unique<Lane>());
      result_lanes_.push_back(std::make_unique<Lane>());
    }
    wake_fd_ = make_private_fd("eventfd", [] { return ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); });
    // Here, on the caller's thread: the pool's thread, which forks the fork server,
    // flushes only C stdio (std::cout belongs to the program's threads).
    flush_std_streams();
    launch();
  }
  ~LocalEngine() override { shut_down_thread(); }

  /// The pids of the live workers (a snapshot). Right after the constructor it waits
  /// until the first workers are started (forked, not necessarily ready), as Python's
  /// pool has its workers once made; the constructor itself waits only for the fork
  /// server.
  std::vector<pid_t> worker_pids() const override {
    std::unique_lock lock(pids_mutex_);
    if (!on_pool_thread) pids_cv_.wait(lock, [this] { return !starting_; });
    return pids_;
  }

 private:
  struct Outgoing {
    FrameHeader header;
    std::span<const std::byte> payload;
    std::shared_ptr<const void> keep_alive;  // owns the payload's bytes (the job's input, or a copy)
  };
  struct Worker {
    std::size_t slot = 0;
    pid_t pid = -1;
    Fd pidfd;  // to signal it: never a recycled pid
    Fd task_w;
    Fd result_r;
    bool result_eof = false;
    FrameAssembler in;
    HeldChunks held;
    std::deque<Outgoing> out;
    std::size_t out_written = 0;  // bytes of out.front() already written
    std::size_t assigned = 0;  // items ever handed to this worker
    std::uint32_t sent = 0;  // the sequence of the last chunk sent (WorkerSlot::claims)
    std::int64_t last_answer_ns = 0;  // when it last returned an outcome
    /// With a task timeout: when it last sent or took bytes, or was given work while
    /// it held none (a worker that runs no item is timed from there).
    std::int64_t progress_ns = 0;
    bool ready = false;  // its initializer finished
    bool retiring = false;  // takes no more work (maxtasksperchild, memory)
    bool stop_queued = false;  // a stop frame is in out (or written)
    bool lent = false;  // a caller of submit_awaited does its I/O (see there)
    bool gone = false;  // it exited and the pool forgot it
    /// The running word it was killed for by the task timeout (0: it held work and
    /// started none of it in time).
    std::optional<std::uint64_t> timed_out;

    void kill(int sig) const noexcept { (void)::syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0); }
  };
  using Clock = std::chrono::steady_clock;

  // ------------------------------------------------------------------ DispatchEngine steps

  void start() override {
    ForkGate::join();  // until stop(): see fork_gate.hpp
    io_lock_ = std::unique_lock(io_mutex_);  // released only while asleep in poll(), and at the end of stop()
    struct Started {  // worker_pids() waits for this, however start() ends
      LocalEngine& engine;
      ~Started() { engine.first_workers_started(); }
    } started{*this};
    const bool timed = slots_.timed();
    try {
      server_.emplace([this, timed](std::size_t slot, int task_fd, int result_fd, pid_t parent) {
        // Forked (through the server) from the pool's thread, whose flag it copied: a
        // worker is not that thread, and a pool it makes may wait for its results.
        on_pool_thread = false;
        return config_.worker_main(WorkerEnv{task_fd, result_fd, &slots_[slot], parent, timed, task_lanes_[slot].get(),
                                             result_lanes_[slot].get(), config_.max_memory_per_child});
      });
    } catch (const OSError& e) {  // out of descriptors or processes: say which, as OSError
      break_pool(
          std::make_exception_ptr(limit_error("mproc: the pool could not start its fork server", e.error_code())));
      return;
    }
    forked_from_program();  // workers come from the server, a single thread
    for (std::size_t i = 0; i < config_.processes; ++i) respawn_.push_back(i);
    (void)start_workers();  // false: terminate() came, or the pool broke; the loop sees which
  }

  void wake() override {
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_.get(), &one, sizeof one);
  }

  /// While the pool's thread sleeps in poll() (io_mutex_ is free) and a worker is
  /// idle, the caller hands the job's chunk to that worker itself and waits for the
  /// outcome on the worker's pipe: the pool's thread is not woken at all. Otherwise
  /// (the pool's thread is awake, no worker is idle, a task timeout must be timed by
  /// the pool's thread, or this is the pool's thread) the job is queued as usual.
  void submit_awaited(std::shared_ptr<Job> job) override {
    std::shared_ptr<Worker> lent;
    {
      std::unique_lock io(io_mutex_, std::defer_lock);
      if (!on_pool_thread && !slots_.timed()) (void)io.try_lock();
      std::lock_guard lock(mutex());
      Worker* idle = nullptr;
      if (io.owns_lock()) {
        for (auto& w : workers_) {
          if (!w->lent && w->held.empty() && w->out.empty() && has_room(*w)) idle = w.get();
        }
      }
      if (idle == nullptr) {
        submit_locked(std::move(job));
        return;
      }
      check_open_locked();
      queue_locked(job);
      // What the pool's thread would do on waking: the idle worker gets the next
      // chunk (this job's, unless items a lost worker held come first).
      const bool given = give_chunk_locked(*idle);
      try {
        if (given) flush_writes(*idle);
      } catch (const OSError&) {
        // The pool's thread meets the same error and breaks the pool.
      }
      if (!given || idle->held.size() != 1 || idle->held.front().job != job || !idle->out.empty()) {
        wake_locked();  // the pool's thread does the rest, and watches the worker
        return;
      }
      idle->lent = true;
      for (auto& w : workers_) {
        if (w.get() == idle) lent = w;
      }
    }
    await_outcome(lent, job);
  }

  /// submit_awaited, after the chunk went to worker w: waits for its outcome on w's
  /// pipe and reads it (as the pool's thread would), or for w to exit. The worker goes
  /// back to the pool's thread either way; if the job is not finished then (w died, or
  /// gave items back), the pool's thread sees to it.
  void await_outcome(const std::shared_ptr<Worker>& w, const std::shared_ptr<Job>& job) {
    bool finished = false;
    std::exception_ptr failure;
    for (bool back = false; !back;) {
      pollfd fds[2] = {{w->result_r.get(), POLLIN, 0}, {w->pidfd.get(), POLLIN, 0}};
      try {
        poll_until(fds, 2, Deadline::forever());
      } catch (const std::exception& e) {
        failure = std::make_exception_ptr(Error(std::string("mproc: the pool failed: ") + e.what()));
      }
      std::lock_guard io(io_mutex_);
      if (w->gone) return;  // it died and the pool's thread took back what it held
      try {
        if (fds[0].revents != 0) read_results(*w);
      } catch (const std::exception& e) {
        failure = std::make_exception_ptr(Error(std::string("mproc: the pool failed: ") + e.what()));
      }
      back = failure || w->held.empty() || w->result_eof || fds[1].revents != 0;
      if (back) {
        w->lent = false;
        std::lock_guard lock(mutex());
        finished = !failure && retire_awaited_locked(job);
        // Items to run again, a worker to watch or replace, or work queued meanwhile
        // that this worker may take: the pool's thread sees to it.
        if (!finished || has_queued_work_locked()) wake_locked();
      }
    }
    if (failure) {
      break_pool(failure);  // as the pool's thread does when its own I/O fails
      std::lock_guard lock(mutex());
      wake_locked();
    }
    if (finished) job->finish();
  }

  /// Hands out what is queued; once nothing is, a worker that holds nothing takes over
  /// what another holds and has not started (take_over_locked).
  void hand_out_locked() override {
    take_over_due_ns_ = 0;
    if (!spread_locked()) return;
    for (auto& wp : workers_) {
      Worker& w = *wp;
      if (w.lent || !w.held.empty() || !has_room(w)) continue;
      if (!take_over_locked(w)) return;
      while (has_room(w) && give_chunk_locked(w)) {
      }
      (void)spread_locked();  // what it does not take
    }
  }

  /// One chunk to each worker with room per round, so work spreads evenly. Returns
  /// whether nothing is left to hand out.
  bool spread_locked() {
    for (bool progress = true; progress;) {
      progress = false;
      for (auto& wp : workers_) {
        Worker& w = *wp;
        if (w.lent || !has_room(w)) continue;
        if (!give_chunk_locked(w)) return true;
        progress = true;
      }
    }
    return false;
  }

  /// For worker `idle`, which holds nothing while nothing is queued: takes back, to the
  /// front of the queue, every chunk that another worker holds behind one it started
  /// and has not started itself, from the worker that holds the most such items.
  /// Returns whether it took any. Only a worker that has not answered for
  /// taking_over_after_ns gives chunks up: it may be stuck in a long task, while one
  /// that answers runs what it holds soon enough (and tiny tasks are not sent twice);
  /// the pool's thread looks again when such a worker has been quiet that long
  /// (take_over_due_ns_). A worker that has not started the first chunk it holds (it
  /// is between chunks, or was slow to begin) is asked to say when it starts one
  /// (WorkerSlot::watch), and the pool's thread looks again then.
  bool take_over_locked(const Worker& idle) {
    const std::int64_t now = monotonic_ns();
    for (bool again = true; again;) {
      again = false;
      Worker* from = nullptr;
      std::size_t most = 0;
      for (auto& wp : workers_) {
        Worker& w = *wp;
        if (&w == &idle || w.lent || w.held.size() < 2) continue;
        if (now - w.last_answer_ns < taking_over_after_ns) {
          const std::int64_t due = w.last_answer_ns + taking_over_after_ns;
          take_over_due_ns_ = take_over_due_ns_ == 0 ? due : std::min(take_over_due_ns_, due);
          continue;
        }
        WorkerSlot& slot = slots_[w.slot];
        const std::uint32_t claimed = slot.claimed();
        if (sequence_after(w.held.front().sequence, claimed)) {
          again = again || !slot.watch(claimed);  // it claimed one meanwhile: look again
          continue;
        }
        const std::size_t items = unstarted_items(w, claimed);
        if (items > most) {
          most = items;
          from = &w;
        }
      }
      if (from != nullptr && revoke_unstarted_locked(*from)) return true;
    }
    return false;
  }

  /// The items worker w holds after chunk `claimed`, if it claimed one it holds
  /// (else 0: see take_over_locked).
  static std::size_t unstarted_items(const Worker& w, std::uint32_t claimed) {
    if (sequence_after(w.held.front().sequence, claimed)) return 0;
    std::size_t items = 0;
    for (auto c = w.held.rbegin(); c != w.held.rend() && sequence_after(c->sequence, claimed); ++c) items += c->count;
    return items;
  }

  /// Revokes every chunk worker w holds and has not started, behind one it did start
  /// (WorkerSlot::revoke; if the worker claims another meanwhile, again from there),
  /// and puts them back at the front of the queue. Their frames not yet written go
  /// out empty: the worker drops a revoked chunk without reading its items. Returns
  /// whether it revoked any.
  bool revoke_unstarted_locked(Worker& w) {
    WorkerSlot& slot = slots_[w.slot];
    std::uint32_t claimed;
    do {
      claimed = slot.claimed();
      if (unstarted_items(w, claimed) == 0) return false;
    } while (!slot.revoke(claimed, w.sent));
    std::vector<Chunk> back;
    while (!w.held.empty() && sequence_after(w.held.back().sequence, claimed)) back.push_back(w.held.take_back());
    std::reverse(back.begin(), back.end());  // in the order they were handed out
    for (const Chunk& c : back) {
      if (!w.stop_queued) w.assigned -= c.count;  // it may run them under maxtasksperchild
      for (std::size_t i = 0; i < w.out.size(); ++i) {
        Outgoing& o = w.out[i];
        if (o.header.kind != FrameKind::task || o.header.id != c.id) continue;
        if ((o.header.flags & frame_flag_in_lane) != 0) break;  // discarded from the lane by the worker
        if (i > 0 || w.out_written == 0) {
          o.header.size = 0;
          o.payload = {};
          o.keep_alive.reset();
        } else {
          keep_rest_of_payload(o, w.out_written);
        }
        break;
      }
    }
    take_back_locked(std::move(back));
    return true;
  }

  /// Frame o of a revoked chunk is partly written (`written` bytes, header included):
  /// the rest must follow, but the job frees its input once the chunk ran elsewhere.
  /// The worker drops it unread, so the rest is copied (the part already written is
  /// allocated, never touched).
  static void keep_rest_of_payload(Outgoing& o, std::size_t written) {
    const std::size_t done = std::min(o.payload.size(), written - std::min(written, frame_header_size));
    auto copy = std::make_shared<Bytes>(o.payload.size());
    std::memcpy(copy->data() + done, o.payload.data() + done, o.payload.size() - done);
    o.payload = {copy->data(), copy->size()};
    o.keep_alive = std::move(copy);
  }

  /// Gives worker w the next chunk, if there is one (mutex and io_mutex_ held).
  bool give_chunk_locked(Worker& w) {
    const std::size_t budget = config_.maxtasksperchild == 0 ? SIZE_MAX : config_.maxtasksperchild - w.assigned;
    auto chunk = cut_chunk_locked(budget);
    if (!chunk) return false;
    const auto bytes = chunk->job->input.bytes(chunk->first, chunk->count);
    if (slots_.timed() && w.held.empty()) w.progress_ns = monotonic_ns();  // its timeout counts from now
    w.out.push_back({make_frame_header(FrameKind::task, chunk->id, bytes.size()), bytes, chunk->job});
    chunk->sequence = ++w.sent;
    w.assigned += chunk->count;
    w.held.push_back(std::move(*chunk));
    if (config_.maxtasksperchild != 0 && w.assigned >= config_.maxtasksperchild) {
      w.retiring = true;
      queue_stop(w);  // right behind its last chunk
    }
    return true;
  }

  void wait_and_handle() override {
    if (!start_workers()) return;  // terminate() came while a worker started, or the pool broke
    for (auto& w : workers_) flush_writes(*w);
    fds_.clear();
    fds_.push_back({wake_fd_.get(), POLLIN, 0});
    fds_.push_back({server_->fd(), POLLIN, 0});
    for (auto& w : workers_) {
      // A ready worker that holds nothing has nothing to say (its exit comes from the
      // fork server), and a lent one is watched by its borrower: neither is polled, so
      // lending one (submit_awaited) needs no new poll here.
      const bool quiet = w->result_eof || w->lent || (w->ready && w->held.empty());
      fds_.push_back({quiet ? -1 : w->result_r.get(), POLLIN, 0});
      fds_.push_back({w->out.empty() || !w->task_w ? -1 : w->task_w.get(), POLLOUT, 0});
    }
    // Exits queued by an earlier spawn() leave the socket quiet: don't sleep on them.
    const Deadline wait = server_->has_queued_exits() ? Deadline::no_wait() : next_wait();
    io_lock_.unlock();  // submit_awaited may do the I/O meanwhile
    try {
      const ForkGate::Asleep asleep;
      poll_until(fds_.data(), fds_.size(), wait);
    } catch (...) {
      io_lock_.lock();
      throw;
    }
    io_lock_.lock();
    if (fds_[0].revents != 0) {
      std::uint64_t count;
      (void)!::read(wake_fd_.get(), &count, sizeof count);
    }
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      if (fds_[2 + 2 * i].revents != 0) read_results(*workers_[i]);
    }
    if (fds_[1].revents != 0 || server_->has_queued_exits()) handle_exits();
    check_timeouts();
  }

  void stop(bool now) override {
    ForkGate::leave();  // stopping may wait for workers a while: forks go on meanwhile
    struct ReleaseIo {  // however stop() ends: no pool thread is left to do I/O
      std::unique_lock<std::mutex>& lock;
      ~ReleaseIo() {
        if (lock.owns_lock()) lock.unlock();
      }
    } release_io{io_lock_};
    if (server_) {
      stopping_hard_ = now;
      for (auto& w : workers_) {
        queue_stop(*w);
        flush_writes(*w);  // idle workers exit at once
        w->task_w.reset();  // and at end of file, if the stop frame did not fit
      }
      const auto deadline = Clock::now() + std::chrono::seconds(now ? 0 : 10);
      // A server that reports no exit for that long after SIGKILL is stuck itself.
      const auto give_up = deadline + std::chrono::seconds(5);
      try {
        while (!workers_.empty()) {
          const auto left = deadline - Clock::now();
          if (now || left <= Clock::duration::zero()) {
            for (auto& w : workers_) w->kill(SIGKILL);  // now, or still there after the grace period
          }
          if (Clock::now() >= give_up) {
            server_->kill();  // its workers die with it (PR_SET_PDEATHSIG)
            break;
          }
          Clock::duration wait = std::max<Clock::duration>(left, std::chrono::seconds(1));
          wait = std::clamp<Clock::duration>(give_up - Clock::now(), Clock::duration::zero(), wait);
          if (server_->wait_readable(Deadline::after(wait))) handle_exits();
        }
      } catch (const Error&) {
        // The server is gone; its workers died with it (PR_SET_PDEATHSIG).
      }
      if (now) server_->kill();  // no need to wait for it (it may be stuck)
      server_.reset();  // the server kills and reaps anything left, then exits
    }
    workers_.clear();
    std::lock_guard lock(pids_mutex_);
    pids_.clear();
  }

  // ------------------------------------------------------------------ workers

  /// Starts the workers of the slots in respawn_, in order, unless an earlier failure
  /// set a later time to try again (next_spawn_ns_). A resource that ran out (fork's
  /// EAGAIN under RLIMIT_NPROC, no descriptor free) may pass: while a worker runs, the
  /// start is tried again with growing pauses (the loop's poll, so terminate() and
  /// the live workers' results are not kept waiting), for up to spawn_retry_limit.
  /// Returns false if the loop must end: terminate() came, or the pool broke.
  bool start_workers() {
    if (respawn_.empty() || monotonic_ns() < next_spawn_ns_) return true;
    while (!respawn_.empty()) {
      // The first workers start even if close() came first: each runs the initializer,
      // as Python's do, then leaves on its stop frame.
      if (first_start_pending_ ? stopping() : !needs_workers()) {
        respawn_.clear();
        break;
      }
      const std::size_t slot = respawn_.front();
      slots_[slot].idle();
      slots_[slot].reset_claims();
      task_lanes_[slot]->reset();
      result_lanes_[slot]->reset();
      SpawnAnswer answer = server_->spawn(slot, wake_fd_.get(), [this] {
        std::uint64_t count;
        (void)!::read(wake_fd_.get(), &count, sizeof count);
        return woken_to_terminate();
      });
      if (std::holds_alternative<std::monostate>(answer)) return false;
      if (const auto* refused = std::get_if<SpawnRefused>(&answer)) return retry_later(*refused);
      add_worker(slot, std::get<SpawnedWorker>(std::move(answer)));
      respawn_.erase(respawn_.begin());
      refused_since_ns_ = 0;
      refused_backoff_ns_ = 0;
    }
    next_spawn_ns_ = 0;
    first_start_pending_ = false;
    return true;
  }

  /// A start was refused (see start_workers): try again later, or break the pool if
  /// the cause is not one that passes, no worker is left to go on with, or starting
  /// one has failed for spawn_retry_limit. Returns false if it broke the pool.
  bool retry_later(const SpawnRefused& refused) {
    const std::int64_t now = monotonic_ns();
    if (refused_since_ns_ == 0) refused_since_ns_ = now;
    const bool passes =
        refused.error == EAGAIN || refused.error == ENOMEM || refused.error == EMFILE || refused.error == ENFILE;
    const bool too_long = now - refused_since_ns_ >= std::chrono::nanoseconds(spawn_retry_limit).count();
    if (!passes || workers_.empty() || too_long) {
      const std::string why =
          workers_.empty() ? "no worker process could be started, and none is running"
          : too_long ? "no worker process could be started for " + std::to_string(spawn_retry_limit.count()) + " s"
                     : "a worker process could not be started";
      respawn_.clear();
      break_pool(std::make_exception_ptr(
          limit_error("mproc: the pool is broken: " + why + "; " + refused.call, refused.error)));
      return false;
    }
    refused_backoff_ns_ = std::min(std::max(2 * refused_backoff_ns_, first_backoff_ns), max_backoff_ns);
    next_spawn_ns_ = std::max(next_spawn_ns_, now + refused_backoff_ns_);
    return true;
  }

  /// Takes over a worker the server started for slot.
  void add_worker(std::size_t slot, SpawnedWorker spawned) {
    auto w = std::make_shared<Worker>();
    w->slot = slot;
    w->pid = spawned.pid;
    w->pidfd = std::move(spawned.pidfd);
    w->task_w = std::move(spawned.task_w);
    w->result_r = std::move(spawned.result_r);
    set_nonblocking(w->task_w.get(), true);
    set_nonblocking(w->result_r.get(), true);
    {
      std::lock_guard lock(pids_mutex_);
      pids_.push_back(w->pid);
    }
    workers_.push_back(std::move(w));
  }

  /// The first workers were started (or will not be): worker_pids() may answer.
  void first_workers_started() noexcept {
    {
      std::lock_guard lock(pids_mutex_);
      starting_ = false;
    }
    pids_cv_.notify_all();
  }

  /// Replacing a worker waits for the server's answer, and the exits it reports
  /// meanwhile are queued: take them again until none is left.
  void handle_exits() {
    for (auto exits = server_->take_exits(); !exits.empty(); exits = server_->take_exits()) {
      for (const auto& [pid, status] : exits) {
        for (auto& w : workers_) {
          if (w->pid != pid) continue;
          on_exit(*w, status);  // removes w from workers_
          break;
        }
      }
    }
  }

  void on_exit(Worker& w, const ExitStatus& status) {
    if (stopping_hard_) {  // terminate() or a broken pool: its tasks were already failed
      forget(w);
      return;
    }
    if (!w.result_eof) read_results(w);  // its last complete outcomes
    const std::uint64_t word = slots_[w.slot].read().first;
    std::optional<RunningItem> running;
    if (word != 0 && !w.held.empty()) {
      // Only the low 32 bits of the chunk id are posted; a worker's chunks are close.
      for (const Chunk& c : w.held) {
        if (word_is_chunk(word, c.id)) running = RunningItem{c.id, word_item(word), {}};
      }
    }
    std::string who = "worker process " + std::to_string(w.pid) + " " + status.describe();
    if (w.timed_out == 0u) {
      who += " (by the pool: it held tasks and had started none of them within task_timeout, " +
             seconds_text(config_.task_timeout) + ")";
    }
    if (running) {
      const bool timed_out = w.timed_out == word;
      running->error = [&, who, timed_out](std::size_t index, std::uint32_t attempts) -> std::exception_ptr {
        if (timed_out) {
          return std::make_exception_ptr(TimeoutError(
              "mproc: task " + std::to_string(index) + " ran past task_timeout (" + seconds_text(config_.task_timeout) +
              "); its worker process " + std::to_string(w.pid) + " was killed"));
        }
        return death_error(index, attempts, who, status.signal, status.exit_code);
      };
    }
    // A worker that was told to leave (or said it would) and did so cleanly died of
    // nothing: what it still held is simply run elsewhere.
    std::optional<Death> death;
    if (!(w.retiring && status.clean())) death = Death{who, status.signal, status.exit_code};
    lost(w.held, running, death);
    const bool was_ready = w.ready;
    const std::size_t slot = w.slot;
    forget(w);
    if (!was_ready && !died_starting(status)) return;  // the pool is broken
    // Replaced on the engine's next pass, not here: starting one waits on the fork
    // server (up to its spawn deadline), and the outcomes read in this pass are
    // delivered first.
    if (needs_workers()) respawn_.push_back(slot);
  }

  /// A worker died before it was ready. A crash (SIGSEGV, SIGABRT, ...) or an exit
  /// happened in the initializer: 3 in a row mean it always does, and the pool breaks
  /// rather than fork forever (Python's Pool would). Any other signal came from
  /// outside (SIGKILL, SIGTERM: an operator, the OOM killer): the worker is replaced,
  /// after a pause that grows while such deaths come in a row, and only
  /// max_killed_starts of them in a row break the pool (an initializer that always
  /// draws the OOM killer, say). Returns false if it broke the pool.
  bool died_starting(const ExitStatus& status) {
    const int sig = status.signal.value_or(0);
    const bool crashed = sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGABRT ||
                         sig == SIGSYS || sig == SIGTRAP;
    if (crashed || status.exit_code) {
      if (++failed_starts_ < max_failed_starts) return true;
      break_pool(std::make_exception_ptr(Error("mproc: " + std::to_string(failed_starts_) +
                                               " worker processes in a row died before they were ready, in "
                                               "the pool's initializer (the last " +
                                               status.describe() + "); the pool is broken")));
      return false;
    }
    if (++killed_starts_ >= max_killed_starts) {
      break_pool(std::make_exception_ptr(Error("mproc: " + std::to_string(killed_starts_) +
                                               " worker processes in a row were killed before they were "
                                               "ready (the last " +
                                               status.describe() +
                                               "), by someone else or for their memory (the OOM killer, an "
                                               "initializer that needs more than there is?); the pool is broken")));
      return false;
    }
    if (killed_starts_ > 1) {
      const std::int64_t pause = std::min(first_backoff_ns << (killed_starts_ - 2), max_backoff_ns);
      next_spawn_ns_ = std::max(next_spawn_ns_, monotonic_ns() + pause);
    }
    return true;
  }

  /// Drops a worker that has exited.
  void forget(Worker& w) {
    w.gone = true;  // for a borrower that holds it (submit_awaited)
    {
      std::lock_guard lock(pids_mutex_);
      std::erase(pids_, w.pid);
    }
    std::erase_if(workers_, [&](const auto& p) { return p.get() == &w; });
  }

  /// A worker that can take work gets what the scheduling policy allows.
  bool has_room(const Worker& w) const {
    if (!w.ready || w.retiring || !w.task_w || w.result_eof) return false;
    return wants_more_locked(w.held, w.last_answer_ns);
  }

  // ------------------------------------------------------------------ I/O

  void read_results(Worker& w) {
    // Bounded per wake-up so one busy worker cannot starve the others.
    for (int round = 0; round < 64 && !w.result_eof; ++round) {
      const auto space = w.in.prepare();
      const ssize_t n = read_some(w.result_r.get(), space.data(), space.size());
      if (n < 0) return;  // drained for now
      if (n == 0) {
        w.result_eof = true;  // it exited or is exiting: the fork server will say so
        return;
      }
      w.in.commit(static_cast<std::size_t>(n));
      if (slots_.timed()) w.progress_ns = monotonic_ns();  // a big outcome on its way is progress
      try {
        while (auto frame = w.in.next()) handle_frame(w, *frame);
      } catch (const ProtocolError&) {
        w.result_eof = true;  // a worker that talks nonsense is replaced
        w.kill(SIGKILL);
        return;
      }
      w.in.release();
      // A worker that holds nothing sends nothing more until it gets work (its exit
      // comes from the fork server): no read just to hear EAGAIN.
      if (w.ready && w.held.empty() && w.in.unread() == 0) return;
    }
  }

  void handle_frame(Worker& w, const FrameView& f) {
    switch (f.header.kind) {
      case FrameKind::ready:
        w.ready = true;
        failed_starts_ = 0;
        killed_starts_ = 0;
        return;
      case FrameKind::init_failed:
        break_pool(initializer_error(f.payload));
        return;
      case FrameKind::started:  // asked for by take_over_locked, which the next pass runs again
        return;
      case FrameKind::result:
        if ((f.header.flags & frame_flag_in_lane) != 0) {
          Lane& lane = *result_lanes_[w.slot];  // view() refuses a size past the lane
          handle_result(w, FrameView{f.header, lane.view(static_cast<std::size_t>(f.header.size))});
          lane.release(static_cast<std::size_t>(f.header.size));
          return;
        }
        return handle_result(w, f);
      default:
        throw ProtocolError("mproc: unexpected frame from a worker");
    }
  }

  void handle_result(Worker& w, const FrameView& f) {
    if ((f.header.flags & frame_flag_retiring) != 0) w.retiring = true;  // over its memory limit: it leaves
    complete_front(w.held, w.last_answer_ns, f, "a worker");
  }

  /// Queues the frame that tells a worker to leave once it ran what it got before.
  void queue_stop(Worker& w) {
    if (w.stop_queued) return;
    w.out.push_back({make_frame_header(FrameKind::stop, 0, 0), {}, nullptr});
    w.stop_queued = true;
  }

  void flush_writes(Worker& w) {
    // Big payloads not yet started go through the worker's lane while it has room, in
    // the frames' order (the worker takes them from the lane in that order): after
    // one that does not fit, none.
    for (std::size_t i = w.out_written == 0 ? 0 : 1; i < w.out.size(); ++i) {
      Outgoing& o = w.out[i];
      if (o.payload.size() < Lane::min_payload || (o.header.flags & frame_flag_in_lane) != 0) continue;
      if (!task_lanes_[w.slot]->try_put(o.payload)) break;
      o.header.flags |= frame_flag_in_lane;
      o.payload = {};
    }
    while (!w.out.empty() && w.task_w) {
      iovec iov[64];
      int n = 0;
      std::size_t skip = w.out_written;
      for (auto it = w.out.begin(); it != w.out.end() && n + 2 <= 64; ++it) {
        std::span<const std::byte> parts[2] = {{reinterpret_cast<const std::byte*>(&it->header), frame_header_size},
                                               it->payload};
        for (auto part : parts) {
          if (skip >= part.size()) {
            skip -= part.size();
            continue;
          }
          iov[n++] = {const_cast<std::byte*>(part.data() + skip), part.size() - skip};
          skip = 0;
        }
      }
      const ssize_t written = ::writev(w.task_w.get(), iov, n);
      if (written < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        if (errno == EPIPE) {  // it died: the fork server will tell
          w.task_w.reset();
          return;
        }
        throw OSError("writev", errno);
      }
      w.out_written += static_cast<std::size_t>(written);
      // Beyond the pipe's buffer a write succeeds only as the worker reads: a big task
      // on its way in is progress (and a stopped worker takes at most a buffer-full).
      if (slots_.timed()) w.progress_ns = monotonic_ns();
      while (!w.out.empty() && w.out_written >= frame_header_size + w.out.front().payload.size()) {
        w.out_written -= frame_header_size + w.out.front().payload.size();
        w.out.pop_front();
      }
    }
  }

  // ------------------------------------------------------------------ timeouts

  /// How long the loop may sleep: until the next task timeout is due, the next try at
  /// starting a worker, or the next look for chunks an idle worker may take over
  /// (forever: no limit).
  Deadline next_wait() const {
    std::optional<std::int64_t> earliest;
    if (!respawn_.empty() && next_spawn_ns_ != 0) earliest = next_spawn_ns_;
    if (take_over_due_ns_ != 0) earliest = earliest ? std::min(*earliest, take_over_due_ns_) : take_over_due_ns_;
    if (slots_.timed()) {
      for (const auto& w : workers_) {
        if (w->held.empty() || w->timed_out) continue;
        const std::int64_t due = timeout_due(*w, slots_[w->slot].read());
        earliest = earliest ? std::min(*earliest, due) : due;
      }
    }
    return earliest ? Deadline::at_ns(*earliest) : Deadline::forever();
  }

  /// When a worker that holds work is past task_timeout: that long after the item it
  /// runs started or, running none, after the last sign of life (it went idle, sent or
  /// took bytes, or got work while it held none). A stopped or stuck worker that never
  /// starts what it was handed is timed out as one stuck in an item. Each sign only
  /// moves the due time later, so sleeping until it is safe.
  std::int64_t timeout_due(const Worker& w, std::pair<std::uint64_t, std::int64_t> post) const {
    const auto [running, since] = post;
    const std::int64_t from = running != 0 ? since : std::max({since, w.progress_ns, w.last_answer_ns});
    const std::int64_t limit = config_.task_timeout.count();  // may be nanoseconds::max(): no overflow
    return from > INT64_MAX - limit ? INT64_MAX : from + limit;
  }

  void check_timeouts() {
    if (!slots_.timed()) return;
    const std::int64_t now = monotonic_ns();
    for (auto& w : workers_) {
      if (w->held.empty() || w->timed_out) continue;
      const auto post = slots_[w->slot].read();
      if (now >= timeout_due(*w, post)) {
        w->timed_out = post.first;  // 0: nothing it held had started
        w->kill(SIGKILL);
      }
    }
  }

  static std::string seconds_text(std::chrono::nanoseconds d) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g s", std::chrono::duration<double>(d).count());
    return buf;
  }

  LocalConfig config_;
  WorkerSlots slots_;
  std::vector<std::unique_ptr<Lane>> task_lanes_;  // per slot, parent -> worker
  std::vector<std::unique_ptr<Lane>> result_lanes_;  // per slot, worker -> parent
  Fd wake_fd_;
  /// Held by whoever does the workers' I/O (reads, writes, the Worker fields): the
  /// pool's thread, but while it sleeps in poll() a submit_awaited caller. Taken
  /// before mutex().
  std::mutex io_mutex_;
  std::unique_lock<std::mutex> io_lock_;  // the pool's thread's hold on io_mutex_
  mutable std::mutex pids_mutex_;
  mutable std::condition_variable pids_cv_;
  std::vector<pid_t> pids_;
  bool starting_ = true;  // the first workers are being started

  // The pool's thread only.
  std::optional<ForkServer> server_;
  std::vector<std::shared_ptr<Worker>> workers_;  // shared with a borrower (submit_awaited)
  std::vector<pollfd> fds_;
  static constexpr int max_failed_starts = 3;
  static constexpr int max_killed_starts = 10;
  /// How long starting a worker may fail (a resource ran out) before the pool breaks.
  static constexpr std::chrono::seconds spawn_retry_limit{10};
  static constexpr std::int64_t first_backoff_ns = 10'000'000;  // the first pause before trying again
  static constexpr std::int64_t max_backoff_ns = 1'000'000'000;
  int failed_starts_ = 0;  // workers in a row that died in the initializer
  int killed_starts_ = 0;  // workers in a row killed from outside before ready
  std::vector<std::size_t> respawn_;  // slots whose worker is to be started, in order
  bool first_start_pending_ = true;  // respawn_ holds the first workers
  std::int64_t next_spawn_ns_ = 0;  // no start before this (monotonic_ns; 0: none)
  std::int64_t refused_since_ns_ = 0;  // the first of the refused starts in a row (0: none)
  std::int64_t refused_backoff_ns_ = 0;  // the last pause after a refusal
  bool stopping_hard_ = false;  // killing the workers: their exits fail nothing
  /// A worker quiet for this long may give up the chunks it holds and has not started
  /// to an idle one (take_over_locked): as long as has_room gives one that answers
  /// tiny tasks in batches.
  static constexpr std::int64_t taking_over_after_ns = 1'000'000;
  std::int64_t take_over_due_ns_ = 0;  // when take_over_locked would look again (monotonic_ns; 0: no need)
};

}  // namespace mproc::detail
