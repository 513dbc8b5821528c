#pragma once
// DispatchEngine: the Engine of a pool whose chunks go to workers, whatever carries
// them (pipes to forked workers, or MPI ranks). It owns the queue of jobs and the
// pool's own thread, cuts chunks, settles outcomes, requeues what a lost worker held,
// retires finished jobs and runs their callbacks. A transport derives from it and
// supplies four steps: start its workers, hand chunks to those with room, wait for
// and handle events, and stop its workers.

#include <mproc/async_result.hpp>
#include <mproc/detail/engine/engine.hpp>
#include <mproc/detail/engine/job.hpp>
#include <mproc/detail/engine/outcome.hpp>
#include <mproc/detail/engine/scheduling.hpp>
#include <mproc/detail/os/deadline.hpp>  // monotonic_ns
#include <mproc/detail/os/fd.hpp>  // limit_error
#include <mproc/detail/os/fork_gate.hpp>
#include <mproc/detail/wire/frame.hpp>     // FrameView
#include <mproc/errors.hpp>

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

namespace mproc::detail {

/// Items handed to one worker as one message.
struct Chunk {
  std::uint64_t id;
  std::shared_ptr<Job> job;
  std::size_t first;
  std::size_t count;
  std::uint32_t attempts;  // how many times a worker died running these items
  std::uint32_t orphaned;  // how many times they were requeued after a death that blamed no item
  double predicted_seconds = -1;  // what its items were measured to cost when it was cut (< 0: unknown)
  std::uint32_t sequence = 0;  // the transport's count of chunks sent to the worker, this one included
};

/// The chunks a worker holds, in the order it got them (it runs and answers them in
/// that order), and what they were predicted to cost: the deque's interface, plus
/// predicted_seconds() in constant time.
class HeldChunks {
 public:
  using const_iterator = std::deque<Chunk>::const_iterator;
  using const_reverse_iterator = std::deque<Chunk>::const_reverse_iterator;

  void push_back(Chunk c) {
    if (c.predicted_seconds >= 0) predicted_ += c.predicted_seconds;
    else ++unknown_;
    chunks_.push_back(std::move(c));
  }
  void pop_front() {
    forget(chunks_.front());
    chunks_.pop_front();
    if (chunks_.empty()) predicted_ = 0;  // no rounding error carried on
  }
  /// Removes the last chunk (one taken back from the worker) and returns it.
  Chunk take_back() {
    Chunk c = std::move(chunks_.back());
    chunks_.pop_back();
    forget(c);
    if (chunks_.empty()) predicted_ = 0;
    return c;
  }
  void clear() noexcept {
    chunks_.clear();
    predicted_ = 0;
    unknown_ = 0;
  }
  Chunk& front() { return chunks_.front(); }  // a chunk moved out of it still pops right
  const Chunk& front() const { return chunks_.front(); }
  const Chunk& back() const { return chunks_.back(); }
  bool empty() const noexcept { return chunks_.empty(); }
  std::size_t size() const noexcept { return chunks_.size(); }
  const_iterator begin() const noexcept { return chunks_.begin(); }
  const_iterator end() const noexcept { return chunks_.end(); }
  const_reverse_iterator rbegin() const noexcept { return chunks_.rbegin(); }
  const_reverse_iterator rend() const noexcept { return chunks_.rend(); }

  /// The seconds of work held, if every chunk held had a prediction.
  std::optional<double> predicted_seconds() const noexcept {
    if (unknown_ != 0) return std::nullopt;
    return predicted_;
  }

 private:
  /// Takes chunk c's prediction out of the totals.
  void forget(const Chunk& c) noexcept {
    if (c.predicted_seconds >= 0) predicted_ -= c.predicted_seconds;
    else --unknown_;
  }

  std::deque<Chunk> chunks_;
  double predicted_ = 0;
  std::size_t unknown_ = 0;
};

class DispatchEngine : public Engine {
 public:
  DispatchEngine(std::size_t workers, std::size_t retries) : workers_(workers), retries_(retries) {}

  // ---------------------------------------------------------------- user side

  std::size_t workers() const noexcept override { return workers_; }

  void submit(std::shared_ptr<Job> job, bool awaited) override {
    if (job->input.size() != 0 && awaited) {
      submit_awaited(std::move(job));
      return;
    }
    {
      std::lock_guard lock(mutex_);
      if (job->input.size() != 0) {
        submit_locked(std::move(job));
        return;
      }
      check_open_locked();
    }
    job->finish();
  }

