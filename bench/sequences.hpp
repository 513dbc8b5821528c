#pragma once
// Sequences of calls on one pool: what a call measured about its tasks must not carry
// into the next. Each timed call runs right after others of a different kind (quick
// calls before slow tasks, a slow one before quick tasks, quick calls around a map of
// slow ones), and is held against the best fixed chunksize for it, timed in the same
// rounds (rounds.hpp). The tasks nap: they sleep for some milliseconds (0:
// a quick task), so the rates measure how the pool shares the work out, not the CPU.
// The same workloads run on the local Pool (bench_pool.cpp, with twins in
// bench/python/bench_pool.py) and on the Pool over MPI (bench_mpi.cpp).

#include "bench_support.hpp"
#include "rounds.hpp"

#include <mproc/async_result.hpp>

#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace mproc_bench {

inline constexpr int slow_ms = 20;
inline constexpr std::size_t slow_tasks = 40;
inline constexpr std::size_t quick_tasks = 1'000'000;  // through map: about 10 ms
inline constexpr std::size_t quick_calls = 10'000;   // through apply_async
inline constexpr std::size_t interleaved_quick_tasks = 100;  // before the map, and again after it
/// Fixed chunksizes for 40 slow tasks (20: one chunk per worker of 2) and for 10^6
/// quick ones (500000: one chunk per worker of 2).
inline const std::vector<std::size_t> slow_sweep{1, 2, 4, 10, 20};
inline const std::vector<std::size_t> quick_sweep{4096, 16384, 65536, 262144, 500000};

/// Napping tasks on a pool whose F returns the milliseconds it napped: make(ms) is
/// the pool's argument for a nap of ms.
template <class P, class Make>
class Naps {
 public:
  using Arg = decltype(std::declval<const Make&>()(0));
  using R = typename P::result_type;

  Naps(P& pool, Make make) : pool_(pool), make_(std::move(make)) {}

  Arg task(int ms) const { return make_(ms); }
  std::vector<Arg> tasks(std::size_t n, int ms) const { return std::vector<Arg>(n, make_(ms)); }
  static std::vector<R> results(std::size_t n, int ms) { return std::vector<R>(n, static_cast<R>(ms)); }
  /// One apply of a nap of ms: a call that takes ms, untimed before the timed one.
  std::function<void()> apply(int ms) const {
    return [this, ms] { (void)pool_.apply(make_(ms)); };
  }
  /// Quick calls, untimed before a timed one: 100 quick apply, one after the other
  /// (enough for any estimate of task times over recent calls to say "quick"; one
  /// worker may run them all).
  std::function<void()> quick_calls() const {
    return [this] {
      for (int i = 0; i < 100; ++i) (void)pool_.apply(make_(0));
    };
  }
  /// n apply_async of naps of ms, then get each: whether every result is right.
  bool apply_async_each(std::size_t n, int ms) const {
    std::vector<mproc::AsyncResult<R>> results;
    results.reserve(n);
    for (std::size_t i = 0; i < n; ++i) results.push_back(pool_.apply_async(make_(ms)));
    bool ok = true;
    for (auto& r : results) ok = r.get() == static_cast<R>(ms) && ok;
    return ok;
  }
  P& pool() const { return pool_; }

 private:
  P& pool_;
  Make make_;
};

/// Right after quick calls, 40 tasks of 20 ms: through map, with the automatic
/// chunking and each chunksize of slow_sweep, and through 40 apply_async then get
/// each. Counters: auto, chunksize:N, best, best_chunksize, apply_async.
template <class P, class Make>
void after_quick(benchmark::State& state, const Naps<P, Make>& naps, std::size_t& round) {
  const std::size_t n = scaled(slow_tasks);
  const auto xs = naps.tasks(n, slow_ms);
  const auto expected = naps.results(n, slow_ms);
  auto variants = map_variants(naps.pool(), xs, expected, slow_sweep, naps.quick_calls());
  variants.push_back({"apply_async", n, [&] { return naps.apply_async_each(n, slow_ms); }, naps.quick_calls()});
  if (timed_rounds(state, variants, round)) best_of_sweep(state, slow_sweep);
}

/// Right after a slow apply (20 ms), quick tasks: 10^6 through map, with the
/// automatic chunking and each chunksize of quick_sweep, and 10^4 through
/// apply_async then get each; and the same apply_async right after a quick apply
/// (apply_async_after_quick): what they cost with nothing slow before. Counters:
/// auto, chunksize:N, best, best_chunksize, apply_async, apply_async_after_quick.
template <class P, class Make>
void after_slow(benchmark::State& state, const Naps<P, Make>& naps, std::size_t& round) {
  const std::size_t n = scaled(quick_tasks), m = scaled(quick_calls);
  const auto xs = naps.tasks(n, 0);
  const auto expected = naps.results(n, 0);
  auto variants = map_variants(naps.pool(), xs, expected, quick_sweep, naps.apply(slow_ms));
  variants.push_back({"apply_async", m, [&] { return naps.apply_async_each(m, 0); }, naps.apply(slow_ms)});
  variants.push_back({"apply_async_after_quick", m, [&] { return naps.apply_async_each(m, 0); }, naps.apply(0)});
  // Quick tasks are timed in milliseconds, where a fresh pool's first calls (memory
  // first touched, caches) would weigh on whichever variant comes first.
  for (const Variant& v : variants) (void)v.timed();
  if (timed_rounds(state, variants, round)) best_of_sweep(state, quick_sweep);
}

/// Calls interleaved: 100 quick apply_async, map_async of 40 tasks of 20 ms, 100
/// quick apply_async more, then every result; the map with the automatic chunking
/// and each chunksize of slow_sweep. Counters: auto, chunksize:N, best, best_chunksize.
template <class P, class Make>
void interleaved(benchmark::State& state, const Naps<P, Make>& naps, std::size_t& round) {
  const std::size_t n = scaled(slow_tasks), m = scaled(interleaved_quick_tasks);
  const auto xs = naps.tasks(n, slow_ms);
  const auto expected = naps.results(n, slow_ms);
  std::vector<Variant> variants;
  for (std::size_t chunksize : auto_and(slow_sweep)) {
    variants.push_back({chunksize_name(chunksize), n + 2 * m, [&, chunksize] {
                          P& pool = naps.pool();
                          std::vector<mproc::AsyncResult<typename Naps<P, Make>::R>> quick;
                          for (std::size_t i = 0; i < m; ++i) quick.push_back(pool.apply_async(naps.task(0)));
                          auto slow = pool.map_async(xs, chunksize);
                          for (std::size_t i = 0; i < m; ++i) quick.push_back(pool.apply_async(naps.task(0)));
                          bool ok = slow.get() == expected;
                          for (auto& r : quick) ok = r.get() == 0 && ok;
                          return ok;
                        }});
  }
  if (timed_rounds(state, variants, round)) best_of_sweep(state, slow_sweep);
}

}  // namespace mproc_bench
