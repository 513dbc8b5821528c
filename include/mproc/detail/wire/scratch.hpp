#pragma once
// A per-thread buffer to encode outgoing items into, so that sending many small
// items allocates nothing.

#include <mproc/detail/wire/bytes.hpp>

#include <cstddef>

namespace mproc::detail {

/// Hands out this thread's scratch buffer, cleared; gives its memory back when
/// released after a big item (so one 100 MiB message does not pin 100 MiB per
/// thread). A nested user (an item whose encoding sends something itself) gets a
/// buffer of its own instead of clobbering the outer one.
class ScratchBytes {
 public:
  ScratchBytes() noexcept : bytes_(in_use() ? &own_ : &shared()) {
    if (bytes_ != &own_) in_use() = true;
    bytes_->clear();
  }
  ScratchBytes(const ScratchBytes&) = delete;
  ScratchBytes& operator=(const ScratchBytes&) = delete;
  ~ScratchBytes() {
    if (bytes_ == &own_) return;
    if (bytes_->size() > keep_bytes) *bytes_ = Bytes();
    in_use() = false;
  }
  Bytes& get() noexcept { return *bytes_; }

 private:
  static constexpr std::size_t keep_bytes = std::size_t{1} << 20;
  static Bytes& shared() noexcept {
    thread_local Bytes bytes;
    return bytes;
  }
  static bool& in_use() noexcept {
    thread_local bool busy = false;
    return busy;
  }
  Bytes own_;
  Bytes* bytes_;
};

}  // namespace mproc::detail
