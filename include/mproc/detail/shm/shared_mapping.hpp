#pragma once
// SharedMapping: anonymous memory shared with every process forked after it was
// made (MAP_SHARED | MAP_ANONYMOUS). Nothing in /dev/shm, nothing to clean up: the
// kernel frees it when the last process that maps it is gone.

#include <mproc/errors.hpp>

#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <utility>

namespace mproc::detail {

class SharedMapping {
 public:
  SharedMapping() = default;
  /// noreserve: reserve address space only; pages are committed as they are touched.
  explicit SharedMapping(std::size_t bytes, bool noreserve = false) : size_(bytes) {
    if (bytes == 0) return;
    const int flags = MAP_SHARED | MAP_ANONYMOUS | (noreserve ? MAP_NORESERVE : 0);
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) throw OSError("mmap(shared anonymous)", errno);
    data_ = p;
  }
  SharedMapping(SharedMapping&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  SharedMapping& operator=(SharedMapping&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  SharedMapping(const SharedMapping&) = delete;
  SharedMapping& operator=(const SharedMapping&) = delete;
  ~SharedMapping() { reset(); }

  void* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }

 private:
  void reset() noexcept {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace mproc::detail
