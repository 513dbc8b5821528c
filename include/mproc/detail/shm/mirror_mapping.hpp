#pragma once
// A part of a memfd mapped twice, back to back, so that a ring buffer's records never
// have a seam: bytes written past the end land at the start. The mapping is shared
// with every process forked after it was made.

#include <mproc/detail/shm/memfd.hpp>
#include <mproc/errors.hpp>

#include <sys/mman.h>

#include <cerrno>
#include <cstddef>

namespace mproc::detail {

/// Maps [offset, offset + size) of fd twice in a row (size and offset in whole
/// pages): [p, p + 2 * size) is valid and its second half shows the same bytes as
/// the first. nullptr if this process has no address space left for it; unmap with
/// unmap_mirrored.
inline std::byte* map_mirrored(int fd, std::size_t offset, std::size_t size) {
  // Reserve the address range for both views, then map the file over each half.
  void* base = ::mmap(nullptr, 2 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    if (errno == ENOMEM) return nullptr;
    throw OSError("mmap(reserve)", errno);
  }
  auto* p = static_cast<std::byte*>(base);
  for (std::byte* half : {p, p + size}) {
    if (::mmap(half, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, static_cast<off_t>(offset)) ==
        MAP_FAILED) {
      const int err = errno;
      ::munmap(p, 2 * size);
      if (err == ENOMEM) return nullptr;
      throw OSError("mmap(memfd)", err);
    }
  }
  return p;
}

inline void unmap_mirrored(std::byte* p, std::size_t size) noexcept {
  if (p != nullptr) ::munmap(p, 2 * size);
}

}  // namespace mproc::detail
