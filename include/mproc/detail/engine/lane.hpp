#pragma once
// A lane: shared memory beside a pipe for payloads too big to be worth pushing
// through it. A pipe copies every byte twice (into the kernel and out again) and
// wakes the reader once per buffer-full; a lane is written once by the sender and
// decoded in place by the receiver. One sender and one receiver, frames in order.
//
// The lane is a ring of payloads: the sender places each at the end of those in
// flight (or at the start when the end has no room and the start is free), the
// receiver takes and releases them in the order they were put, and a table in the
// header says where each one lies. While the lane has no room (or its table is full)
// the sender sends through the pipe instead, so nothing ever waits for it. Payloads in
// flight together stay within ring_bytes; a bigger one travels alone.
//
// The lane is a memfd that each side maps only as far as the payloads it handles
// reach, so a Pool costs little address space (`ulimit -v`) until big payloads
// travel. A sender that cannot map a payload (no address space left) sends it
// through the pipe instead. No descriptor is kept: only the header page is mapped
// when the lane is made, and the workers, forked later, inherit that mapping; each
// side maps the data by duplicating it, longer (mremap with an old size of 0 maps the
// same file from the same offset), so no child ever holds a copy of a pool's
// descriptor and a worker needs no /proc access to its parent.
//
// Each side trusts only its own counters: the other process may be hostile or dying,
// so what it wrote in the header is checked before any byte is reached through it.

#include <mproc/detail/shm/memfd.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/errors.hpp>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <string>

namespace mproc::detail {

class Lane {
 public:
  /// Payloads from this size up go through the lane.
  static constexpr std::size_t min_payload = std::size_t{256} << 10;
  /// The largest payload a lane carries; a bigger one goes through the pipe. Under a
  /// file-size limit (RLIMIT_FSIZE) a lane carries less: see capacity_.
  static constexpr std::size_t capacity = std::size_t{2} << 30;
  /// Memory and mapping kept after payloads are consumed, so that the next big ones
  /// need no page faults; beyond this they go back to the system. Under an
  /// address-space limit, the lanes of a process keep at most an eighth of it mapped
  /// (Pool(16) would otherwise keep 2 GiB), so that a big payload still finds room.
  static constexpr std::size_t kept_bytes = std::size_t{64} << 20;
  /// Payloads in flight together lie within the first ring_bytes of the lane (the
  /// kept memory); one bigger than the room left waits for the pipe, or travels alone.
  static constexpr std::size_t ring_bytes = kept_bytes;
  /// Payloads in flight at once, at most (the header's table).
  static constexpr std::size_t max_in_flight = 128;
  /// Each payload starts on a cache line of its own.
  static constexpr std::size_t slot_align = 64;
  /// A side's mapping grows in steps of this size. One of at most kept_bytes plus a
  /// step stays mapped (a payload of kept_bytes and its codec's few header bytes).
  static constexpr std::size_t view_step = std::size_t{2} << 20;
  /// The lane's own header before the data.
  static constexpr std::size_t header_bytes = 4096;  // keeps the data page-aligned

  Lane() {
    // A memfd grown past the file-size limit would end the program (SIGXFSZ): under
    // one, the lane holds what fits, and is left out if that is less than min_payload
    // (every payload then goes through the pipe).
    if (const auto limit = file_size_limit()) {
      const std::size_t room = *limit > header_bytes ? (*limit - header_bytes) / page_size() * page_size() : 0;
      capacity_ = std::min(capacity, room);
      if (capacity_ < min_payload) {
        capacity_ = 0;
        return;
      }
    }
    // No fork while the descriptor is open: no child may hold a copy (see PrivateFds).
    const auto no_fork = PrivateFds::hold_forks();
    const Fd file = make_memfd("mproc-lane", header_bytes + capacity_);
    header_.reset(map_memfd(file.get(), 0, header_bytes));
    if (!header_) throw OSError("mmap(memfd)", ENOMEM);
    new (header_.get()) Header();
  }
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;
  ~Lane() { unmap_view(); }

