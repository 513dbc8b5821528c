#pragma once
// A lane: shared memory beside a pipe for payloads too big to be worth pushing
// through it. A pipe copies every byte twice (into the kernel and out again) and
// wakes the reader once per buffer-full; a lane is written once by the sender and
// decoded in place by the receiver. One sender and one receiver, frames in order,
// one payload in the lane at a time: the sender uses the lane only when it is free
// (else the pipe, so nothing ever waits for it), the receiver frees it when done.

#include <mproc/detail/shared_mapping.hpp>
#include <mproc/errors.hpp>

#include <sys/mman.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <new>
#include <span>
#include <string>

namespace mproc::detail {

class Lane {
 public:
  /// Payloads from this size up go through the lane.
  static constexpr std::size_t min_payload = std::size_t{256} << 10;
  /// Address space reserved per lane; pages are used only as payloads need them.
  static constexpr std::size_t capacity = std::size_t{2} << 30;
  /// Pages kept after a payload is consumed (so the next big one needs no page
  /// faults); beyond this they go back to the system.
  static constexpr std::size_t kept_bytes = std::size_t{64} << 20;
  /// The lane's own header before the data (its mapping is header_bytes + capacity).
  static constexpr std::size_t header_bytes = 4096;  // keeps the data page-aligned

  Lane() : memory_(header_bytes + capacity, /*noreserve=*/true) { new (memory_.data()) Header(); }

  /// Sender: copies the payload into the lane if it is free and big enough to be
  /// worth it; returns whether it did (if not, send it inline).
  bool try_put(std::span<const std::byte> payload) noexcept {
    if (payload.size() < min_payload || payload.size() > capacity) return false;
    if (header().busy.load(std::memory_order_acquire) != 0) return false;
    std::memcpy(data(), payload.data(), payload.size());
    header().busy.store(1, std::memory_order_release);
    return true;
  }
  /// Receiver: the payload of a frame flagged frame_flag_in_lane. The size comes
  /// from the sender's frame header: one the lane cannot hold is a ProtocolError
  /// (reading it, or release() returning its pages, would reach past the lane).
  std::span<const std::byte> view(std::size_t size) const {
    if (size > capacity) {
      throw ProtocolError("mproc: a frame claims " + std::to_string(size) + " bytes in a shared-memory lane of " +
                          std::to_string(capacity));
    }
    (void)header().busy.load(std::memory_order_acquire);
    return {data(), size};
  }
  /// Receiver: done with the payload of `size` bytes (one view() accepted); the lane
  /// is free again.
  void release(std::size_t size) noexcept {
    if (size > kept_bytes) ::madvise(data() + kept_bytes, size - kept_bytes, MADV_REMOVE);
    header().busy.store(0, std::memory_order_release);
  }
  /// Forget a payload whose receiver died (a new worker takes the slot).
  void reset() noexcept { header().busy.store(0, std::memory_order_release); }

 private:
  struct alignas(64) Header {
    std::atomic<std::uint32_t> busy{0};
  };
  Header& header() const noexcept { return *memory_.as<Header>(); }
  std::byte* data() const noexcept { return memory_.as<std::byte>() + header_bytes; }

  SharedMapping memory_;
};

}  // namespace mproc::detail
