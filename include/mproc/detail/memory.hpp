#pragma once
// The resident memory of this process, for PoolOptions::max_memory_per_child.

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>

namespace mproc::detail {

/// Resident set size in bytes (from /proc/self/statm), or 0 if it can't be read.
inline std::size_t resident_bytes() noexcept {
  const int fd = ::open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[128];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  char* rest = nullptr;
  std::strtoull(buf, &rest, 10);                           // total program size
  const unsigned long long pages = std::strtoull(rest, nullptr, 10);  // resident
  return static_cast<std::size_t>(pages) * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

}  // namespace mproc::detail
