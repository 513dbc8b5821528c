#pragma once
// The typed ends of jobs: where decoded results go.
//   ApplyJob<R>    one item -> AsyncResult<R>                 (apply, apply_async)
//   CollectJob<R>  n items  -> AsyncResult<std::vector<R>>    (map, starmap, *_async)
//   StreamJob<R>   a window of items consumed one by one      (imap, imap_unordered)

#include <mproc/async_result.hpp>
#include <mproc/detail/engine/job.hpp>
#include <mproc/detail/engine/outcome.hpp>  // for_each_outcome
#include <mproc/detail/engine/progress.hpp>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <variant>
#include <vector>

namespace mproc::detail {

template <class R>
class ApplyJob final : public Job {
 public:
  ApplyJob(std::size_t item_size, std::shared_ptr<ResultState<R>> state)
      : Job(item_size, 1), state_(std::move(state)) {}

  void deliver(std::size_t first, const ChunkOutcome& outcome) override {
    for_each_outcome<R>(
        first, outcome, [&](std::size_t, R&& value) { value_.emplace(std::move(value)); },
        [&](std::size_t, std::exception_ptr e) { error_ = e; });
  }
  void fail(std::size_t, std::exception_ptr error) override { error_ = error; }
  void finish() override {
    if (error_) state_->set_error(error_);
    else state_->set_value(std::move(*value_));
  }
  void abandon(std::exception_ptr error) override { state_->set_error(error); }

 private:
  std::shared_ptr<ResultState<R>> state_;
  std::optional<R> value_;
  std::exception_ptr error_;
};

/// Collects every result in input order; on failure reports the first failure in
/// input order, as Python's map does.
template <class R>
class CollectJob final : public Job {
 public:
  CollectJob(std::size_t item_size, std::size_t chunksize, std::size_t count, bool progress,
             std::shared_ptr<ResultState<std::vector<R>>> state)
      : Job(item_size, chunksize), state_(std::move(state)) {
    results_.resize(count);
    if (progress) progress_.emplace(count);
  }

  void deliver(std::size_t first, const ChunkOutcome& outcome) override {
    if constexpr (kind_of<R>() == Kind::trivial && std::is_default_constructible_v<R>) {
      // The common case, ints or doubles without errors: one copy for the chunk.
      if (outcome.errors.empty() && outcome.results.size() == outcome.header.count * sizeof(R)) {
        std::memcpy(&results_[first], outcome.results.data(), outcome.results.size());
        if (progress_) progress_->update(outcome.header.count);
        return;
      }
    }
    for_each_outcome<R>(
        first, outcome, [&](std::size_t i, R&& value) { store(i, std::move(value)); },
        [&](std::size_t i, std::exception_ptr e) { fail(i, e); });
    if (progress_) progress_->update(outcome.header.count);
  }
  void fail(std::size_t index, std::exception_ptr error) override {
    if (!error_ || index < error_index_) {
      error_ = error;
      error_index_ = index;
    }
  }
  void finish() override {
    if (progress_) progress_->close();
    if (error_) {
      state_->set_error(error_);
      return;
    }
    if constexpr (std::is_default_constructible_v<R>) {
      state_->set_value(std::move(results_));
    } else {
      std::vector<R> out;
      out.reserve(results_.size());
      for (auto& r : results_) out.push_back(std::move(*r));
      state_->set_value(std::move(out));
    }
  }
  void abandon(std::exception_ptr error) override {
    if (progress_) progress_->close();
    state_->set_error(error);
  }

 private:
  void store(std::size_t i, R&& value) {
    if constexpr (std::is_default_constructible_v<R>) results_[i] = std::move(value);
    else results_[i].emplace(std::move(value));
  }

  std::shared_ptr<ResultState<std::vector<R>>> state_;
  std::conditional_t<std::is_default_constructible_v<R>, std::vector<R>, std::vector<std::optional<R>>> results_;
  std::exception_ptr error_;
  std::size_t error_index_ = 0;
  std::optional<ProgressBar> progress_;
};

/// Results of a stream, handed to one consumer in input order (imap) or in
/// completion order (imap_unordered). Each entry is a value or an error.
template <class R>
class StreamJob final : public Job {
 public:
  using Entry = std::variant<std::monostate, R, std::exception_ptr>;  // monostate: not arrived

  StreamJob(std::size_t item_size, std::size_t chunksize, bool ordered, std::optional<std::size_t> total, bool progress)
      : Job(item_size, chunksize), ordered_(ordered) {
    if (progress) progress_.emplace(total);
  }

  void deliver(std::size_t first, const ChunkOutcome& outcome) override {
    {
      std::lock_guard lock(mutex_);
      result_bytes_ += outcome.results.size();
      results_seen_ += outcome.header.count;
      for_each_outcome<R>(
          first, outcome, [&](std::size_t i, R&& value) { put(i, Entry(std::in_place_index<1>, std::move(value))); },
          [&](std::size_t i, std::exception_ptr e) { put(i, Entry(std::in_place_index<2>, e)); });
    }
    if (progress_) progress_->update(outcome.header.count);
    cv_.notify_all();
  }
  void fail(std::size_t index, std::exception_ptr error) override {
    {
      std::lock_guard lock(mutex_);
      put(index, Entry(std::in_place_index<2>, error));
    }
    cv_.notify_all();
  }
  void finish() override { close_progress(); }
  /// Draws the bar's last line; the consumer calls it when the stream ends, so the
  /// line comes before whatever the program prints next.
  void close_progress() {
    if (progress_) progress_->close();
  }
  void abandon(std::exception_ptr error) override {
    if (progress_) progress_->close();
    {
      std::lock_guard lock(mutex_);
      abandoned_ = error;
    }
    cv_.notify_all();
  }

  /// The mean encoded size of a result so far (0 before any arrived): the stream's
  /// window counts results too, which wait here until the consumer takes them.
  std::size_t mean_result_bytes() const {
    std::lock_guard lock(mutex_);
    return results_seen_ == 0 ? 0 : result_bytes_ / results_seen_;
  }

  /// Consumer: waits for the next entry. The consumer calls it only while some
  /// submitted item is still unconsumed, so an entry will come, unless the pool
  /// stops, whose reason is then rethrown.
  Entry wait_pop() {
    std::unique_lock lock(mutex_);
    for (;;) {
      if (auto e = pop_locked()) return std::move(*e);
      if (abandoned_) std::rethrow_exception(abandoned_);
      if (on_pool_thread) throw ValueError("mproc: iterating a pool's imap inside a pool callback would never end");
      cv_.wait(lock);
    }
  }

 private:
  void put(std::size_t index, Entry entry) {
    if (ordered_) {
      const std::size_t pos = index - consumed_;
      if (ring_.size() <= pos) ring_.resize(pos + 1);
      ring_[pos] = std::move(entry);
    } else {
      ring_.push_back(std::move(entry));
    }
  }
  std::optional<Entry> pop_locked() {
    if (ring_.empty() || ring_.front().index() == 0) return std::nullopt;
    Entry e = std::move(ring_.front());
    ring_.pop_front();
    ++consumed_;
    return e;
  }

  bool ordered_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Entry> ring_;  // ordered: item consumed_ + i at i; unordered: arrival order
  std::size_t consumed_ = 0;
  std::size_t result_bytes_ = 0;  // encoded bytes of the results delivered so far
  std::size_t results_seen_ = 0;
  std::exception_ptr abandoned_;
  std::optional<ProgressBar> progress_;
};

}  // namespace mproc::detail
