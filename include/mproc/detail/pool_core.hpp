#pragma once
// The engine behind Pool<F>, independent of F: worker processes, their pipes, and the
// pool's own thread that hands out chunks, collects outcomes, replaces dead workers and
// enforces task timeouts. It never blocks on one worker: every pipe is non-blocking
// and the thread sleeps only in poll(), with a deadline when a task timeout is due.
//
// Who holds what: each worker runs its chunks in the order it got them, so the chunks
// it holds form a queue (held), and its slot on the shared WorkerSlots board says which
// item of the front chunk it is running. When a worker dies, that one item fails (or
// is retried) and everything else it held goes back to the front of the work queue.

#include <mproc/detail/child.hpp>
#include <mproc/detail/fd.hpp>
#include <mproc/detail/fork_server.hpp>
#include <mproc/detail/frame.hpp>
#include <mproc/detail/job.hpp>
#include <mproc/detail/lane.hpp>
#include <mproc/detail/worker_slots.hpp>
#include <mproc/errors.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/uio.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace mproc::detail {

/// What a worker process gets: its two pipe ends and its slot on the board.
struct WorkerEnv {
  int task_fd;     // frames from the parent (read end)
  int result_fd;   // frames to the parent (write end)
  WorkerSlot* slot;
  pid_t parent;    // the worker's parent (the fork server), to notice if it is already gone
  bool timed;      // post item start times (task_timeout is set)
  Lane* task_lane;    // big task payloads from the parent
  Lane* result_lane;  // big outcomes to the parent
  std::size_t max_memory;  // retire after a chunk that leaves more resident (0: no limit)
};

struct PoolConfig {
  std::size_t processes = 1;
  std::size_t maxtasksperchild = 0;
  std::chrono::nanoseconds task_timeout{0};
  std::size_t retries = 0;
  std::size_t max_memory_per_child = 0;
  std::function<int(const WorkerEnv&)> worker_main;  // runs in the child; returns its exit code
};