  /// Sender: copies the payload into the lane if it is big enough to be worth it,
  /// there is room, and this process can map it; returns whether it did (if not,
  /// send it inline).
  bool try_put(std::span<const std::byte> payload) noexcept {
    const std::size_t size = payload.size();
    if (size < min_payload || size > capacity_) return false;  // capacity_ 0: no lane
    const std::uint64_t taken = header().taken.load(std::memory_order_acquire);
    if (taken > put_ || put_ - taken >= max_in_flight) return false;  // full (or a receiver gone wrong)
    std::size_t offset = 0;  // an empty lane starts over at its start: those pages are warm
    if (taken != put_) {
      const std::size_t first = starts_[taken % max_in_flight];  // the oldest one in flight
      const std::size_t tail = (end_ + slot_align - 1) / slot_align * slot_align;
      if (end_ > first && tail + size <= ring_bytes) {
        offset = tail;
      } else if (end_ > first && size <= first) {
        offset = 0;  // wraps around
      } else if (end_ <= first && tail + size <= first) {
        offset = tail;  // wrapped already, and fits before the oldest one
      } else {
        return false;
      }
    }
    if (offset + size > capacity_) return false;  // a lane cut short by RLIMIT_FSIZE
    const std::size_t mapped = view_bytes_;
    if (!map_view(offset + size)) return false;
    if (offset + size > mapped) prefault(data() + offset, size);  // newly mapped: every page would fault
    std::memcpy(data() + offset, payload.data(), size);
    Slot& slot = header().slots[put_ % max_in_flight];
    slot.offset = offset;
    slot.size = size;
    starts_[put_ % max_in_flight] = offset;
    end_ = offset + size;
    header().put.store(++put_, std::memory_order_release);
    trim_view();
    return true;
  }
  /// Receiver: the payload of the next frame flagged frame_flag_in_lane, whose size
  /// the frame header gives. A lane without such a payload, or one whose table says
  /// otherwise or points past the lane, is a ProtocolError. Throws SharedMemoryFull if
  /// this process has no address space left to map it.
  std::span<const std::byte> view(std::size_t size) {
    if (size > capacity_ || !header_) {
      throw ProtocolError("mproc: a frame claims " + std::to_string(size) + " bytes in a shared-memory lane of " +
                          std::to_string(capacity_));
    }
    if (header().put.load(std::memory_order_acquire) <= taken_) {
      throw ProtocolError("mproc: a frame claims a payload in a shared-memory lane that holds none");
    }
    const Slot& slot = header().slots[taken_ % max_in_flight];
    const std::uint64_t offset = slot.offset;
    if (!fits(slot, size)) {
      throw ProtocolError("mproc: a shared-memory lane's table disagrees with its frame (" + std::to_string(size) +
                          " bytes)");
    }
    const std::size_t mapped = view_bytes_;
    if (!map_view(offset + size)) {
      throw SharedMemoryFull("mproc: no address space left to map a payload of " + std::to_string(size) +
                             " bytes from a pool's shared-memory lane (the address-space limit, RLIMIT_AS or "
                             "`ulimit -v`, " +
                             address_space_limit_text() + ")");
    }
    viewed_offset_ = offset;
    if (offset + size > mapped) prefault(data() + offset, size, false);
    return {data() + offset, size};
  }
  /// Receiver: done with the payload of `size` bytes that view() returned last; its
  /// room is free again.
  void release(std::size_t size) noexcept {
    const std::size_t end = viewed_offset_ + size;
    if (end > kept_bytes) {
      const std::size_t from = page_round_up(std::max(viewed_offset_, kept_bytes));
      (void)::madvise(data() + from, page_round_up(end) - from, MADV_REMOVE);
    }
    trim_view();
    header().taken.store(++taken_, std::memory_order_release);
  }
  /// Forget the payloads of a side that died (a new worker takes the slot, with an
  /// empty lane). Only while no other process uses the lane.
  void reset() noexcept {
    if (!header_) return;  // no lane (RLIMIT_FSIZE)
    header().put.store(0, std::memory_order_relaxed);
    header().taken.store(0, std::memory_order_release);
    put_ = 0;
    taken_ = 0;
    end_ = 0;
    viewed_offset_ = 0;
  }
  /// Receiver: drops the next payload, of `size` bytes, unread (its chunk was taken
  /// back); its room is free again. Its pages beyond kept_bytes go back to the system
  /// as in release(), unless this process cannot map them: then they stay with the
  /// lane until a later payload there is released.
  void discard(std::size_t size) noexcept {
    if (!header_ || header().put.load(std::memory_order_acquire) <= taken_) return;  // none: a frame that lied
    const Slot& slot = header().slots[taken_ % max_in_flight];
    viewed_offset_ = slot.offset;
    if (fits(slot, size) && map_view(slot.offset + size)) return release(size);
    header().taken.store(++taken_, std::memory_order_release);
  }

