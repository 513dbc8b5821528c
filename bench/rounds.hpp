#pragma once
// Variants of one workload timed in rounds, so that each is held against the others
// under the same machine load: one iteration runs every variant once, in an order
// that rotates from round to round, and each variant's counter is its median rate.
// The automatic chunking against a sweep of fixed chunksizes is the main use.

#include "bench_support.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace mproc_bench {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
}

/// One way of doing the timed call.
struct Variant {
  std::string name;              // its counter
  std::size_t items;             // what its rate counts
  std::function<bool()> timed;   // the call; false if its results were wrong
  std::function<void()> before = {};  // untimed, right before each call (may be empty)
};

/// Runs every variant once per iteration, the order rotating with `round` (which
/// outlives the call: a round of long tasks takes seconds, so each repetition may be a
/// single iteration, and the order must still rotate). Sets each variant's counter to
/// its median rate. Returns false, and fails the benchmark, if a result was wrong.
inline bool timed_rounds(benchmark::State& state, const std::vector<Variant>& variants, std::size_t& round) {
  std::vector<std::vector<double>> rates(variants.size());
  bool ok = true;
  std::size_t items = 0;
  for (auto _ : state) {
    for (std::size_t k = 0; k < variants.size(); ++k) {
      const std::size_t v = (k + round) % variants.size();
      if (variants[v].before) variants[v].before();
      const auto start = std::chrono::steady_clock::now();
      ok = variants[v].timed() && ok;
      rates[v].push_back(static_cast<double>(variants[v].items) / seconds_since(start));
      items += variants[v].items;
    }
    ++round;
  }
  if (!check(state, ok, "every variant returned the right results")) return false;
  for (std::size_t v = 0; v < variants.size(); ++v) state.counters[variants[v].name] = median(rates[v]);
  state.SetItemsProcessed(static_cast<std::int64_t>(items));
  return true;
}

/// A variant's counter for a chunksize: "auto" (0: automatic) or "chunksize:N".
inline std::string chunksize_name(std::size_t chunksize) {
  return chunksize == 0 ? "auto" : "chunksize:" + std::to_string(chunksize);
}

/// 0 (the automatic chunking), then the sweep.
inline std::vector<std::size_t> auto_and(const std::vector<std::size_t>& sweep) {
  std::vector<std::size_t> all{0};
  all.insert(all.end(), sweep.begin(), sweep.end());
  return all;
}

/// map(xs) with the automatic chunking (counter "auto") and with each chunksize of
/// the sweep ("chunksize:N"), each after `before` if given. Every result must equal
/// expected.
template <class P, class T, class R>
std::vector<Variant> map_variants(P& pool, const std::vector<T>& xs, const std::vector<R>& expected,
                                  const std::vector<std::size_t>& sweep, std::function<void()> before = {}) {
  std::vector<Variant> variants;
  for (std::size_t chunksize : auto_and(sweep)) {
    variants.push_back({chunksize_name(chunksize), xs.size(),
                        [&pool, &xs, &expected, chunksize] { return pool.map(xs, chunksize) == expected; }, before});
  }
  return variants;
}

/// Counters "best" and "best_chunksize": the best of the sweep's "chunksize:N".
inline void best_of_sweep(benchmark::State& state, const std::vector<std::size_t>& sweep) {
  double best = 0, best_chunksize = 0;
  for (std::size_t chunksize : sweep) {
    const double rate = state.counters[chunksize_name(chunksize)];
    if (rate > best) {
      best = rate;
      best_chunksize = static_cast<double>(chunksize);
    }
  }
  state.counters["best"] = best;
  state.counters["best_chunksize"] = best_chunksize;
}

/// The automatic chunking against fixed chunksizes, on the same pool and input:
/// counters auto, "chunksize:N" for each of the sweep, best and best_chunksize.
template <class P, class T, class R>
void chunking_rounds(benchmark::State& state, P& pool, const std::vector<T>& xs, const std::vector<R>& expected,
                     const std::vector<std::size_t>& sweep, std::size_t& round) {
  if (timed_rounds(state, map_variants(pool, xs, expected, sweep), round)) best_of_sweep(state, sweep);
}

}  // namespace mproc_bench