  void open_stream(std::shared_ptr<Job> job) override {
    std::lock_guard lock(mutex_);
    submit_locked(std::move(job));
  }
  std::size_t stream_room(const Job& job, const StreamFeed& feed) override {
    std::lock_guard lock(mutex_);
    return job.chunking.stream_room(workers_, feed);
  }
  bool append_input(const std::shared_ptr<Job>& job, Bytes bytes, std::vector<std::size_t> offsets, std::size_t n,
                    bool last) override {
    std::lock_guard lock(mutex_);
    // close() ended the stream's input: what was submitted runs, the rest never will.
    if (job->input_closed) return false;
    job->input.append(std::move(bytes), std::move(offsets), n);
    if (last) job->input_closed = true;
    job_changed_locked(job);
    return true;
  }
  void cancel(const std::shared_ptr<Job>& job) noexcept override {
    std::lock_guard lock(mutex_);
    job->cancelled = true;
    job->input_closed = true;
    job_changed_locked(job);
  }

  /// No more work will be submitted; workers exit once the queued work is done.
  void close() override {
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
  void join() override {
    {
      std::lock_guard lock(mutex_);
      if (!closed_) throw_join_while_open();
    }
    join_thread("join()");
  }
  /// Stops the workers now; unfinished tasks fail with PoolClosed. Returns when the
  /// workers are gone.
  void terminate() override {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
      terminating_ = true;
      wake_locked();
    }
    join_thread("terminate()");
  }

 protected:
  std::mutex& mutex() noexcept { return mutex_; }

  /// Queues a job. Mutex held. Throws PoolClosed after close() or terminate(), or
  /// the error that broke the pool.
  void submit_locked(std::shared_ptr<Job> job) {
    check_open_locked();
    queue_locked(std::move(job));
    wake_locked();
  }
  /// Queues a job whose caller waits for it at once (Pool::apply). A transport may
  /// hand it out and wait for its outcome on the caller's thread while the pool's
  /// thread sleeps (one wake-up less each way); this one queues it for the pool's
  /// thread. Returns once the job is finished or left to the pool's thread: either
  /// way the caller then waits on its result as usual. Mutex not held.
  virtual void submit_awaited(std::shared_ptr<Job> job) {
    std::lock_guard lock(mutex_);
    submit_locked(std::move(job));
  }
  /// Throws if the pool takes no more work. Mutex held.
  void check_open_locked() const {
    if (broken_) std::rethrow_exception(broken_);
    if (closed_) throw_closed();
  }
  /// Tells the pool's thread that a job changed (more input, input ended,
  /// cancelled). Mutex held.
  void job_changed_locked(const std::shared_ptr<Job>& job) {
    touched_.push_back(job);
    wake_locked();
  }

  // ---------------------------------------------------------------- transport steps

  /// On the pool's thread, first: start the workers.
  virtual void start() = 0;
  /// Mutex held: give chunks (cut_chunk_locked) to the workers that have room.
  virtual void hand_out_locked() = 0;
  /// Mutex not held: block until something happens (wake() counts), handle it.
  virtual void wait_and_handle() = 0;
  /// Last: stop the workers; `now` means kill them (terminate, broken pool) rather
  /// than let them finish and leave.
  virtual void stop(bool now) = 0;
  /// Any thread, mutex held: make a blocked wait_and_handle() return.
  virtual void wake() = 0;

  /// Starts the pool's thread. Call at the end of the most derived constructor.
  void launch() {
    // The pool's thread starts with every signal blocked: signals stay with the
    // user's threads, and a write to a dead worker's pipe gives EPIPE, not SIGPIPE.
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      thread_ = std::thread([this] { run(); });
    } catch (const std::system_error& e) {  // EAGAIN: RLIMIT_NPROC counts threads too
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      throw limit_error("mproc: the pool could not start its thread: pthread_create", e.code().value());
    } catch (...) {
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      throw;
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    // The caller waits while the pool thread forks from the program (the fork
    // server): a fork copies whatever lock another thread holds at that instant, and
    // the caller, busy allocating right after, is the likeliest one. glibc's malloc
    // guards itself across fork; other allocators (a sanitizer's) do not.
    {
      const ForkGate::Asleep asleep;  // a pool made in a callback: its thread forks meanwhile
      forked_.wait(false);
    }
  }
  /// The pool thread, once it has forked what it forks from the program itself:
  /// launch() may return.
  void forked_from_program() noexcept {
    forked_ = true;
    forked_.notify_all();
  }
  /// Call first in the most derived destructor (the thread uses the derived parts).
  void shut_down_thread() noexcept {
    if (!thread_.joinable()) return;
    try {
      terminate();
    } catch (...) {
    }
  }

