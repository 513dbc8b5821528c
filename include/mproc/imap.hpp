#pragma once
// IMap<R>: the lazy range Pool::imap and Pool::imap_unordered return. Iterating it
// pulls input and hands out results as they come; only a bounded window of items is
// in flight, so an endless input works and memory stays flat. Leaving the loop early
// (break, an exception, destroying the IMap) cancels the items not yet run.

#include <mproc/detail/engine/typed_jobs.hpp>

#include <cstddef>
#include <exception>
#include <iterator>
#include <memory>
#include <optional>
#include <utility>
#include <variant>

namespace mproc {
namespace detail {

/// What feeds an IMap: pulls input into the job (or, in serial mode, runs it).
template <class R>
class StreamSource {
 public:
  virtual ~StreamSource() = default;
  /// Makes sure the next result will arrive; returns false when the input is
  /// exhausted and all `consumed` results were handed out.
  virtual bool pump(std::size_t consumed) = 0;
  /// What the input threw where it ended, if it did: the stream's last entry.
  virtual std::exception_ptr input_error() const noexcept = 0;
  /// The consumer is gone: stop running its items.
  virtual void cancel() noexcept = 0;
  virtual StreamJob<R>& job() noexcept = 0;
};

}  // namespace detail

/// A lazy sequence of results (input order for imap, completion order for
/// imap_unordered). Single pass: iterate it once. A failed task throws its error
/// (RemoteError, WorkerLost, TimeoutError) when its position is reached; iteration
/// may continue after catching it. An input range that throws (reading an item)
/// ends the sequence: its exception comes after the results of the items read
/// before it, as the last entry.
template <class R>
class IMap {
 public:
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    using reference = R&;

    iterator() = default;
    /// The current result, or its error rethrown.
    R& operator*() const {
      auto& entry = *owner_->current_;
      if (entry.index() == 2) std::rethrow_exception(std::get<2>(entry));
      return std::get<1>(entry);
    }
    R* operator->() const { return &**this; }
    iterator& operator++() {
      owner_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.done(); }

   private:
    friend class IMap;
    explicit iterator(IMap* owner) : owner_(owner) {}
    bool done() const { return owner_->at_end(); }
    IMap* owner_ = nullptr;
  };

  explicit IMap(std::unique_ptr<detail::StreamSource<R>> source) : source_(std::move(source)) {}
  IMap(IMap&&) noexcept = default;
  IMap& operator=(IMap&&) noexcept = default;
  ~IMap() {
    if (source_ && !ended_) source_->cancel();
  }

  /// Starts the iteration (waits for the first result).
  iterator begin() {
    settle();
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

  /// Python's next(): the next result, nothing at the end; a failed task throws.
  /// It returns as soon as that result is here: the one after it is fetched by the
  /// next call, not before this one returns.
  std::optional<R> next() {
    settle();
    if (!current_) return std::nullopt;
    taken_ = true;
    auto& entry = *current_;
    if (entry.index() == 2) std::rethrow_exception(std::get<2>(entry));
    return std::move(std::get<1>(entry));
  }

 private:
  /// Makes current_ the result not yet handed out (or nothing at the end).
  void settle() {
    if (!started_ || taken_) {
      started_ = true;
      taken_ = false;
      advance();
    }
  }
  bool at_end() const noexcept { return !current_; }
  void advance() {
    current_.reset();
    if (ended_) return;
    if (!source_->pump(consumed_)) {
      ended_ = true;
      source_->job().close_progress();
      if (auto error = source_->input_error()) current_.emplace(std::in_place_index<2>, error);
      return;
    }
    current_.emplace(source_->job().wait_pop());
    ++consumed_;
  }

  using Entry = typename detail::StreamJob<R>::Entry;
  std::unique_ptr<detail::StreamSource<R>> source_;
  std::optional<Entry> current_;
  std::size_t consumed_ = 0;
  bool started_ = false;
  bool taken_ = false;  // next() handed out current_
  bool ended_ = false;
};

}  // namespace mproc
