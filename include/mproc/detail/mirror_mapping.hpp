#pragma once
// MirrorMapping: shared memory mapped twice, back to back, so that a ring buffer's
// records never have a seam: bytes written past the end land at the start. Shared
// with every process forked after it was made. The memory is a memfd (shmem): it is
// reserved, not committed, so pages cost memory only once written, and release()
// hands written pages back.

#include <mproc/detail/fd.hpp>
#include <mproc/errors.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <memory>

namespace mproc::detail {

inline std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return size;
}

/// Deleter of a mapping of `bytes` bytes.
struct Unmap {
  std::size_t bytes = 0;
  void operator()(std::byte* p) const noexcept { ::munmap(p, bytes); }
};

class MirrorMapping {
 public:
  MirrorMapping() = default;
  /// size is rounded up to whole pages.
  explicit MirrorMapping(std::size_t size) {
    const std::size_t page = page_size();
    size = (size + page - 1) / page * page;
    Fd file(::memfd_create("mproc-ring", MFD_CLOEXEC));
    if (!file) throw OSError("memfd_create", errno);
    if (::ftruncate(file.get(), static_cast<off_t>(size)) != 0) throw OSError("ftruncate(memfd)", errno);
    // Reserve the address range for both views, then map the file over each half.
    void* base = ::mmap(nullptr, 2 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) throw OSError("mmap(reserve)", errno);
    map_ = {static_cast<std::byte*>(base), Unmap{2 * size}};
    for (std::byte* half : {map_.get(), map_.get() + size}) {
      if (::mmap(half, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, file.get(), 0) == MAP_FAILED) {
        throw OSError("mmap(memfd)", errno);
      }
    }
  }  // the mappings keep the memfd alive; its descriptor closes here

  /// The first view; [data(), data() + 2 * size()) is valid, the second half
  /// showing the same bytes as the first.
  std::byte* data() const noexcept { return map_.get(); }
  std::size_t size() const noexcept { return map_.get_deleter().bytes / 2; }

  /// Gives the whole pages inside [offset, offset + length) back to the system, in
  /// every process; they read as zeros afterwards. Best effort.
  void release(std::size_t offset, std::size_t length) const noexcept {
    const std::size_t page = page_size();
    const std::size_t first = (offset + page - 1) / page * page;
    const std::size_t last = (offset + length) / page * page;
    if (last > first) (void)::madvise(data() + first, last - first, MADV_REMOVE);
  }

 private:
  std::unique_ptr<std::byte, Unmap> map_;
};

}  // namespace mproc::detail
