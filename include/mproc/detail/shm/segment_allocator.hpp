#pragma once
// The allocator of a Manager's segment: a free list per size class, and a top from
// which new blocks are carved as the segment grows. A request takes a free block of
// its class, else splits a larger free block, else carves from the top; when the
// segment cannot grow any more, it first merges neighbouring free blocks (a sweep
// over the heap) and tries again.
//
// It is crash-consistent: every change to its state is published with one 8-byte
// store, so a process killed in the middle of allocate() or deallocate() leaves
// every free list well formed and never hands the same block out twice. A block
// lost that way (marked free but in no list) is found again by the next sweep.
// (Boost.Interprocess's segment managers lock with a non-robust mutex, which hangs
// every process for good once a holder dies, and rebalance a tree in several
// stores; hence this small allocator.)

#include <mproc/detail/shm/crash_safety.hpp>
#include <mproc/detail/shm/segment.hpp>
#include <mproc/detail/sync/robust_lock.hpp>
#include <mproc/detail/sync/robust_mutex.hpp>
#include <mproc/errors.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>

namespace mproc::detail {

// Classes: 16, 32, ... 256 bytes, then four per power of two (320, 384, 448, 512,
// 640, ...), so a block wastes at most a quarter of its size.
inline constexpr std::size_t small_class_count = 16;
inline constexpr std::size_t size_class_count = small_class_count + 4 * 40;  // up to 2^48 bytes

constexpr std::uint64_t class_size(std::size_t c) noexcept {
  if (c < small_class_count) return (c + 1) * 16;
  const std::size_t e = 8 + (c - small_class_count) / 4;
  const std::size_t m = (c - small_class_count) % 4;
  return (std::uint64_t{1} << e) + (m + 1) * (std::uint64_t{1} << (e - 2));
}

constexpr std::size_t size_class_of(std::uint64_t bytes) noexcept {
  if (bytes <= 256) return bytes == 0 ? 0 : static_cast<std::size_t>((bytes + 15) / 16 - 1);
  const auto e = static_cast<std::size_t>(std::bit_width(bytes - 1) - 1);  // 2^e < bytes <= 2^(e+1)
  const std::uint64_t step = std::uint64_t{1} << (e - 2);
  const auto m = static_cast<std::size_t>((bytes - (std::uint64_t{1} << e) + step - 1) / step - 1);
  return small_class_count + (e - 8) * 4 + m;
}

static_assert(class_size(size_class_of(257)) == 320 && class_size(size_class_of(512)) == 512 &&
              class_size(size_class_of(513)) == 640 && class_size(size_class_of(16)) == 16);

// The largest class whose blocks are all at most `bytes` long: where a free block
// of that size is filed.
constexpr std::size_t floor_class_of(std::uint64_t bytes) noexcept {
  const std::size_t c = size_class_of(bytes);
  return class_size(c) > bytes ? c - 1 : c;
}

inline constexpr std::size_t class_words = (size_class_count + 63) / 64;

struct AllocatorState {
  RobustMutex mutex;
  std::atomic<std::uint64_t> deaths{0};
  std::uint64_t top = 0;         // offset of the first byte never handed out
  // Statistics only (a crash can leave it off). Written under the mutex, but read
  // without it (Manager::used()), hence atomic.
  std::atomic<std::uint64_t> live_bytes{0};
  // Bit c is set whenever list c is not empty (it may be set for an empty list).
  std::uint64_t nonempty[class_words] = {};
  std::uint64_t free_heads[size_class_count] = {};
};

inline constexpr std::uint64_t allocator_offset = segment_header_size;
inline constexpr std::uint64_t heap_begin = (allocator_offset + sizeof(AllocatorState) + 63) / 64 * 64;

inline constexpr std::uint32_t block_magic = 0x6b6c4231;  // "1Blk"

inline constexpr std::uint32_t block_in_use = 0;
inline constexpr std::uint32_t block_free = 1;

/// Precedes every block; the block's bytes follow at a 16-byte boundary, and the
/// next block's header right after them. A free block keeps the offset of the next
/// free one in its first 8 bytes.
struct BlockHeader {
  std::uint32_t magic;
  std::uint32_t state;  // block_in_use or block_free
  std::uint64_t size;   // bytes after the header
};
static_assert(sizeof(BlockHeader) == 16);

/// Allocates and frees blocks in a Manager segment. A light view: make one where needed.
class SegmentAllocator {
 public:
  explicit SegmentAllocator(Segment& seg) noexcept : seg_(seg), state_(*seg.at<AllocatorState>(allocator_offset)) {}

