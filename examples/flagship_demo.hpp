// The flagship demo, serial vs Pool, written once for any pool type: flagship_demo.cpp
// runs it on mproc::Pool, flagship_demo_mpi.cpp on a Pool over the ranks of an MPI job.
//
// cube(n) is the sum of i^3 for i < n, as in the Python version, but modulo a prime:
// the reduction then needs every step in order, so the compiler can neither replace
// the loop by a closed form nor vectorize it. Both runs call the same function.
#pragma once

#include <mproc/mproc.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

inline constexpr std::uint64_t prime = 1'000'000'007;

inline std::uint64_t cube(std::uint64_t number) {
  std::uint64_t total = 0;
  for (std::uint64_t i = 0; i < number; ++i) total = (total + i * i % prime * i) % prime;
  return total;
}

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// The demo on a PoolType<F>, made as mproc::Pool is: (fn, PoolOptions). Returns
/// main's exit code.
template <template <class> class PoolType>
int run_flagship_demo(int argc, char** argv) {
  const double scale = argc > 1 ? std::atof(argv[1]) : 1.0;
  if (!(scale > 0)) {
    std::fprintf(stderr, "usage: %s [scale > 0]\n", argv[0]);
    return 2;
  }
  // The work grows with N^2 (cube(n) takes n steps).
  const auto n = static_cast<std::uint64_t>(std::llround(45000 * std::sqrt(scale)));
  std::vector<std::uint64_t> numbers(n);
  for (std::uint64_t i = 0; i < n; ++i) numbers[i] = i;
  std::printf("cube(n) for n in range(%llu), %.3g billion steps\n", static_cast<unsigned long long>(n),
              static_cast<double>(n) * static_cast<double>(n - 1) / 2e9);
  std::printf("cores: %zu\n", mproc::cpu_count());

  auto start = std::chrono::steady_clock::now();
  std::vector<std::uint64_t> serial;
  serial.reserve(n);
  for (std::uint64_t x : numbers) serial.push_back(cube(x));
  const double serial_time = seconds_since(start);
  std::printf("serial: %.3f s\n", serial_time);

  start = std::chrono::steady_clock::now();  // as in the Python version, starting the pool counts
  PoolType<decltype(&cube)> p(cube, {.processes = mproc::cpu_count()});
  std::vector<std::uint64_t> parallel = p.map(numbers);
  p.close();
  p.join();
  const double pool_time = seconds_since(start);
  std::printf("pool:   %.3f s (%zu worker processes)\n", pool_time, p.processes());
  std::printf("speedup: %.2fx\n", serial_time / pool_time);

  // Sanity check of cube itself: the sum of i^3 for i < m is (m(m-1)/2)^2.
  const std::uint64_t m = n - 1, half = m * (m - 1) / 2 % prime;
  const bool closed_form = serial.back() == half * half % prime;
  if (parallel != serial || !closed_form) {
    std::printf("results DIFFER (closed form %s)\n", closed_form ? "ok" : "wrong");
    return 1;
  }
  std::printf("results match: %zu values, and cube(%llu) equals the closed form\n", parallel.size(),
              static_cast<unsigned long long>(m));
  return 0;
}
