#pragma once
// The functions the benchmarks run in workers. bench/python/workloads.py defines the
// same functions for the Python side: change one, change its twin.

#include <time.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

namespace mproc_bench {

/// The tiny task: x * x (Python: `def square(x): return x * x`).
inline long square(int x) { return static_cast<long>(x) * x; }

/// starmap's task: a * b.
inline long multiply(int a, int b) { return static_cast<long>(a) * b; }

/// The payload round trip: the bytes go to a worker and come back.
inline std::vector<char> echo(std::vector<char> payload) { return payload; }
/// The same for doubles (Python: echo of an array('d')).
inline std::vector<double> echo_doubles(std::vector<double> payload) { return payload; }

/// size bytes, byte i being i * 131 % 251 (Python: payload_bytes(size)).
inline std::vector<char> payload_bytes(std::size_t size) {
  std::vector<char> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i * 131 % 251);
  return bytes;
}

/// size bytes of doubles, double i being i * 0.5 (Python: payload_doubles(size)).
inline std::vector<double> payload_doubles(std::size_t size) {
  std::vector<double> xs(size / sizeof(double));
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<double>(i) * 0.5;
  return xs;
}

/// Seed 001's CPU-bound task: the sum of i^3 for i < n, modulo a prime, so every step
/// depends on the one before (no closed form, no vectorizing). Costs n steps.
inline std::uint64_t cube(std::uint64_t n) {
  constexpr std::uint64_t prime = 1'000'000'007;
  std::uint64_t total = 0;
  for (std::uint64_t i = 0; i < n; ++i) total = (total + i * i % prime * i) % prime;
  return total;
}

/// The sequences' task (bench/sequences.hpp): sleeps ms milliseconds (0: returns at
/// once) and returns ms.
inline int nap(int ms) {
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

/// CPU time this thread has used, in nanoseconds.
inline std::int64_t thread_cpu_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

/// Keeps this thread's CPU busy for ns nanoseconds of CPU time (not wall time, so a
/// loaded machine stretches the run but not the work).
inline void burn_cpu(std::int64_t ns) {
  const std::int64_t end = thread_cpu_ns() + ns;
  while (thread_cpu_ns() < end) {
  }
}

/// How long uneven task i of n runs: 1 to 20 ms, deterministic in i. Most tasks are
/// short (1 + 19 u^4 ms, u spread evenly over [0, 1) by a golden-ratio step), and the
/// last 5% take the full 20 ms: a heavy tail at the end of the input, like files
/// sorted by size, which is where a fixed chunk size leaves one worker alone.
inline std::int64_t uneven_task_ns(std::int64_t i, std::int64_t n) {
  if (i >= n - n / 20) return 20'000'000;
  const double u = std::fmod(static_cast<double>(i) * 0.6180339887498949, 1.0);
  return static_cast<std::int64_t>((1.0 + 19.0 * u * u * u * u) * 1e6);
}

}  // namespace mproc_bench