class PoolCore {
 public:
  explicit PoolCore(PoolConfig config)
      : config_(std::move(config)), slots_(config_.processes) {
    // Made before the fork server, so every worker shares them.
    for (std::size_t i = 0; i < config_.processes; ++i) {
      task_lanes_.push_back(std::make_unique<Lane>());
      result_lanes_.push_back(std::make_unique<Lane>());
    }
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) throw OSError("eventfd", errno);
    wake_fd_ = Fd(efd).make_private();
    // The pool's thread starts with every signal blocked: signals stay with the
    // user's threads, and a write to a dead worker's pipe gives EPIPE, not SIGPIPE.
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      thread_ = std::thread([this] { run(); });
    } catch (...) {
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      throw;
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;
  ~PoolCore() {
    if (thread_.joinable()) terminate();
  }

  std::mutex& mutex() noexcept { return mutex_; }
  std::size_t processes() const noexcept { return config_.processes; }

  /// Queues a job. Call with mutex() held. Throws PoolClosed after close() or
  /// terminate(), or the error that broke the pool.
  void submit_locked(std::shared_ptr<Job> job) {
    check_open_locked();
    live_.emplace(job.get(), job);
    pending_.push_back(std::move(job));
    wake_locked();
  }
  /// Throws if the pool takes no more work. Call with mutex() held.
  void check_open_locked() const {
    if (broken_) std::rethrow_exception(broken_);
    if (closed_) throw PoolClosed("mproc: the pool is closed (close() or terminate() was called)");
  }
  /// Tells the pool's thread that a job changed (more input, input ended,
  /// cancelled). Call with mutex() held.
  void job_changed_locked(const std::shared_ptr<Job>& job) {
    touched_.push_back(job);
    wake_locked();
  }
  void wake_locked() {
    if (sleeping_) {
      const std::uint64_t one = 1;
      (void)!::write(wake_fd_.get(), &one, sizeof one);
      sleeping_ = false;
    }
  }

  /// No more work will be submitted; workers exit once the queued work is done.
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    // Streams still reading their input end with what they submitted so far.
    for (auto& [ptr, job] : live_) {
      job->input_closed = true;
      touched_.push_back(job);
    }
    wake_locked();
  }
  bool closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
  }
  /// Waits for the queued work to finish and the workers to exit. Requires close()
  /// or terminate() first.
  void join() {
    {
      std::lock_guard lock(mutex_);
      if (!closed_) throw ValueError("mproc: Pool::join() needs close() or terminate() first");
    }
    if (std::this_thread::get_id() == thread_.get_id()) {
      throw ValueError("mproc: Pool::join() called from a pool callback would never end");
    }
    if (thread_.joinable()) thread_.join();
  }
  /// Kills the workers now; unfinished tasks fail with PoolClosed. Returns when every
  /// worker is reaped.
  void terminate() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      terminating_ = true;
      wake_locked();
    }
    if (std::this_thread::get_id() == thread_.get_id()) {
      throw ValueError("mproc: Pool::terminate() called from a pool callback");
    }
    if (thread_.joinable()) thread_.join();
  }

  /// The pids of the live workers (a snapshot).
  std::vector<pid_t> worker_pids() const {
    std::lock_guard lock(mutex_);
    return pids_;
  }

 private:
  struct InFlight {
    std::uint64_t id;
    std::shared_ptr<Job> job;
    std::size_t first;
    std::size_t count;
    std::uint32_t attempts;  // how many times a worker died running these items
  };
  struct Range {
    std::shared_ptr<Job> job;
    std::size_t first;
    std::size_t count;
    std::uint32_t attempts;
  };
  struct Outgoing {
    FrameHeader header;
    std::span<const std::byte> payload;
    std::shared_ptr<Job> keep_alive;  // owns the payload's bytes
  };
  struct Worker {
    std::size_t slot = 0;
    pid_t pid = -1;
    Fd pidfd;  // to signal it: never a recycled pid
    Fd task_w;
    Fd result_r;
    bool result_eof = false;
    FrameAssembler in;
    std::deque<InFlight> held;
    std::deque<Outgoing> out;
    std::size_t out_written = 0;  // bytes of out.front() already written
    std::size_t assigned = 0;     // items ever handed to this worker
    std::size_t held_items = 0;   // items in held
    std::int64_t last_answer_ns = 0;  // when it last returned an outcome
    bool ready = false;           // its initializer finished
    bool retiring = false;        // takes no more work (maxtasksperchild)
    std::optional<std::uint64_t> timed_out;  // the running word it was killed for

    void kill(int sig) const noexcept { (void)::syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0); }
  };
  using Clock = std::chrono::steady_clock;

  // ------------------------------------------------------------------ thread

  void run() {
    on_pool_thread = true;
    std::exception_ptr fatal;
    try {
      const bool timed = config_.task_timeout.count() > 0;
      server_.emplace([this, timed](std::size_t slot, int task_fd, int result_fd, pid_t parent) {
        return config_.worker_main(WorkerEnv{task_fd, result_fd, &slots_[slot], parent, timed,
                                             task_lanes_[slot].get(), result_lanes_[slot].get(),
                                             config_.max_memory_per_child});
      });
      for (std::size_t i = 0; i < config_.processes; ++i) spawn(i);
      loop();
    } catch (...) {
      fatal = std::current_exception();
    }
    if (fatal) {
      try {
        std::rethrow_exception(fatal);
      } catch (const std::exception& e) {
        break_pool(std::make_exception_ptr(Error(std::string("mproc: the pool failed: ") + e.what())));
      } catch (...) {
        break_pool(std::make_exception_ptr(Error("mproc: the pool failed")));
      }
    }
    stop_workers();
  }

  void loop() {
    std::vector<pollfd> fds;
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (terminating_) {
          abandon_all_locked_then(std::make_exception_ptr(PoolClosed("mproc: the pool was terminated")));
          return;
        }
        if (broken_) return;
        retire_finished_jobs_locked();
        dispatch_locked();
        if (closed_ && live_.empty()) return;
        sleeping_ = true;
      }
      run_deferred();
      for (auto& w : workers_) flush_writes(*w);

      fds.clear();
      fds.push_back({wake_fd_.get(), POLLIN, 0});
      fds.push_back({server_->fd(), POLLIN, 0});
      for (auto& w : workers_) {
        fds.push_back({w->result_eof ? -1 : w->result_r.get(), POLLIN, 0});
        fds.push_back({w->out.empty() || !w->task_w ? -1 : w->task_w.get(), POLLOUT, 0});
      }
      poll_fds(fds.data(), fds.size(), next_timeout());
      {
        std::lock_guard lock(mutex_);
        sleeping_ = false;
      }
      if (fds[0].revents != 0) {
        std::uint64_t count;
        (void)!::read(wake_fd_.get(), &count, sizeof count);
      }
      for (std::size_t i = 0; i < workers_.size(); ++i) {
        if (fds[2 + 2 * i].revents != 0) read_results(*workers_[i]);
      }
      if (fds[1].revents != 0) handle_exits();
      check_timeouts();
      run_deferred();
    }
  }

  /// Handles the workers the fork server reported dead.
  void handle_exits() {
    for (const auto& [pid, status] : server_->take_exits()) {
      for (auto& w : workers_) {
        if (w->pid != pid) continue;
        on_exit(*w, status);  // removes w from workers_
        break;
      }
    }
  }

  // ------------------------------------------------------------------ workers

  void spawn(std::size_t slot) {
    auto w = std::make_unique<Worker>();
    w->slot = slot;
    slots_[slot].idle();
    task_lanes_[slot]->reset();
    result_lanes_[slot]->reset();
    SpawnedWorker spawned = server_->spawn(slot);
    w->pid = spawned.pid;
    w->pidfd = std::move(spawned.pidfd);
    w->task_w = std::move(spawned.task_w);
    w->result_r = std::move(spawned.result_r);
    set_nonblocking(w->task_w.get(), true);
    set_nonblocking(w->result_r.get(), true);
    {
      std::lock_guard lock(mutex_);
      pids_.push_back(w->pid);
    }
    workers_.push_back(std::move(w));
  }

  void read_results(Worker& w) {
    // Bounded per wake-up so one busy worker cannot starve the others.
    for (int round = 0; round < 64 && !w.result_eof; ++round) {
      const auto space = w.in.prepare();
      const ssize_t n = read_some(w.result_r.get(), space.data(), space.size());
      if (n < 0) return;  // drained for now
      if (n == 0) {
        w.result_eof = true;  // it exited or is exiting: its pidfd will say so
        return;
      }
      w.in.commit(static_cast<std::size_t>(n));
      try {
        while (auto frame = w.in.next()) handle_frame(w, *frame);
      } catch (const ProtocolError&) {
        w.result_eof = true;  // a worker that talks nonsense is replaced
        w.kill(SIGKILL);
        return;
      }
      w.in.release();
    }
  }

  void handle_frame(Worker& w, const FrameView& f) {
    switch (f.header.kind) {
      case FrameKind::ready:
        w.ready = true;
        failed_starts_ = 0;
        return;
      case FrameKind::init_failed: {
        const auto info = decode<std::pair<std::string, std::string>>(f.payload);
        break_pool(std::make_exception_ptr(
            RemoteError(info.first, "in the pool's initializer (the pool is broken): " + info.second)));
        return;
      }
      case FrameKind::result:
        if ((f.header.flags & frame_flag_in_lane) != 0) {
          Lane& lane = *result_lanes_[w.slot];
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
    if (w.held.empty() || w.held.front().id != f.header.id) {
      throw ProtocolError("mproc: a worker answered for a chunk it does not hold");
    }
    const ChunkOutcome outcome = parse_chunk_outcome(f.payload);
    InFlight c = std::move(w.held.front());
    if (outcome.header.count > c.count) throw ProtocolError("mproc: a worker returned too many outcomes");
    w.held.pop_front();
    w.held_items -= c.count;
    w.last_answer_ns = monotonic_ns();
    if ((f.header.flags & frame_flag_retiring) != 0) w.retiring = true;  // over its memory limit
    bool cancelled;
    {
      std::lock_guard lock(mutex_);
      cancelled = c.job->cancelled;
      c.job->chunking.record(outcome.header.count, outcome.header.elapsed_ns);
      timing_.record(outcome.header.count, outcome.header.elapsed_ns);
    }
    if (!cancelled) {
      c.job->deliver(c.first, outcome);
      for (std::size_t i = outcome.header.count; i < c.count; ++i) {
        c.job->fail(c.first + i, std::make_exception_ptr(ProtocolError(
                                     "mproc: a worker could not decode the arguments of task " +
                                     std::to_string(c.first + i))));
      }
    }
    settle(c, c.count);
    if (w.retiring && w.held.empty()) w.task_w.reset();  // EOF: the worker exits
  }

  void on_exit(Worker& w, const ExitStatus& status) {
    if (stopping_hard_) {  // terminate() or a broken pool: its tasks were already failed
      forget(w);
      return;
    }
    if (!w.result_eof) read_results(w);  // its last complete outcomes
    const std::uint64_t running = slots_[w.slot].read().first;
    const bool was_ready = w.ready;
    std::vector<Range> again;
    for (InFlight& c : w.held) {
      if (word_is_chunk(running, c.id) && word_item(running) < c.count) {
        const std::size_t k = word_item(running);
        const std::size_t index = c.first + k;
        if (k > 0) again.push_back({c.job, c.first, k, c.attempts});
        if (w.timed_out == running) {
          c.job->fail(index, std::make_exception_ptr(TimeoutError(
                                 "mproc: task " + std::to_string(index) + " ran past task_timeout (" +
                                 seconds_text(config_.task_timeout) + "); its worker process " +
                                 std::to_string(w.pid) + " was killed")));
          settle_items(c.job, index, 1);
        } else if (c.attempts < config_.retries) {
          again.push_back({c.job, index, 1, c.attempts + 1});
        } else {
          c.job->fail(index, std::make_exception_ptr(WorkerLost(
                                 "mproc: worker process " + std::to_string(w.pid) + " " +
                                     status.describe() + " while running task " + std::to_string(index) +
                                     (config_.retries > 0 ? " (attempt " + std::to_string(c.attempts + 1) + ")" : ""),
                                 status.signal, status.exit_code)));
          settle_items(c.job, index, 1);
        }
        if (k + 1 < c.count) again.push_back({c.job, index + 1, c.count - k - 1, c.attempts});
      } else {
        again.push_back({c.job, c.first, c.count, c.attempts});
      }
      --c.job->in_flight;
    }
    {
      std::lock_guard lock(mutex_);
      for (InFlight& c : w.held) touched_.push_back(c.job);
      requeue_.insert(requeue_.begin(), again.begin(), again.end());
    }
    const std::size_t slot = w.slot;
    forget(w);
    // A worker killed from outside while starting is simply replaced; several in a
    // row dying before they are ready means starting itself fails (a crashing
    // initializer): stop there rather than fork forever, as Python's Pool does.
    if (!was_ready && ++failed_starts_ >= max_failed_starts && !broken_) {
      break_pool(std::make_exception_ptr(
          Error("mproc: " + std::to_string(failed_starts_) + " worker processes in a row died before they were "
                "ready (the last " + status.describe() + "; a crash in the initializer?); the pool is broken")));
      return;
    }
    bool needed;
    {
      std::lock_guard lock(mutex_);
      needed = !broken_ && !terminating_ && (!closed_ || !live_.empty());
    }
    if (needed) spawn(slot);
  }

  /// Drops a worker that has exited.
  void forget(Worker& w) {
    {
      std::lock_guard lock(mutex_);
      std::erase(pids_, w.pid);
    }
    std::erase_if(workers_, [&](const auto& p) { return p.get() == &w; });
  }

  // ------------------------------------------------------------------ work

  /// Hands out chunks while workers have room: one chunk to each worker per round,
  /// so work spreads evenly. Called with the mutex held.
  void dispatch_locked() {
    for (bool progress = true; progress;) {
      progress = false;
      for (auto& wp : workers_) {
        Worker& w = *wp;
        if (!has_room(w)) continue;
        auto chunk = cut_chunk_locked(w);
        if (!chunk) return;
        const auto bytes = chunk->job->input.bytes(chunk->first, chunk->count);
        w.out.push_back({make_frame_header(FrameKind::task, chunk->id, bytes.size()), bytes, chunk->job});
        w.assigned += chunk->count;
        w.held_items += chunk->count;
        ++chunk->job->in_flight;
        w.held.push_back(std::move(*chunk));
        if (config_.maxtasksperchild != 0 && w.assigned >= config_.maxtasksperchild) w.retiring = true;
        progress = true;
      }
    }
  }

  /// A worker gets another chunk while it holds fewer than two, or while what it
  /// holds is measured to be under a millisecond of work (tiny tasks travel in
  /// batches that way, while long ones are not hoarded by one worker).
  /// The measure is pool-wide (all jobs run the same F), so a stream of fresh
  /// one-item jobs such as apply_async calls is batched too. A worker that has not
  /// answered for a millisecond gets no more than two: it may be stuck on a long
  /// task, and what it holds waits behind that task while others could run it.
  bool has_room(const Worker& w) const {
    if (!w.ready || w.retiring || !w.task_w || w.result_eof) return false;
    if (w.held.size() < 2) return true;
    if (w.held.size() >= 256) return false;
    const auto per_item = timing_.item_seconds();
    return per_item && *per_item * static_cast<double>(w.held_items) < 0.001 &&
           monotonic_ns() - w.last_answer_ns < 1'000'000;
  }

  std::optional<InFlight> cut_chunk_locked(const Worker& w) {
    const std::size_t budget = config_.maxtasksperchild == 0 ? SIZE_MAX : config_.maxtasksperchild - w.assigned;
    while (!requeue_.empty()) {
      Range& r = requeue_.front();
      if (r.job->cancelled) {
        requeue_.pop_front();
        continue;
      }
      const std::size_t n = std::min({r.count, r.job->chunking.next(r.count, processes()), budget});
      InFlight c{next_chunk_id_++, r.job, r.first, n, r.attempts};
      r.first += n;
      r.count -= n;
      if (r.count == 0) requeue_.pop_front();
      return c;
    }
    // Jobs leave the front of pending_ once everything they will ever have is cut.
    while (!pending_.empty() && !pending_.front()->has_undispatched() &&
           (pending_.front()->input_closed || pending_.front()->cancelled)) {
      pending_.pop_front();
    }
    for (const auto& job : pending_) {
      if (!job->has_undispatched()) continue;
      // Without a measurement chunks are one-item probes: one per worker is enough.
      if (!job->chunking.item_seconds() && job->chunking.fixed() == 0 && job->in_flight >= processes()) continue;
      std::optional<std::size_t> remaining;
      if (job->expected_total) remaining = *job->expected_total - job->dispatched;
      const std::size_t n = std::min({job->chunking.next(remaining, processes()),
                                      job->input.contiguous_from(job->dispatched), budget});
      InFlight c{next_chunk_id_++, job, job->dispatched, n, 0};
      job->dispatched += n;
      return c;
    }
    return std::nullopt;
  }

  void settle(const InFlight& c, std::size_t count) {
    --c.job->in_flight;
    settle_items(c.job, c.first, count);
  }
  void settle_items(const std::shared_ptr<Job>& job, std::size_t first, std::size_t count) {
    job->settled += count;
    std::lock_guard lock(mutex_);
    job->input.settle(first, count);
    touched_.push_back(job);
  }

  /// Retires the jobs touched since the last pass that are now finished (or
  /// cancelled and drained); their finish() runs later without the mutex, since it
  /// runs user callbacks.
  void retire_finished_jobs_locked() {
    for (const auto& job : touched_) {
      const bool done = job->input_closed && job->settled == job->input.size() && job->in_flight == 0;
      const bool dropped = job->cancelled && job->in_flight == 0;
      if (!(done || dropped) || live_.erase(job.get()) == 0) continue;
      if (!job->cancelled) deferred_.push_back([job] { job->finish(); });
    }
    touched_.clear();
  }

  void run_deferred() {
    std::vector<std::function<void()>> work;
    {
      std::lock_guard lock(mutex_);
      work.swap(deferred_);
    }
    for (auto& f : work) f();
  }

  void abandon_all_locked_then(std::exception_ptr error) {
    for (auto& [ptr, job] : live_) deferred_.push_back([job = job, error] { job->abandon(error); });
    live_.clear();
    pending_.clear();
    touched_.clear();
    requeue_.clear();
  }

  /// The pool can't go on (an initializer failed, or the machinery did): every task
  /// still pending fails with `error`, and so does every later call.
  void break_pool(std::exception_ptr error) {
    {
      std::lock_guard lock(mutex_);
      if (!broken_) broken_ = error;
      closed_ = true;
      abandon_all_locked_then(broken_);
    }
    run_deferred();
    stopping_hard_ = true;
    for (auto& w : workers_) w->kill(SIGKILL);
  }

  // ------------------------------------------------------------------ I/O

  void flush_writes(Worker& w) {
    // A big payload not yet started goes through the worker's lane if it is free.
    for (std::size_t i = w.out_written == 0 ? 0 : 1; i < w.out.size(); ++i) {
      Outgoing& o = w.out[i];
      if (o.payload.size() < Lane::min_payload || (o.header.flags & frame_flag_in_lane) != 0) continue;
      if (task_lanes_[w.slot]->try_put(o.payload)) {
        o.header.flags |= frame_flag_in_lane;
        o.payload = {};
      }
      break;
    }
    while (!w.out.empty() && w.task_w) {
      iovec iov[64];
      int n = 0;
      std::size_t skip = w.out_written;
      for (auto it = w.out.begin(); it != w.out.end() && n + 2 <= 64; ++it) {
        std::span<const std::byte> parts[2] = {
            {reinterpret_cast<const std::byte*>(&it->header), frame_header_size}, it->payload};
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
        if (errno == EPIPE) {  // it died: its pidfd will tell
          w.task_w.reset();
          return;
        }
        throw OSError("writev", errno);
      }
      w.out_written += static_cast<std::size_t>(written);
      while (!w.out.empty() && w.out_written >= frame_header_size + w.out.front().payload.size()) {
        w.out_written -= frame_header_size + w.out.front().payload.size();
        w.out.pop_front();
      }
    }
  }

  // ------------------------------------------------------------------ timeouts

  std::chrono::nanoseconds next_timeout() const {
    if (config_.task_timeout.count() <= 0) return std::chrono::nanoseconds(-1);
    std::optional<std::int64_t> earliest;
    bool busy = false;
    for (const auto& w : workers_) {
      if (w->held.empty() || w->timed_out) continue;
      busy = true;
      const auto [running, started] = slots_[w->slot].read();
      if (running == 0) continue;
      const std::int64_t due = started + config_.task_timeout.count();
      earliest = earliest ? std::min(*earliest, due) : due;
    }
    if (!busy) return std::chrono::nanoseconds(-1);
    // A busy worker may start its next item while we sleep: look again within the timeout.
    const std::int64_t now = monotonic_ns();
    const std::int64_t wait = earliest ? std::max<std::int64_t>(*earliest - now, 0) : config_.task_timeout.count();
    return std::chrono::nanoseconds(wait);
  }

  void check_timeouts() {
    if (config_.task_timeout.count() <= 0) return;
    const std::int64_t now = monotonic_ns();
    for (auto& w : workers_) {
      if (w->held.empty() || w->timed_out) continue;
      const auto [running, started] = slots_[w->slot].read();
      if (running != 0 && now - started >= config_.task_timeout.count()) {
        w->timed_out = running;
        w->kill(SIGKILL);
      }
    }
  }

  static std::string seconds_text(std::chrono::nanoseconds d) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g s", std::chrono::duration<double>(d).count());
    return buf;
  }

  // ------------------------------------------------------------------ shutdown

  void stop_workers() {
    run_deferred();  // a terminated pool's tasks fail with PoolClosed before any worker is killed
    if (server_) {
      for (auto& w : workers_) w->task_w.reset();  // EOF: idle workers exit at once
      const bool kill_now = [&] {
        std::lock_guard lock(mutex_);
        return terminating_ || broken_ != nullptr;
      }();
      stopping_hard_ = kill_now;
      const auto deadline = Clock::now() + std::chrono::seconds(kill_now ? 0 : 10);
      try {
        while (!workers_.empty()) {
          const auto left = deadline - Clock::now();
          if (kill_now || left <= Clock::duration::zero()) {
            for (auto& w : workers_) w->kill(SIGKILL);  // now, or still there after the grace period
          }
          if (server_->wait_readable(std::max(left, Clock::duration(std::chrono::seconds(1))))) handle_exits();
        }
      } catch (const Error&) {
        // The server is gone; its workers died with it (PR_SET_PDEATHSIG).
      }
      server_.reset();  // the server kills and reaps anything left, then exits
    }
    workers_.clear();
    {
      std::lock_guard lock(mutex_);
      pids_.clear();
    }
    run_deferred();
  }

  PoolConfig config_;
  WorkerSlots slots_;
  std::vector<std::unique_ptr<Lane>> task_lanes_;    // per slot, parent -> worker
  std::vector<std::unique_ptr<Lane>> result_lanes_;  // per slot, worker -> parent
  Fd wake_fd_;
  std::optional<ForkServer> server_;  // made by, and used from, the pool's thread
  std::thread thread_;

  // Guarded by mutex_.
  mutable std::mutex mutex_;
  std::unordered_map<Job*, std::shared_ptr<Job>> live_;  // submitted and not finished
  std::deque<std::shared_ptr<Job>> pending_;              // may still have items to cut, in order
  std::vector<std::shared_ptr<Job>> touched_;             // to check for completion
  std::deque<Range> requeue_;
  std::vector<std::function<void()>> deferred_;
  std::vector<pid_t> pids_;
  bool closed_ = false;
  bool terminating_ = false;
  bool sleeping_ = false;
  std::exception_ptr broken_;
  RecentItemTime timing_;  // item durations over all jobs

  // The pool's thread only.
  std::vector<std::unique_ptr<Worker>> workers_;
  std::uint64_t next_chunk_id_ = 1;
  static constexpr int max_failed_starts = 3;
  int failed_starts_ = 0;  // workers in a row that died before ready
  bool stopping_hard_ = false;  // killing the workers (terminate, broken): their exits fail nothing
};

}  // namespace mproc::detail
