#pragma once
// Running one workload in several processes at once, as the shared-state benchmarks
// do: every call starts the Processes and joins them, so the time includes the forks
// (about a millisecond each), a small share at those benchmarks' sizes.

#include <mproc/process.hpp>

#include <stdexcept>
#include <type_traits>
#include <vector>

namespace mproc_bench {

/// Runs target in n Processes at once and joins them; whether all exited with 0.
/// target may take the process's number (0 to n - 1), and may return whether its
/// result was right (false makes its process fail).
template <class Target>
bool run_in_processes(int n, const Target& target) {
  std::vector<mproc::Process> processes;
  for (int p = 0; p < n; ++p) {
    processes.emplace_back([call = target, p]() mutable {  // a copy: Processes may change theirs
      bool ok = true;
      if constexpr (std::is_invocable_v<Target&, int>) {
        if constexpr (std::is_same_v<std::invoke_result_t<Target&, int>, bool>) ok = call(p);
        else call(p);
      } else {
        call();
      }
      if (!ok) throw std::runtime_error("a benchmark process got a wrong result");
    });
  }
  for (auto& process : processes) process.start();
  bool ok = true;
  for (auto& process : processes) {
    process.join();
    ok = ok && process.exitcode() == 0;
  }
  return ok;
}

}  // namespace mproc_bench