  // ---------------------------------------------------------------- for transports

  /// The next chunk for a worker that may take at most `budget` items: requeued
  /// items first, then jobs in the order they came. Mutex held.
  std::optional<Chunk> cut_chunk_locked(std::size_t budget = SIZE_MAX) {
    while (!requeue_.empty()) {
      Chunk& r = requeue_.front();
      if (r.job->cancelled) {
        requeue_.pop_front();
        continue;
      }
      const std::size_t n = std::min({r.count, r.job->chunking.next(r.count, workers_), budget});
      Chunk c{next_chunk_id_++, r.job, r.first, n, r.attempts, r.orphaned, predict_locked(*r.job, n)};
      r.first += n;
      r.count -= n;
      if (r.count == 0) requeue_.pop_front();
      ++c.job->in_flight;
      return c;
    }
    // Jobs leave the front of pending_ once everything they will ever have is cut.
    while (!pending_.empty() && !pending_.front()->has_undispatched() &&
           (pending_.front()->input_closed || pending_.front()->cancelled)) {
      pending_.pop_front();
    }
    for (const auto& job : pending_) {
      if (!job->has_undispatched()) continue;
      if (!job->chunking.may_cut(job->in_flight, workers_)) continue;
      std::optional<std::size_t> remaining;
      if (job->expected_total) remaining = *job->expected_total - job->dispatched;
      const std::size_t n =
          std::min({job->chunking.next(remaining, workers_), job->input.contiguous_from(job->dispatched), budget});
      Chunk c{next_chunk_id_++, job, job->dispatched, n, 0, 0, predict_locked(*job, n)};
      job->dispatched += n;
      ++job->in_flight;
      return c;
    }
    return std::nullopt;
  }

  /// A result frame f from a worker (who: "a worker", "a serving rank") holding
  /// held, whose last answer was at last_answer_ns: it must be the outcome of the
  /// chunk at the front (workers answer in order), which it completes. Pool's
  /// thread, mutex not held.
  void complete_front(HeldChunks& held, std::int64_t& last_answer_ns, const FrameView& f, const char* who) {
    if (held.empty() || held.front().id != f.header.id) {
      throw ProtocolError(std::string("mproc: ") + who + " answered for a chunk it does not hold");
    }
    const ChunkOutcome outcome = parse_chunk_outcome(f.payload);
    if (outcome.header.count > held.front().count) {
      throw ProtocolError(std::string("mproc: ") + who + " returned too many outcomes");
    }
    Chunk c = std::move(held.front());
    held.pop_front();
    last_answer_ns = monotonic_ns();
    complete(c, outcome);
  }

  /// A worker returned the outcome of chunk c (pool's thread, mutex not held). A
  /// worker over its memory limit stops a chunk early (the outcome says so): the
  /// items it never ran go back to the front of the queue. Any other item missing
  /// from an outcome had arguments the worker could not decode, and fails.
  void complete(const Chunk& c, const ChunkOutcome& outcome) {
    bool cancelled;
    {
      std::lock_guard lock(mutex_);
      cancelled = c.job->cancelled;
      c.job->chunking.record(outcome.header.count, outcome.header.elapsed_ns);
      if (is_single_item(*c.job)) {
        if (!single_item_series_answered_) single_item_timing_ = RecentItemTime{};  // the series' own, from here
        single_item_timing_.record(outcome.header.count, outcome.header.elapsed_ns);
        single_item_series_answered_ = true;
      }
    }
    const bool stopped_early = outcome.stopped_early() && outcome.header.count < c.count;
    const std::size_t done = stopped_early ? outcome.header.count : c.count;
    if (!cancelled) deliver_chunk(*c.job, c.first, done, outcome);
    if (stopped_early) {
      requeue({Chunk{0, c.job, c.first + done, c.count - done, c.attempts, c.orphaned}});
    }
    --c.job->in_flight;
    settle(c.job, c.first, done);
  }

