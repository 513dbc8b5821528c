#pragma once
// The board where each worker posts which item it is running. It lives in an
// anonymous shared mapping made before the workers are forked, so the parent can
// read it at any time, and still after the worker died: that is how the parent
// knows exactly which item a dead worker was running.

#include <mproc/detail/os/deadline.hpp>  // monotonic_ns
#include <mproc/detail/shm/shared_mapping.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
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

/// Whether chunk sequence a comes after b: sequences wrap at 2^32, and those compared
/// are never 2^31 apart (a worker holds at most a few hundred chunks).
inline bool sequence_after(std::uint32_t a, std::uint32_t b) noexcept { return static_cast<std::int32_t>(a - b) > 0; }

/// One worker's post, on its own cache line.
struct alignas(64) WorkerSlot {
  std::atomic<std::uint64_t> running{0};  // running_word(), or 0
  /// When the post last changed (if timed): the running item started, or the worker
  /// went idle. A task timeout counts from there.
  std::atomic<std::int64_t> since_ns{0};
  /// Which chunks the worker started and which it was told to drop, so that the parent
  /// can take back chunks a worker holds and has not started: (revoked through : 32 |
  /// last claimed : 32), both sequences of the chunk messages sent to this worker
  /// (1 for the first). The worker claims a chunk before it starts it, unless it is
  /// revoked; the parent revokes the chunks after the last claimed one, unless the
  /// worker claimed another meanwhile. One compare-and-swap on each side decides, so a
  /// chunk is either run by this worker or taken back, never both, never neither.
  std::atomic<std::uint64_t> claims{0};
  /// Set by the parent that waits for the worker to claim a chunk (to take back those
  /// behind it): the worker, claiming one, clears it and tells the parent.
  std::atomic<std::uint32_t> watched{0};
  bool timed = false;  // set by the parent before any worker is forked

  /// Worker side: chunk `sequence` is about to start. False: the parent took it back,
  /// and the worker drops it unrun and unanswered.
  bool claim(std::uint32_t sequence) noexcept {
    auto word = claims.load(std::memory_order_acquire);
    for (;;) {
      if (!sequence_after(sequence, revoked_through(word))) return false;
      const std::uint64_t claimed = (word & ~std::uint64_t{0xffffffffu}) | sequence;
      if (claims.compare_exchange_weak(word, claimed, std::memory_order_seq_cst, std::memory_order_acquire)) {
        return true;
      }
    }
  }
  /// Worker side, after a claim: whether the parent asked to hear of it (watch).
  bool take_watch() noexcept {
    // Sequentially consistent with watch(): the parent sees the claim or the worker
    // sees the request, or both.
    return watched.load(std::memory_order_seq_cst) != 0 && watched.exchange(0, std::memory_order_seq_cst) != 0;
  }
  /// Parent side: the last chunk the worker claimed (0: none yet).
  std::uint32_t claimed() const noexcept { return static_cast<std::uint32_t>(claims.load(std::memory_order_acquire)); }
  /// Parent side: takes back every chunk after `claimed` through `last` (the last
  /// sent), if the worker has claimed no other since it claimed `claimed`.
  bool revoke(std::uint32_t claimed, std::uint32_t last) noexcept {
    auto word = claims.load(std::memory_order_acquire);
    if (static_cast<std::uint32_t>(word) != claimed) return false;
    // Only the parent moves the revoked part: a failure means the worker claimed one.
    return claims.compare_exchange_strong(word, (std::uint64_t{last} << 32) | claimed, std::memory_order_acq_rel,
                                          std::memory_order_acquire);
  }
  /// Parent side: asks the worker, whose last claimed chunk is `claimed`, to say when
  /// it claims the next (take_watch). False if it already did: no word will come.
  bool watch(std::uint32_t claimed) noexcept {
    watched.store(1, std::memory_order_seq_cst);
    return static_cast<std::uint32_t>(claims.load(std::memory_order_seq_cst)) == claimed;
  }
  /// Parent side, for a new worker in this slot (none runs there): no chunk yet.
  void reset_claims() noexcept {
    claims.store(0, std::memory_order_release);
    watched.store(0, std::memory_order_release);
  }
  static std::uint32_t revoked_through(std::uint64_t word) noexcept { return static_cast<std::uint32_t>(word >> 32); }

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
