#pragma once
// The scheduling policy, all of it: how big a chunk is (ChunkPolicy), when a job's
// first chunks are probes, how far a stream reads ahead (ChunkPolicy::stream_room),
// and when a worker gets another chunk (wants_more). The engines apply it.
//
// Automatic chunk sizes. Python cuts a map into about 4 chunks per worker, whatever
// the tasks cost: fine for tiny tasks, badly unbalanced for long uneven ones. mproc
// measures how long items take (workers report each chunk's compute time) and sizes
// each chunk from that:
//   - never more than a quarter of what is left per worker (the tail stays balanced:
//     chunks shrink as the work runs out, as in guided self-scheduling);
//   - never longer than max_chunk_seconds (progress, imap latency, retry cost);
//   - never shorter than min_chunk_seconds (so per-chunk overhead stays ~1%), except
//     in the tail, where chunks shrink to half a fair share of what is left, but never
//     below min_tail_chunk_seconds: a chunk costs the pool tens of microseconds
//     whatever it holds, and a tail of tiny chunks of nanosecond items cost more than
//     the imbalance it saved.
// Measurements belong to the job (the call) they were made on: until one exists the
// first chunks hold a single item (a probe), at most one per worker, whatever the
// pool's previous calls cost.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace mproc::detail {

/// What an imap stream has fed so far, when it asks how much input to encode next.
struct StreamFeed {
  std::size_t fed = 0;                // items appended
  std::size_t bytes_fed = 0;          // their encoded size
  std::size_t consumed = 0;           // results the consumer has taken
  std::size_t mean_result_bytes = 0;  // of the results waiting for the consumer
};

class ChunkPolicy {
 public:
  static constexpr double min_chunk_seconds = 0.002;
  static constexpr double max_chunk_seconds = 0.05;
  static constexpr double min_tail_chunk_seconds = 0.0002;
  static constexpr std::size_t chunks_per_worker = 4;
  static constexpr std::size_t max_chunk_items = std::size_t{1} << 22;
  static constexpr double stream_ahead_seconds = 0.01;
  static constexpr std::size_t max_stream_window = std::size_t{1} << 20;
  /// A stream keeps about this many bytes of encoded input ahead of its consumer
  /// (fewer items when they are big), and never much more.
  static constexpr std::size_t max_stream_bytes = std::size_t{64} << 20;

  explicit ChunkPolicy(std::size_t fixed = 0) noexcept : fixed_(fixed) {}

  /// A worker spent elapsed_ns computing count items.
  void record(std::size_t count, std::int64_t elapsed_ns) noexcept {
    items_ += count;
    ns_ += static_cast<double>(std::max<std::int64_t>(elapsed_ns, 0));
  }
  /// Mean seconds per item measured so far, if any.
  std::optional<double> item_seconds() const noexcept {
    if (items_ == 0) return std::nullopt;
    return std::max(ns_ / static_cast<double>(items_), 1.0) * 1e-9;  // at least 1 ns
  }
  std::size_t fixed() const noexcept { return fixed_; }

  /// Whether another chunk may be cut while `in_flight` chunks of the job are out.
  /// Until a job is measured its chunks are one-item probes: one per worker is enough.
  bool may_cut(std::size_t in_flight, std::size_t workers) const noexcept {
    return fixed_ != 0 || items_ != 0 || in_flight < workers;
  }

  /// The size of the next chunk, given how many items are left (nullopt: unknown,
  /// an endless stream) and how many workers share them.
  std::size_t next(std::optional<std::size_t> remaining, std::size_t workers) const noexcept {
    if (fixed_ != 0) return fixed_;
    const auto per_item = item_seconds();
    if (!per_item) return 1;
    const auto lo = static_cast<std::size_t>(std::ceil(min_chunk_seconds / *per_item));
    const auto hi = std::max<std::size_t>(1, static_cast<std::size_t>(max_chunk_seconds / *per_item));
    std::size_t size = hi;
    if (remaining) {
      const std::size_t share = ceil_div(*remaining, chunks_per_worker * workers);
      // The 2 ms floor comes from the items measured so far; when later items cost
      // more (a cube's cost grows with n) it must not swallow the tail in a few
      // chunks, so it never exceeds half a fair share of what is left (nor goes below
      // the tail's floor).
      const std::size_t half_share = ceil_div(*remaining, 2 * workers);
      const auto tail = static_cast<std::size_t>(std::ceil(min_tail_chunk_seconds / *per_item));
      size = std::clamp(share, std::min({lo, hi, std::max(half_share, tail)}), hi);
    }
    return std::clamp<std::size_t>(size, 1, max_chunk_items);
  }