 private:
  struct Slot {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
  };
  /// Whether the table's entry for the next payload says what its frame says, inside the lane.
  bool fits(const Slot& slot, std::size_t size) const noexcept {
    return slot.size == size && size <= capacity_ && slot.offset <= capacity_ - size;
  }
  struct Header {
    alignas(64) std::atomic<std::uint64_t> put{0};    // payloads put, ever (the sender writes it)
    alignas(64) std::atomic<std::uint64_t> taken{0};  // payloads released, ever (the receiver writes it)
    alignas(64) Slot slots[max_in_flight];            // where payload i lies: slots[i % max_in_flight]
  };
  static_assert(sizeof(Header) <= header_bytes);
  Header& header() const noexcept { return *reinterpret_cast<Header*>(header_.get()); }
  std::byte* data() const noexcept { return view_ + header_bytes; }

  /// Maps this side's view of the data over at least `size` bytes; false if this
  /// process has no address space left for it.
  bool map_view(std::size_t size) noexcept {
    if (size <= view_bytes_) return true;
    const std::size_t want = std::min((size + view_step - 1) / view_step * view_step, capacity_);
    void* p = view_ == nullptr ? MAP_FAILED
                               : ::mremap(view_, header_bytes + view_bytes_, header_bytes + want, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) {
      unmap_view();  // what it held is worth less than the address space it takes
      p = ::mremap(header_.get(), 0, header_bytes + want, MREMAP_MAYMOVE);  // the same file, longer
      if (p == MAP_FAILED) return false;
    }
    view_ = static_cast<std::byte*>(p);
    mapped_here().fetch_add(want - view_bytes_);
    view_bytes_ = want;
    return true;
  }
  /// Gives back the address space of a view grown past what is kept.
  void trim_view() noexcept {
    if (view_bytes_ > kept_bytes + view_step) return unmap_view();
    const auto limit = address_space_limit();
    if (limit && mapped_here().load() > *limit / 8) unmap_view();
  }
  void unmap_view() noexcept {
    if (view_ != nullptr) ::munmap(view_, header_bytes + view_bytes_);
    mapped_here().fetch_sub(view_bytes_);
    view_ = nullptr;
    view_bytes_ = 0;
  }
  /// The bytes the views of all lanes map in this process.
  static std::atomic<std::size_t>& mapped_here() noexcept {
    static std::atomic<std::size_t> bytes{0};
    return bytes;
  }

  // The most this lane carries: capacity, or what fits under the file-size limit
  // (0: no lane, and no header_). Set before the workers are forked: both sides see it.
  std::size_t capacity_ = capacity;
  std::unique_ptr<std::byte, Unmap> header_{nullptr, Unmap{header_bytes}};  // inherited by the workers
  // This process's view of the lane, header included, and how much data it covers
  // (each side maps its own).
  std::byte* view_ = nullptr;
  std::size_t view_bytes_ = 0;
  // The sender's own account of what it put: how many, where each in flight starts,
  // where the last one ends (the header's copy is the receiver's to read).
  std::uint64_t put_ = 0;
  std::size_t starts_[max_in_flight] = {};
  std::size_t end_ = 0;
  // The receiver's: how many it released, where the one it viewed last lies.
  std::uint64_t taken_ = 0;
  std::size_t viewed_offset_ = 0;
};

}  // namespace mproc::detail
