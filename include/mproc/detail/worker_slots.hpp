#pragma once
// The board where each worker posts which item it is running. It lives in an
// anonymous shared mapping made before the workers are forked, so the parent can
// read it at any time, and still after the worker died: that is how the parent
// knows exactly which item a dead worker was running.

#include <mproc/detail/shared_mapping.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <new>
#include <utility>

namespace mproc::detail {

/// Packs "item `item` of chunk `chunk`" into one word; 0 means "not running an item".
/// Only the low 32 bits of the chunk id are kept: a worker never holds chunks whose
/// ids differ by 2^32.
inline std::uint64_t running_word(std::uint64_t chunk, std::uint32_t item) noexcept {
  return (chunk << 32) | (std::uint64_t{item} + 1);
}
inline bool word_is_chunk(std::uint64_t word, std::uint64_t chunk) noexcept {
  return word != 0 && (word >> 32) == (chunk & 0xffffffffu);
}
inline std::uint32_t word_item(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>((word & 0xffffffffu) - 1);
}

inline std::int64_t monotonic_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

/// One worker's post, on its own cache line.
struct alignas(64) WorkerSlot {
  std::atomic<std::uint64_t> running{0};  // running_word(), or 0
  /// When the post last changed (if timed): the running item started, or the worker
  /// went idle. A task timeout counts from there.
  std::atomic<std::int64_t> since_ns{0};
  bool timed = false;  // set by the parent before any worker is forked

  /// Worker side: item `item` of `chunk` starts now; `timed_items`: post the time too.
  void begin(std::uint64_t chunk, std::uint32_t item, bool timed_items) noexcept {
    if (timed_items) since_ns.store(monotonic_ns(), std::memory_order_relaxed);
    running.store(running_word(chunk, item), std::memory_order_release);
  }
  /// Worker side (and the parent's, for a fresh worker): no item runs now.
  void idle() noexcept {
    if (timed) since_ns.store(monotonic_ns(), std::memory_order_relaxed);
    running.store(0, std::memory_order_release);
  }

  /// Parent side: a consistent (running, since) pair.
  std::pair<std::uint64_t, std::int64_t> read() const noexcept {
    for (;;) {
      const auto word = running.load(std::memory_order_acquire);
      const auto since = since_ns.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (running.load(std::memory_order_relaxed) == word) return {word, since};
    }
  }
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "worker slots need address-free atomics");

/// A table of slots in memory shared with every worker forked after it was made;
/// `timed`: the workers post the times of their changes (a task timeout is set).
class WorkerSlots {
 public:
  WorkerSlots(std::size_t count, bool timed) : count_(count), timed_(timed), memory_(count * sizeof(WorkerSlot)) {
    for (std::size_t i = 0; i < count; ++i) (new (memory_.as<WorkerSlot>() + i) WorkerSlot())->timed = timed;
  }
  WorkerSlot& operator[](std::size_t i) const noexcept { return memory_.as<WorkerSlot>()[i]; }
  std::size_t size() const noexcept { return count_; }
  bool timed() const noexcept { return timed_; }

 private:
  std::size_t count_;
  bool timed_;
  SharedMapping memory_;
};

}  // namespace mproc::detail