  /// Lays out an empty heap in a new segment.
  static void format(Segment& seg) {
    auto* state = ::new (seg.at<void>(allocator_offset)) AllocatorState();
    state->top = heap_begin;
  }

  /// A block of at least `bytes` bytes, 16-byte aligned; returns its offset. Throws
  /// SharedMemoryFull, naming `what` and how to make room, when the segment cannot
  /// grow enough.
  std::uint64_t allocate(std::uint64_t bytes, const char* what) {
    const std::size_t c = size_class_of(bytes);
    RobustLock guard(state_.mutex, state_.deaths);
    if (c >= size_class_count) throw full(bytes, what, false);
    const std::uint64_t need = class_size(c);
    bool system_full = false;
    std::uint64_t block = take(c, need);
    if (block == 0) block = carve(need, system_full);
    if (block == 0) {
      sweep();
      block = take(c, need);
    }
    if (block == 0) throw full(bytes, what, system_full);
    add_live(seg_.at<BlockHeader>(block)->size, true);
    return block + sizeof(BlockHeader);
  }

  /// Returns a block to a free list. The caller has already unlinked it from every
  /// structure (so a crash here loses it until the next sweep at worst).
  void deallocate(std::uint64_t offset) noexcept {
    if (offset == 0) return;
    const std::uint64_t block = offset - sizeof(BlockHeader);
    BlockHeader& header = *seg_.at<BlockHeader>(block);
    if (header.magic != block_magic || header.state != block_in_use) return;  // never ours, or freed already
    try {
      RobustLock guard(state_.mutex, state_.deaths);
      add_live(header.size, false);
      push(block);
    } catch (...) {
      // The mutex call failed (it cannot, short of a corrupted mutex): leak the block.
    }
  }

  /// Grows the live block at offset to at least `bytes` bytes where it lies, when the
  /// room right after it is free: the top of the heap, or a free block at the head of
  /// its list (most often the rest of the split that made this block). Returns false,
  /// changing nothing, when it cannot: the caller allocates a new block and copies.
  /// Crash-safe as the rest: the top moves before the block reaches it, and a free
  /// block is unlinked before the block's size swallows it (a crash in between leaves
  /// it marked free and in no list, for the next sweep).
  bool extend(std::uint64_t offset, std::uint64_t bytes) {
    if (offset < heap_begin + sizeof(BlockHeader)) return false;
    const std::uint64_t block = offset - sizeof(BlockHeader);
    RobustLock guard(state_.mutex, state_.deaths);
    BlockHeader& h = header(block);
    if (h.magic != block_magic || h.state != block_in_use || size_class_of(bytes) >= size_class_count) return false;
    const std::uint64_t old_size = h.size;
    const std::uint64_t need = (bytes + 15) / 16 * 16;
    if (need <= old_size) return true;
    const std::uint64_t next = block + sizeof(BlockHeader) + old_size;
    if (next == state_.top) {
      const std::uint64_t end = block + sizeof(BlockHeader) + need;
      bool system_full = false;  // the caller's allocate() says so, if it comes to that
      if (!back_up_to(end, system_full)) return false;
      publish(state_.top, end);
      fault_point("alloc.extend");
      publish(h.size, need);
    } else if (!swallow_next(block, need)) {
      return false;
    }
    add_live(h.size - old_size, true);
    return true;
  }

  /// True if offset can be a live block of at least `bytes` bytes (checks a handle
  /// decoded from bytes before it is trusted). Takes the allocator's lock: the block
  /// headers and the top it reads change under it.
  bool plausible(std::uint64_t offset, std::uint64_t bytes) const {
    RobustLock guard(state_.mutex, state_.deaths);
    const std::uint64_t top = state_.top;
    if (offset < heap_begin + sizeof(BlockHeader) || offset % 16 != 0 || offset > top) return false;
    const BlockHeader& header = *seg_.at<BlockHeader>(offset - sizeof(BlockHeader));
    return header.magic == block_magic && header.state == block_in_use && header.size >= bytes &&
           header.size <= top - offset;
  }