  /// How many items a stream should keep submitted ahead of its consumer: four
  /// chunks per worker, and at least ~10 ms of work per worker once item costs are
  /// known (so small fixed chunks still travel in batches); bounded so memory stays flat.
  std::size_t stream_window(std::size_t workers) const noexcept {
    std::size_t window = next(std::nullopt, workers) * workers * chunks_per_worker;
    if (const auto per_item = item_seconds()) {
      window = std::max(window, workers * static_cast<std::size_t>(stream_ahead_seconds / *per_item));
    }
    return std::clamp<std::size_t>(window, 2 * workers, max_stream_window);
  }
  /// How many items a stream over `workers` should encode and append now: up to its
  /// window ahead of the consumer, refilled once half of that is consumed. Big items,
  /// or big results waiting for a slow consumer, shrink the window so that what is
  /// ahead stays near max_stream_bytes, whichever way it is big.
  std::size_t stream_room(std::size_t workers, const StreamFeed& feed) const noexcept {
    std::size_t window = stream_window(workers);
    if (feed.fed > 0) {
      const std::size_t per_item = std::max(feed.bytes_fed / feed.fed, feed.mean_result_bytes);
      const std::size_t by_bytes = max_stream_bytes / std::max<std::size_t>(1, per_item);
      window = std::max(std::min(window, by_bytes), 2 * workers);
    }
    const std::size_t ahead = feed.fed - feed.consumed;
    if (ahead > 0 && ahead * 2 > window) return 0;  // enough in flight
    return window - std::min(window, ahead);
  }

 private:
  // n / d rounded up, without the overflow of (n + d - 1) / d near SIZE_MAX.
  static std::size_t ceil_div(std::size_t n, std::size_t d) noexcept { return n / d + (n % d != 0 ? 1 : 0); }

  std::size_t fixed_;
  std::size_t items_ = 0;
  double ns_ = 0;
};

/// The recent cost of an item over a series of jobs (a pool's one-item jobs, which are
/// never measured before they go out). It follows a workload that changes from tiny
/// to long tasks at once (a longer item is the new cost: batching long tasks on one
/// worker is the costly mistake), and from long to tiny as an exponentially weighted
/// mean per chunk.
class RecentItemTime {
 public:
  void record(std::size_t count, std::int64_t elapsed_ns) noexcept {
    if (count == 0) return;
    const double sample = std::max(static_cast<double>(elapsed_ns) / static_cast<double>(count), 1.0) * 1e-9;
    seconds_ = seconds_ && sample < *seconds_ ? *seconds_ + weight * (sample - *seconds_) : sample;
  }
  std::optional<double> item_seconds() const noexcept { return seconds_; }

 private:
  static constexpr double weight = 0.25;
  std::optional<double> seconds_;
};

/// What a worker holds, as the hand-out rule (wants_more) sees it.
struct HeldWork {
  std::size_t chunks = 0;
  /// The first held chunk had a prediction when it was cut, or its job is measured now.
  bool first_predicted = false;
  /// The predicted time of everything held, if every chunk had a prediction.
  std::optional<double> predicted_seconds;
  /// Since the worker's last outcome, at the current hand-out pass.
  std::int64_t since_answer_ns = 0;
};

/// How many chunks a worker may hold at most.
inline constexpr std::size_t max_held_chunks = 256;
/// How much measured work a worker may hold beyond two chunks.
inline constexpr double max_held_seconds = 0.001;

/// Whether a worker holding `held` should get another chunk.
///
/// Yes while it holds nothing. A second chunk, to start right after the first so
/// that it never waits for the pool between chunks, unless the first is a probe: a
/// chunk of a job not measured yet (two chunks of unknown length on one worker may
/// leave another idle while both wait). Beyond two (never past max_held_chunks) only
/// tiny tasks travel in batches: while every chunk it holds had a prediction,
/// together under max_held_seconds, and it answered within that time. So long tasks
/// are not hoarded by one worker (which may be stuck on one while others could run
/// what waits behind it).
///
/// A prediction comes from the chunk's own job (the call it belongs to): a job not
/// yet measured has none, so a new call starts with probes, whatever the previous
/// one cost. A stream of fresh one-item jobs (apply_async) is never measured before
/// its items go out: those take the recent cost of the one-item jobs of their series
/// (RecentItemTime: they all run the pool's one F), once one has answered. A series
/// starts when one is submitted while none is live (submitted and not retired), so a
/// caller that waited for a result (apply) starts a new one: quick calls before it
/// say nothing about slow ones after it, nor slow ones about quick ones; and a burst
/// of apply_async on one worker is batched once its first has answered.
inline bool wants_more(const HeldWork& held) noexcept {
  if (held.chunks == 0) return true;
  if (held.chunks == 1) return held.first_predicted;
  if (held.chunks >= max_held_chunks) return false;
  constexpr auto window_ns = static_cast<std::int64_t>(max_held_seconds * 1e9);
  if (held.since_answer_ns >= window_ns) return false;
  return held.predicted_seconds && *held.predicted_seconds < max_held_seconds;
}

}  // namespace mproc::detail