  /// Which item of which chunk a lost worker was running, and what that did to it.
  struct RunningItem {
    std::uint64_t chunk_id;
    std::size_t item;  // index within the chunk
    /// The item's error, given its global index and how many times it was tried;
    /// nullptr means "run it again" (a retry).
    std::function<std::exception_ptr(std::size_t index, std::uint32_t attempts)> error;
  };

  /// How a worker that was not expected to leave died: `what` says who and how, e.g.
  /// "worker process 12 was killed by signal 9 (SIGKILL)".
  struct Death {
    std::string what;
    std::optional<int> signal;
    std::optional<int> exit_code;
  };

  /// A worker is gone with the chunks it held (in the order it got them). The item
  /// it was running, if any, fails (or is retried); everything else it held, queued
  /// or done but not yet reported, goes back to the front of the queue.
  ///
  /// A death (`death`; nullopt for a worker leaving as told) while no item ran is
  /// charged to the chunk it was on, the first it held: it died after running it and
  /// before its outcome arrived (killed while copying the result out, say). Its items
  /// go back one by one, each charged, so that a later such death falls on the single
  /// item at fault; an item charged retries + 1 times fails with WorkerLost, as a
  /// worker that always dies there would otherwise make the pool run it forever.
  void lost(HeldChunks& held, const std::optional<RunningItem>& running, const std::optional<Death>& death) {
    const auto is_running = [&](const Chunk& c) {
      return running && running->chunk_id == c.id && running->item < c.count;
    };
    const bool blamed = std::any_of(held.begin(), held.end(), is_running);
    std::vector<Chunk> again;
    for (const Chunk& c : held) {
      if (is_running(c)) {
        const std::size_t k = running->item;
        const std::size_t index = c.first + k;
        if (k > 0) again.push_back({0, c.job, c.first, k, c.attempts, c.orphaned});
        if (auto error = running->error(index, c.attempts)) {
          c.job->fail(index, error);
          settle(c.job, index, 1);
        } else {
          again.push_back({0, c.job, index, 1, c.attempts + 1, c.orphaned});
        }
        if (k + 1 < c.count) again.push_back({0, c.job, index + 1, c.count - k - 1, c.attempts, c.orphaned});
      } else if (death && !blamed && &c == &held.front()) {
        if (c.orphaned > retries_) {
          c.job->fail(c.first, std::make_exception_ptr(WorkerLost(
                                   "mproc: " + death->what + " holding task " + std::to_string(c.first) +
                                       " with no task running (after running it, before its result came?), " +
                                       std::to_string(c.orphaned + 1) + " times in a row; the task fails",
                                   death->signal, death->exit_code)));
          settle(c.job, c.first, 1);
          if (c.count > 1) again.push_back({0, c.job, c.first + 1, c.count - 1, c.attempts, 0});
        } else {
          for (std::size_t i = 0; i < c.count; ++i) {
            again.push_back({0, c.job, c.first + i, 1, c.attempts, c.orphaned + 1});
          }
        }
      } else {
        again.push_back({0, c.job, c.first, c.count, c.attempts, c.orphaned});
      }
      --c.job->in_flight;
    }
    held.clear();
    requeue(std::move(again));  // every job held is touched: requeued here or settled above
  }
  /// Puts items back at the front of the queue, to be cut into chunks again.
  void requeue(std::vector<Chunk> items) {
    std::lock_guard lock(mutex_);
    for (const Chunk& c : items) touched_.push_back(c.job);
    requeue_.insert(requeue_.begin(), items.begin(), items.end());
  }
  /// A worker holds chunks it has not started and will now never start (the
  /// transport revoked them, for an idle worker): they go back to the front of the
  /// queue, in order, ahead of everything else, as if they had never been handed out.
  /// Mutex held.
  void take_back_locked(std::vector<Chunk> chunks) {
    for (const Chunk& c : chunks) {
      --c.job->in_flight;
      touched_.push_back(c.job);
    }
    requeue_.insert(requeue_.begin(), chunks.begin(), chunks.end());
  }
  /// The WorkerLost for an item whose worker died, or nothing (run it again) while
  /// it has retries left. `what` says who died and how, e.g. "worker process 12 was
  /// killed by signal 9 (SIGKILL)".
  std::exception_ptr death_error(std::size_t index, std::uint32_t attempts, const std::string& what,
                                 std::optional<int> signal, std::optional<int> exit_code) const {
    if (attempts < retries_) return nullptr;
    return std::make_exception_ptr(
        WorkerLost("mproc: " + what + " while running task " + std::to_string(index) +
                       (retries_ > 0 ? " (attempt " + std::to_string(attempts + 1) + ")" : ""),
                   signal, exit_code));
  }

