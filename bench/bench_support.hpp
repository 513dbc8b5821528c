#pragma once
// What every mproc benchmark program shares: a size scale (--scale=0.001 runs every
// case in moments, for the smoke test), result checks that make the program fail
// instead of timing wrong answers, and main().

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace mproc_bench {

/// The factor every workload size is multiplied by (--scale=X; 1 by default).
inline double& scale_factor() {
  static double factor = 1.0;
  return factor;
}

/// n times the scale, and at least min.
inline std::size_t scaled(std::size_t n, std::size_t min = 1) {
  const double v = std::round(static_cast<double>(n) * scale_factor());
  return std::max(min, static_cast<std::size_t>(v));
}

/// Seconds from start until now, on the steady clock.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

inline bool& any_check_failed() {
  static bool failed = false;
  return failed;
}

/// Stops the benchmark with an error unless ok: a wrong result must not be timed.
/// The program then exits with 1. Returns ok.
inline bool check(benchmark::State& state, bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "check failed: %s\n", what);
    any_check_failed() = true;
    state.SkipWithError(what);
  }
  return ok;
}

/// Takes --scale=X out of the arguments, then runs the benchmarks Google Benchmark's
/// own flags select. Exits with 1 if a check failed.
inline int run(int argc, char** argv) {
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    constexpr const char* flag = "--scale=";
    if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0) {
      scale_factor() = std::atof(argv[i] + std::strlen(flag));
      if (!(scale_factor() > 0)) {
        std::fprintf(stderr, "%s: --scale needs a number > 0\n", argv[0]);
        return 2;
      }
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return any_check_failed() ? 1 : 0;
}

}  // namespace mproc_bench
