#pragma once
// A Job is one batch of items submitted together: one map, one imap stream, one
// apply_async. It holds the encoded arguments (the input side, cut into chunks by
// whoever runs them) and receives the outcomes (the output side, implemented by the
// typed jobs in typed_jobs.hpp, which walk each outcome with for_each_outcome from
// outcome.hpp). Nothing here depends on how chunks reach a worker.

#include <mproc/detail/engine/outcome.hpp>  // ChunkOutcome
#include <mproc/detail/engine/scheduling.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/errors.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace mproc::detail {

/// Encoded argument tuples, appended in batches (one for a map, one per refill for a
/// stream) and released once every item of a batch has its outcome.
class ItemStore {
 public:
  /// item_size: the encoded size of every item if fixed, else 0 (then offsets are kept).
  explicit ItemStore(std::size_t item_size) noexcept : item_size_(item_size) {}

  /// Appends count items encoded back to back in bytes; offsets[i] is where item i
  /// starts (ignored, and may be empty, for fixed-size items).
  void append(Bytes bytes, std::vector<std::size_t> offsets, std::size_t count) {
    if (count == 0) return;
    batches_.push_back(Batch{size_, count, count, std::move(bytes), std::move(offsets)});
    size_ += count;
  }
  /// Items appended so far.
  std::size_t size() const noexcept { return size_; }

  /// How many items from `first` on lie in the same batch (so can form one chunk).
  std::size_t contiguous_from(std::size_t first) const { return batch_of(first).end() - first; }

  /// The bytes of items [first, first + count), which must lie in one batch.
  std::span<const std::byte> bytes(std::size_t first, std::size_t count) const {
    const Batch& s = batch_of(first);
    const std::size_t a = s.offset_of(first - s.first, item_size_);
    const std::size_t b = s.offset_of(first - s.first + count, item_size_);
    return {s.bytes.data() + a, b - a};
  }

  /// Records that count items from `first` on have their final outcome, and frees
  /// the batches at the front that are fully done.
  void settle(std::size_t first, std::size_t count) {
    while (count > 0) {
      Batch& s = batch_of(first);
      const std::size_t n = std::min(count, s.end() - first);
      s.unsettled -= n;
      first += n;
      count -= n;
    }
    while (!batches_.empty() && batches_.front().unsettled == 0) batches_.pop_front();
  }

 private:
  struct Batch {
    std::size_t first;
    std::size_t count;
    std::size_t unsettled;
    Bytes bytes;
    std::vector<std::size_t> offsets;
    std::size_t end() const noexcept { return first + count; }
    std::size_t offset_of(std::size_t i, std::size_t item_size) const noexcept {
      if (item_size != 0) return i * item_size;
      return i == count ? bytes.size() : offsets[i];
    }
  };
  const Batch& batch_of(std::size_t index) const { return const_cast<ItemStore*>(this)->batch_of(index); }
  Batch& batch_of(std::size_t index) {
    // Few live batches (a stream keeps a bounded window), so a linear scan is cheap.
    for (Batch& s : batches_) {
      if (index >= s.first && index < s.end()) return s;
    }
    throw ProtocolError("mproc: internal error: item " + std::to_string(index) + " is not in the store");
  }

  std::size_t item_size_;
  std::size_t size_ = 0;
  std::deque<Batch> batches_;
};

/// One submission (a map, an imap stream, an apply) and the sink for its outcomes.
///
/// Threads: the input side (input, dispatched, input_closed, cancelled, chunking) is
/// guarded by the owner's mutex (the pool's); the output side (settled, in_flight and
/// the virtual sinks) is used by the one thread that receives outcomes.
class Job {
 public:
  Job(std::size_t item_size, std::size_t fixed_chunksize) : input(item_size), chunking(fixed_chunksize) {}
  virtual ~Job() = default;
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // ---- input side (under the owner's mutex)
  ItemStore input;
  std::size_t dispatched = 0;  // items [0, dispatched) were cut into chunks
  bool input_closed = false;   // no more items will be appended
  bool cancelled = false;      // the consumer left: stop running its items
  std::optional<std::size_t> expected_total;  // the input's length, when known up front
  ChunkPolicy chunking;

  bool has_undispatched() const noexcept { return !cancelled && dispatched < input.size(); }

  // ---- output side (receiving thread)
  std::size_t settled = 0;  // items with a final outcome (or dropped after cancel)
  std::size_t in_flight = 0;  // chunks handed out and not yet back

  /// Items [first, first + outcome.count) finished (each a result or an error).
  virtual void deliver(std::size_t first, const ChunkOutcome& outcome) = 0;
  /// Item `index` failed for good (WorkerLost, TimeoutError, ...).
  virtual void fail(std::size_t index, std::exception_ptr error) = 0;
  /// Every item has its outcome; called once.
  virtual void finish() = 0;
  /// The pool stopped (terminate, or a broken pool): fail whatever is still missing.
  virtual void abandon(std::exception_ptr error) = 0;
};

}  // namespace mproc::detail