  /// Queues a job without waking the pool's thread (submit_awaited). Mutex held.
  void queue_locked(std::shared_ptr<Job> job) {
    if (is_single_item(*job) && single_items_live_++ == 0) single_item_series_answered_ = false;  // a new series
    live_.emplace(job.get(), job);
    pending_.push_back(std::move(job));
  }
  /// For submit_awaited, on the caller's thread: if the job is finished, takes it off
  /// the live jobs (unless the pool's thread already retired or abandoned it) and
  /// returns true; the caller then runs its finish(). Mutex held.
  bool retire_awaited_locked(const std::shared_ptr<Job>& job) {
    if (!finished(*job) || live_.erase(job.get()) == 0) return false;
    left_locked(*job);
    std::erase(touched_, job);  // its settle() put it there: the pool's thread need not look
    if (closed_) wake_locked();  // join() may be waiting for the last job
    return true;
  }
  /// Whether items wait to be handed out (mutex held).
  bool has_queued_work_locked() const {
    return !requeue_.empty() ||
           std::any_of(pending_.begin(), pending_.end(), [](const auto& job) { return job->has_undispatched(); });
  }
  /// Wakes the pool's thread if it sleeps. Mutex held.
  void wake_locked() {
    if (sleeping_) {
      wake();
      sleeping_ = false;
    }
  }

  /// Whether a worker holding `held`, whose last outcome came at `last_answer_ns`
  /// (monotonic_ns), should get another chunk: the rule is scheduling.hpp's
  /// wants_more. Mutex held.
  bool wants_more_locked(const HeldChunks& held, std::int64_t last_answer_ns) const {
    HeldWork work{held.size(), false, held.predicted_seconds(), pass_ns_ - last_answer_ns};
    if (!held.empty()) {
      const Chunk& first = held.front();
      work.first_predicted = first.predicted_seconds >= 0 || first.job->chunking.item_seconds().has_value();
    }
    return wants_more(work);
  }
  static constexpr std::size_t max_held_chunks = detail::max_held_chunks;

  /// The pool can't go on (an initializer failed, the machinery did): every task
  /// still pending fails with `error`, and so does every later call.
  void break_pool(std::exception_ptr error) {
    {
      std::lock_guard lock(mutex_);
      if (!broken_) broken_ = error;
      closed_ = true;
      retire_finished_jobs_locked();  // results already in are delivered, not failed
      abandon_all_locked(broken_);
    }
    run_deferred();
  }
  bool broken() const {
    std::lock_guard lock(mutex_);
    return broken_ != nullptr;
  }
  /// Whether workers are still needed (to replace one that left).
  bool needs_workers() const {
    std::lock_guard lock(mutex_);
    return !broken_ && !terminating_ && (!closed_ || !live_.empty());
  }
  /// Whether the pool is being terminated or is broken: nothing more will run.
  bool stopping() const {
    std::lock_guard lock(mutex_);
    return broken_ || terminating_;
  }
  /// For a transport that, inside wait_and_handle(), waits on something slow (a
  /// worker being forked) and was woken: whether terminate() was called. If not,
  /// the next wake-up reaches it too.
  bool woken_to_terminate() {
    std::lock_guard lock(mutex_);
    sleeping_ = !terminating_;
    return terminating_;
  }

 private:
  void join_thread(const char* what) {
    if (std::this_thread::get_id() == thread_.get_id()) {
      throw ValueError(std::string("mproc: Pool::") + what + " called from a pool callback would never end");
    }
    if (thread_.joinable()) thread_.join();
  }

