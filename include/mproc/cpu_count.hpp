#pragma once
// cpu_count(): the cores this process may run on (Python's os.process_cpu_count).

#include <sched.h>

#include <cstddef>
#include <thread>

namespace mproc {

/// The number of CPUs this process may use: its affinity mask (which respects
/// taskset and container cpusets), or the hardware count if that is unavailable.
inline std::size_t cpu_count() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return static_cast<std::size_t>(n);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : hw;
}

}  // namespace mproc
