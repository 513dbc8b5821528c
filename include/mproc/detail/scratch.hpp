#pragma once
// A per-thread buffer to encode outgoing items into, so that sending many small
// items allocates nothing.

#include <mproc/detail/bytes.hpp>

#include <cstddef>

namespace mproc::detail {

/// Hands out this thread's scratch buffer, cleared; gives its memory back when
/// released after a big item (so one 100 MiB message does not pin 100 MiB per thread).
class ScratchBytes {
 public:
  ScratchBytes() noexcept : bytes_(buffer()) { bytes_.clear(); }
  ScratchBytes(const ScratchBytes&) = delete;
  ScratchBytes& operator=(const ScratchBytes&) = delete;
  ~ScratchBytes() {
    if (bytes_.size() > keep_bytes) bytes_ = Bytes();
  }
  Bytes& get() noexcept { return bytes_; }

 private:
  static constexpr std::size_t keep_bytes = std::size_t{1} << 20;
  static Bytes& buffer() noexcept {
    thread_local Bytes bytes;
    return bytes;
  }
  Bytes& bytes_;
};

}  // namespace mproc::detail