  /// Bytes in live blocks (approximate after a process died mid-allocation).
  std::uint64_t live_bytes() const noexcept { return state_.live_bytes.load(std::memory_order_relaxed); }
  /// How many times a process died holding the allocator's lock.
  std::uint64_t owner_deaths() const noexcept { return state_.deaths.load(std::memory_order_relaxed); }

 private:
  BlockHeader& header(std::uint64_t block) const noexcept { return *seg_.at<BlockHeader>(block); }

  // Counts a block in or out of live_bytes (the caller holds the mutex).
  void add_live(std::uint64_t size, bool in) noexcept {
    const std::uint64_t now = state_.live_bytes.load(std::memory_order_relaxed);
    state_.live_bytes.store(in ? now + size : now - size, std::memory_order_relaxed);
  }

  // A free block of class c, or one split from a larger free block; 0 if none.
  std::uint64_t take(std::size_t c, std::uint64_t need) noexcept {
    const std::uint64_t block = pop(c);
    return block != 0 ? block : split_larger(c, need);
  }

  // Takes the first block of list c and marks it in use; 0 if the list is empty.
  std::uint64_t pop(std::size_t c) noexcept {
    const std::uint64_t block = state_.free_heads[c];
    if (block == 0) return 0;
    unlink_head(c);
    publish(header(block).state, block_in_use);
    return block;
  }

  // Takes the first block out of list c (not empty), still marked free: one a crash
  // leaves here is in no list, for the next sweep.
  void unlink_head(std::size_t c) noexcept {
    publish(state_.free_heads[c], *seg_.at<std::uint64_t>(state_.free_heads[c] + sizeof(BlockHeader)));
    if (state_.free_heads[c] == 0) publish(state_.nonempty[c / 64], state_.nonempty[c / 64] & ~bit(c));
  }

  // Marks a block free and files it under its size.
  void push(std::uint64_t block) noexcept {
    const std::size_t c = floor_class_of(header(block).size);
    publish(header(block).state, block_free);
    publish(state_.nonempty[c / 64], state_.nonempty[c / 64] | bit(c));  // before the block is in the list
    fault_point("alloc.push");
    *seg_.at<std::uint64_t>(block + sizeof(BlockHeader)) = state_.free_heads[c];
    publish(state_.free_heads[c], block);
  }

  // Grows block over the free block right after it, if that is the head of its list
  // and big enough: takes it whole, then gives back what is past `need`.
  bool swallow_next(std::uint64_t block, std::uint64_t need) noexcept {
    const std::uint64_t next = block + sizeof(BlockHeader) + header(block).size;
    if (next >= state_.top || header(next).magic != block_magic || header(next).state != block_free) return false;
    const std::uint64_t room = next + sizeof(BlockHeader) + header(next).size - block - sizeof(BlockHeader);
    const std::size_t c = floor_class_of(header(next).size);
    if (room < need || state_.free_heads[c] != next) return false;
    unlink_head(c);
    fault_point("alloc.extend");
    publish(header(block).size, room);
    split_off_rest(block, need);
    return true;
  }

  // Takes a free block of a class above c and splits `need` bytes off it; 0 if none.
  std::uint64_t split_larger(std::size_t c, std::uint64_t need) noexcept {
    std::uint64_t block = 0;
    for (std::size_t k = c + 1; k < size_class_count && block == 0;) {
      const std::uint64_t word = state_.nonempty[k / 64] >> (k % 64);
      if (word == 0) {
        k = (k / 64 + 1) * 64;
        continue;
      }
      k += static_cast<std::size_t>(std::countr_zero(word));
      if (k < size_class_count) block = pop(k);
      ++k;
    }
    if (block == 0) return 0;
    split_off_rest(block, need);
    return block;
  }