  void run() {
    on_pool_thread = true;
    bool killing = false;
    {
      std::lock_guard lock(mutex_);
      sleeping_ = true;  // start() may block starting workers: terminate() wakes it
    }
    try {
      start();
      forked_from_program();
      for (;;) {
        {
          std::lock_guard lock(mutex_);
          retire_finished_jobs_locked();  // before terminate() fails the rest
          if (terminating_) abandon_all_locked(std::make_exception_ptr(PoolClosed("mproc: the pool was terminated")));
          if (terminating_ || broken_) {
            killing = true;
            break;
          }
          pass_ns_ = monotonic_ns();
          hand_out_locked();
          if (closed_ && live_.empty()) break;
          sleeping_ = true;
        }
        run_deferred();
        wait_and_handle();
        {
          std::lock_guard lock(mutex_);
          sleeping_ = false;
        }
        run_deferred();
      }
    } catch (const std::exception& e) {
      break_pool(std::make_exception_ptr(Error(std::string("mproc: the pool failed: ") + e.what())));
      killing = true;
    } catch (...) {
      break_pool(std::make_exception_ptr(Error("mproc: the pool failed")));
      killing = true;
    }
    forked_from_program();  // also when start() failed
    run_deferred();  // a terminated pool's tasks fail with PoolClosed before any worker is stopped
    try {
      stop(killing);
    } catch (...) {
    }
    run_deferred();
  }

  void settle(const std::shared_ptr<Job>& job, std::size_t first, std::size_t count) {
    job->settled += count;
    std::lock_guard lock(mutex_);
    job->input.settle(first, count);
    touched_.push_back(job);
  }

  static bool finished(const Job& job) noexcept {
    return job.input_closed && job.settled == job.input.size() && job.in_flight == 0;
  }

  /// Retires the jobs touched since the last pass that are now finished (or
  /// cancelled and drained); their finish() runs later without the mutex, since it
  /// runs user callbacks.
  void retire_finished_jobs_locked() {
    for (const auto& job : touched_) {
      const bool done = finished(*job);
      const bool dropped = job->cancelled && job->in_flight == 0;
      if (!(done || dropped) || live_.erase(job.get()) == 0) continue;
      left_locked(*job);
      if (!job->cancelled) deferred_.push_back([job] { job->finish(); });
    }
    touched_.clear();
  }

 protected:
  /// Runs the callbacks queued while the mutex was held (finish, abandon).
  void run_deferred() {
    std::vector<std::function<void()>> work;
    {
      std::lock_guard lock(mutex_);
      work.swap(deferred_);
    }
    for (auto& f : work) f();
  }

 private:
  static bool is_single_item(const Job& job) noexcept { return job.expected_total == std::size_t{1}; }

  /// What `count` items of `job`, about to be cut, should cost, or -1 if that is not
  /// known: the job's own mean once one of its chunks came back; before that, for a
  /// one-item job, the recent cost of the one-item jobs of its series (see
  /// wants_more_locked). Mutex held.
  double predict_locked(const Job& job, std::size_t count) {
    std::optional<double> per_item = job.chunking.item_seconds();
    if (!per_item && is_single_item(job) && single_item_series_answered_) {
      per_item = single_item_timing_.item_seconds();
    }
    return per_item ? *per_item * static_cast<double>(count) : -1;
  }
  /// A job leaves the live jobs (mutex held): the one-item series ends with its last.
  void left_locked(const Job& job) noexcept {
    if (is_single_item(job)) --single_items_live_;
  }

  void abandon_all_locked(std::exception_ptr error) {
    for (auto& [ptr, job] : live_) deferred_.push_back([job = job, error] { job->abandon(error); });
    live_.clear();
    single_items_live_ = 0;
    pending_.clear();
    touched_.clear();
    requeue_.clear();
  }

  const std::size_t workers_;
  const std::size_t retries_;
  std::atomic<bool> forked_{false};
  std::thread thread_;

  // Guarded by mutex_.
  mutable std::mutex mutex_;
  std::unordered_map<Job*, std::shared_ptr<Job>> live_;  // submitted and not finished
  std::deque<std::shared_ptr<Job>> pending_;              // may still have items to cut, in order
  std::vector<std::shared_ptr<Job>> touched_;             // to check for completion
  std::deque<Chunk> requeue_;                             // items given back by lost workers
  std::vector<std::function<void()>> deferred_;
  bool closed_ = false;
  bool terminating_ = false;
  bool sleeping_ = false;
  std::exception_ptr broken_;
  RecentItemTime single_item_timing_;  // item durations of one-item jobs (apply, apply_async)
  std::int64_t pass_ns_ = 0;           // when the current hand-out pass began (monotonic_ns)
  /// One-item jobs submitted and not yet retired: a series of them starts when none
  /// is live (a caller that waited for the last one's result starts a new one).
  std::size_t single_items_live_ = 0;
  bool single_item_series_answered_ = false;  // one of the series came back
  std::uint64_t next_chunk_id_ = 1;
};

}  // namespace mproc::detail
