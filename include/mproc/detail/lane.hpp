#pragma once
// A lane: shared memory beside a pipe for payloads too big to be worth pushing
// through it. A pipe copies every byte twice (into the kernel and out again) and
// wakes the reader once per buffer-full; a lane is written once by the sender and
// decoded in place by the receiver. One sender and one receiver, frames in order,
// one payload in the lane at a time: the sender uses the lane only when it is free
// (else the pipe, so nothing ever waits for it), the receiver frees it when done.
//
// The lane is a memfd that each side maps only as far as the payloads it handles
// reach (the frame says how far), so a Pool costs little address space (`ulimit -v`)
// until big payloads travel. A sender that cannot map a payload (no address space
// left) sends it through the pipe instead. No descriptor is kept: only the header
// page is mapped when the lane is made, and the workers, forked later, inherit that
// mapping; each side maps the data by duplicating it, longer (mremap with an old size
// of 0 maps the same file from the same offset), so no child ever holds a copy of a
// pool's descriptor and a worker needs no /proc access to its parent.

#include <mproc/detail/memfd.hpp>
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
  /// Memory and mapping kept after a payload is consumed, so that the next big one
  /// needs no page faults; beyond this they go back to the system. Under an
  /// address-space limit, the lanes of a process keep at most an eighth of it mapped
  /// (Pool(16) would otherwise keep 2 GiB), so that a big payload still finds room.
  static constexpr std::size_t kept_bytes = std::size_t{64} << 20;
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

  /// Sender: copies the payload into the lane if it is free, big enough to be worth
  /// it, and this process can map it; returns whether it did (if not, send it inline).
  bool try_put(std::span<const std::byte> payload) noexcept {
    if (payload.size() < min_payload || payload.size() > capacity_) return false;
    if (header().busy.load(std::memory_order_acquire) != 0) return false;
    if (!map_view(payload.size())) return false;
    std::memcpy(data(), payload.data(), payload.size());
    header().busy.store(1, std::memory_order_release);
    trim_view();
    return true;
  }
  /// Receiver: the payload of a frame flagged frame_flag_in_lane. The size comes
  /// from the sender's frame header: one the lane cannot hold is a ProtocolError
  /// (reading it, or release() returning its pages, would reach past the lane).
  /// Throws SharedMemoryFull if this process has no address space left to map it.
  std::span<const std::byte> view(std::size_t size) {
    if (size > capacity_ || !header_) {
      throw ProtocolError("mproc: a frame claims " + std::to_string(size) + " bytes in a shared-memory lane of " +
                          std::to_string(capacity_));
    }
    (void)header().busy.load(std::memory_order_acquire);
    if (!map_view(size)) {
      throw SharedMemoryFull("mproc: no address space left to map a payload of " + std::to_string(size) +
                             " bytes from a pool's shared-memory lane (the address-space limit, RLIMIT_AS or "
                             "`ulimit -v`, " + address_space_limit_text() + ")");
    }
    return {data(), size};
  }
  /// Receiver: done with the payload of `size` bytes (one view() accepted); the lane
  /// is free again.
  void release(std::size_t size) noexcept {
    if (size > kept_bytes) (void)::madvise(data() + kept_bytes, page_round_up(size) - kept_bytes, MADV_REMOVE);
    trim_view();
    header().busy.store(0, std::memory_order_release);
  }
  /// Receiver: drops the payload of `size` bytes unread (its chunk was taken back);
  /// the lane is free again. Its pages beyond kept_bytes go back to the system as in
  /// release(), unless this process cannot map them: then they stay with the lane
  /// until a later payload as big is released.
  void discard(std::size_t size) noexcept {
    if (size <= capacity && map_view(size)) return release(size);
    reset();
  }
  /// Forget a payload whose receiver died (a new worker takes the slot).
  void reset() noexcept {
    if (header_) header().busy.store(0, std::memory_order_release);
  }

 private:
  struct alignas(64) Header {
    std::atomic<std::uint32_t> busy{0};
  };
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
};

}  // namespace mproc::detail