  // Makes what block holds past `need` bytes a free block of its own, if it is worth one.
  void split_off_rest(std::uint64_t block, std::uint64_t need) noexcept {
    const std::uint64_t size = header(block).size;
    if (size - need < 2 * sizeof(BlockHeader)) return;
    const std::uint64_t rest = block + sizeof(BlockHeader) + need;
    header(rest) = BlockHeader{block_magic, block_free, size - need - sizeof(BlockHeader)};
    publish(header(block).size, need);  // from here on the rest is a block of its own...
    fault_point("alloc.split");
    push(rest);                         // ...lost only until the next sweep if we die now
  }

  // Carves a new block from the top, growing the segment if needed; 0 if it cannot
  // (system_full tells whether the system, rather than max_size, said no).
  std::uint64_t carve(std::uint64_t need, bool& system_full) {
    const std::uint64_t block = state_.top;
    const std::uint64_t end = block + sizeof(BlockHeader) + need;
    if (!back_up_to(end, system_full)) return 0;
    header(block) = BlockHeader{block_magic, block_in_use, need};
    publish(state_.top, end);
    return block;
  }

  // Makes sure the segment has memory up to end, growing it if needed; false if it
  // may not (past max_size) or cannot (system_full: the system said no).
  bool back_up_to(std::uint64_t end, bool& system_full) {
    if (end > seg_.reserved()) return false;
    if (end > seg_.committed() && !seg_.grow_to(std::max<std::uint64_t>(end, 2 * seg_.committed()), end)) {
      system_full = true;
      return false;
    }
    return true;
  }

  // Rebuilds the free lists from the blocks themselves, merging free neighbours, and
  // taking back blocks a dead process left marked free but in no list. Crash-safe:
  // the lists are emptied first, a merge is one store to the first block's size, and
  // whatever a crash leaves out of the lists the next sweep finds again.
  void sweep() noexcept {
    for (auto& head : state_.free_heads) publish(head, std::uint64_t{0});
    for (auto& word : state_.nonempty) publish(word, std::uint64_t{0});
    const std::uint64_t top = state_.top;
    std::uint64_t at = heap_begin;
    while (at < top && header(at).magic == block_magic) {
      std::uint64_t next = at + sizeof(BlockHeader) + header(at).size;
      if (header(at).state == block_free) {
        while (next < top && header(next).magic == block_magic && header(next).state == block_free) {
          next += sizeof(BlockHeader) + header(next).size;
        }
        publish(header(at).size, next - at - sizeof(BlockHeader));
        push(at);
      }
      at = next;
    }
  }

  static std::uint64_t bit(std::size_t c) noexcept { return std::uint64_t{1} << (c % 64); }

  SharedMemoryFull full(std::uint64_t bytes, const char* what, bool system = false) const {
    const std::string sizes =
        std::to_string(bytes) + " more bytes for " + what + ", with " + std::to_string(live_bytes()) + " bytes in use";
    if (system) {
      return SharedMemoryFull("mproc: the system has no memory left to grow the Manager's shared memory beyond " +
                              std::to_string(seg_.committed()) + " bytes (" + sizes + ")");
    }
    const std::string said = "mproc: the Manager's shared memory is full: it may grow to " +
                             std::to_string(seg_.reserved()) + " bytes (ManagerOptions::max_size) and needed " + sizes;
    if (size_class_of(bytes) >= size_class_count) {
      return SharedMemoryFull(said + ", more than a Manager's segment can hold in one block.");
    }
    return SharedMemoryFull(said + ". Make the Manager larger, e.g. mproc::Manager mgr({.max_size = " +
                            std::to_string(suggested_max_size(bytes)) + "}).");
  }

  // A max_size to suggest: double the present one, or, if that is still too small,
  // room for everything carved so far plus this request; a power of two either way.
  std::uint64_t suggested_max_size(std::uint64_t bytes) const noexcept {
    const std::uint64_t needed = state_.top + sizeof(BlockHeader) + class_size(size_class_of(bytes));
    return std::bit_ceil(std::max<std::uint64_t>(2 * seg_.reserved(), needed));
  }

  Segment& seg_;
  AllocatorState& state_;
};

}  // namespace mproc::detail
