// The Pool's benchmarks. Each one has a twin of the same name in
// bench/python/bench_pool.py, written the way a Python user would write it, and
// bench/compare.py prints them side by side with the machine's limits
// (bench_limits.cpp). Pools use one worker per core, as Python's Pool() does.
#include "baselines.hpp"
#include "bench_support.hpp"
#include "rounds.hpp"
#include "sequences.hpp"
#include "workloads.hpp"

#include <mproc/cpu_count.hpp>
#include <mproc/pool.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <numeric>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using mproc_bench::check;
using mproc_bench::scaled;
using mproc_bench::seconds_since;

std::vector<int> first_ints(std::size_t n) {
  std::vector<int> xs(n);
  std::iota(xs.begin(), xs.end(), 0);
  return xs;
}

bool all_squares(const std::vector<long>& out, std::size_t n) {
  if (out.size() != n) return false;
  for (std::size_t i = 0; i < n; ++i) {
    if (out[i] != mproc_bench::square(static_cast<int>(i))) return false;
  }
  return true;
}

/// The sum of square(i) for i < n.
long sum_of_squares(std::size_t n) {
  long sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += mproc_bench::square(static_cast<int>(i));
  return sum;
}

// ---------------------------------------------------------------------------- pool

// Fork the workers, then close and join: what a short-lived pool costs.
void pool_start_join(benchmark::State& state) {
  for (auto _ : state) {
    mproc::Pool pool(mproc_bench::square);
    pool.close();
    pool.join();
  }
}
BENCHMARK(pool_start_join)->UseRealTime()->Unit(benchmark::kMillisecond);

// pool.map(xs) over n ints with the default (automatic) chunking.
void map_ints(benchmark::State& state) {
  const std::size_t n = scaled(static_cast<std::size_t>(state.range(0)));
  const std::vector<int> xs = first_ints(n);
  mproc::Pool pool(mproc_bench::square);
  std::vector<long> out = pool.map(xs);  // warm-up
  for (auto _ : state) out = pool.map(xs);
  check(state, all_squares(out, n), "map returned every square in order");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(map_ints)->Arg(1'000'000)->Arg(10'000'000)->UseRealTime()->Unit(benchmark::kMillisecond);

// n apply_async calls (one task each), then get() on every result.
void apply_async(benchmark::State& state) {
  const std::size_t n = scaled(static_cast<std::size_t>(state.range(0)));
  mproc::Pool pool(mproc_bench::square);
  pool.apply(1);  // warm-up
  std::vector<mproc::AsyncResult<long>> results;
  results.reserve(n);
  long sum = 0;
  for (auto _ : state) {
    results.clear();
    for (std::size_t i = 0; i < n; ++i) results.push_back(pool.apply_async(static_cast<int>(i)));
    sum = 0;
    for (auto& r : results) sum += r.get();
  }
  check(state, sum == sum_of_squares(n), "every apply_async result arrived");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(apply_async)->Arg(10'000)->UseRealTime()->Unit(benchmark::kMillisecond);

// apply(x): one task to a worker and its result back before the next.
void apply_round_trip(benchmark::State& state) {
  mproc::Pool pool(mproc_bench::square);
  pool.apply(1);  // warm-up
  int i = 0;
  bool ok = true;
  for (auto _ : state) {
    ok = ok && pool.apply(i) == mproc_bench::square(i);
    i = (i + 1) % 1000;
  }
  check(state, ok, "apply returned the square");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(apply_round_trip)->UseRealTime();

// for r in pool.imap_unordered(xs, chunksize=1): one item per chunk.
void imap_unordered_cs1(benchmark::State& state) {
  const std::size_t n = scaled(static_cast<std::size_t>(state.range(0)));
  const std::vector<int> xs = first_ints(n);
  mproc::Pool pool(mproc_bench::square);
  pool.apply(1);  // warm-up
  long sum = 0;
  for (auto _ : state) {
    sum = 0;
    for (long r : pool.imap_unordered(xs, 1)) sum += r;
  }
  check(state, sum == sum_of_squares(n), "imap_unordered returned every square");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(imap_unordered_cs1)->Arg(20'000)->UseRealTime()->Unit(benchmark::kMillisecond);

// pool.starmap over n pairs (i, i % 1000).
void starmap_pairs(benchmark::State& state) {
  const std::size_t n = scaled(static_cast<std::size_t>(state.range(0)));
  std::vector<std::pair<int, int>> pairs(n);
  for (std::size_t i = 0; i < n; ++i) pairs[i] = {static_cast<int>(i), static_cast<int>(i % 1000)};
  mproc::Pool pool(mproc_bench::multiply);
  std::vector<long> out = pool.starmap(pairs);  // warm-up
  for (auto _ : state) out = pool.starmap(pairs);
  bool ok = out.size() == n;
  for (std::size_t i = 0; ok && i < n; ++i) ok = out[i] == mproc_bench::multiply(pairs[i].first, pairs[i].second);
  check(state, ok, "starmap returned every product in order");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(starmap_pairs)->Arg(1'000'000)->UseRealTime()->Unit(benchmark::kMillisecond);

// apply(payload) to a worker that returns it: the bytes cross twice, and both
// crossings count.
void payload_round_trip(benchmark::State& state) {
  const std::size_t size = scaled(static_cast<std::size_t>(state.range(0)));
  const std::vector<char> payload = mproc_bench::payload_bytes(size);
  mproc::Pool pool(mproc_bench::echo);
  std::vector<char> back = pool.apply(payload);  // warm-up
  for (auto _ : state) back = pool.apply(payload);
  check(state, back == payload, "the payload came back intact");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * size));
}
BENCHMARK(payload_round_trip)->Arg(1 << 20)->Arg(64 << 20)->UseRealTime()->Unit(benchmark::kMillisecond);

// The same bytes to a raw pipe echo child and back (RawPayloadEcho): the limit of
// payload_round_trip. It lives in this program, not in bench_limits, so that its
// repetitions interleave with payload_round_trip's and meet the same machine load;
// timed apart from it, so that neither disturbs the other's caches and pages.
void raw_payload_round_trip(benchmark::State& state) {
  const std::size_t size = scaled(static_cast<std::size_t>(state.range(0)));
  const std::vector<char> payload = mproc_bench::payload_bytes(size);
  mproc_bench::RawPayloadEcho raw;
  std::vector<char> back;
  bool ok = raw.round_trip(payload, back);  // warm-up
  for (auto _ : state) ok = raw.round_trip(payload, back) && ok;
  check(state, ok && back == payload, "the payload came back intact");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * size));
}
BENCHMARK(raw_payload_round_trip)->Arg(1 << 20)->Arg(64 << 20)->UseRealTime()->Unit(benchmark::kMillisecond);

// Many large items (64 of 1 MiB) through each call that carries many: big_items/<call>/
// <element>/<pool>. call: map_cs1 (chunksize 1), map (default chunking), imap and
// imap_unordered (chunksize 1, Python's default), apply_async (all submitted, then
// get() each), apply (one at a time: the first limit). element: char or double vectors. pool: warm (made and used before the
// timing) or fresh (made inside the timing, as a short program's pool is). Both ways
// count; the other limit is raw_big_items, the same items through a raw pipe echo.
constexpr std::size_t big_item_count = 64;
constexpr std::size_t big_item_bytes = std::size_t{1} << 20;
enum class BigCall { map_cs1, map, imap, imap_unordered, apply_async, apply };

template <class Pool, class T>
std::vector<T> big_items_round(Pool& pool, const std::vector<T>& items, BigCall call) {
  std::vector<T> out;
  out.reserve(items.size());
  switch (call) {
    case BigCall::map_cs1:
      return pool.map(items, 1);
    case BigCall::map:
      return pool.map(items);
    case BigCall::imap:
      for (auto& r : pool.imap(items, 1)) out.push_back(std::move(r));
      return out;
    case BigCall::imap_unordered:
      for (auto& r : pool.imap_unordered(items, 1)) out.push_back(std::move(r));
      std::sort(out.begin(), out.end(), [](const T& a, const T& b) { return a.front() < b.front(); });
      return out;
    case BigCall::apply_async: {
      std::vector<decltype(pool.apply_async(items.front()))> pending;
      pending.reserve(items.size());
      for (const T& x : items) pending.push_back(pool.apply_async(x));
      for (auto& p : pending) out.push_back(p.get());
      return out;
    }
    case BigCall::apply:
      for (const T& x : items) out.push_back(pool.apply(x));
      return out;
  }
  return out;
}

template <class T, class F>
void big_items(benchmark::State& state, F echo, std::vector<T> item, BigCall call, bool fresh) {
  std::vector<std::vector<T>> items(scaled(big_item_count, 2), item);
  for (std::size_t i = 0; i < items.size(); ++i) items[i].front() = static_cast<T>(i);  // told apart when unordered
  std::vector<std::vector<T>> out;
  if (fresh) {
    for (auto _ : state) {
      mproc::Pool pool(echo);
      out = big_items_round(pool, items, call);
    }
  } else {
    mproc::Pool pool(echo);
    out = big_items_round(pool, items, call);  // warm-up
    for (auto _ : state) out = big_items_round(pool, items, call);
  }
  check(state, out == items, "every item came back intact");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * items.size() * item.size() * sizeof(T)));
}

// The same items (the char ones) to a raw pipe echo child and back, one at a time:
// the limit of big_items.
void raw_big_items(benchmark::State& state) {
  std::vector<std::vector<char>> items(scaled(big_item_count, 2),
                                       mproc_bench::payload_bytes(scaled(big_item_bytes, 64)));
  for (std::size_t i = 0; i < items.size(); ++i) items[i].front() = static_cast<char>(i);
  mproc_bench::RawPayloadEcho raw;
  std::vector<char> back;
  bool ok = true;
  for (auto _ : state) {
    for (const auto& x : items) ok = raw.round_trip(x, back) && back == x && ok;
  }
  check(state, ok, "every item came back intact");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * 2 * items.size() * items.front().size()));
}
BENCHMARK(raw_big_items)->UseRealTime()->Unit(benchmark::kMillisecond);

[[maybe_unused]] const bool big_items_registered = [] {
  const std::pair<const char*, BigCall> calls[] = {{"map_cs1", BigCall::map_cs1},
                                                   {"map", BigCall::map},
                                                   {"imap", BigCall::imap},
                                                   {"imap_unordered", BigCall::imap_unordered},
                                                   {"apply_async", BigCall::apply_async},
                                                   {"apply", BigCall::apply}};
  for (const auto& [name, call] : calls) {
    for (const bool fresh : {false, true}) {
      const std::string base = std::string("big_items/") + name;
      const std::string pool = fresh ? "/fresh" : "/warm";
      benchmark::RegisterBenchmark((base + "/char" + pool).c_str(),
                                   [call = call, fresh](benchmark::State& s) {
                                     big_items(s, mproc_bench::echo,
                                               mproc_bench::payload_bytes(scaled(big_item_bytes, 64)), call, fresh);
                                   })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark((base + "/double" + pool).c_str(),
                                   [call = call, fresh](benchmark::State& s) {
                                     big_items(s, mproc_bench::echo_doubles,
                                               mproc_bench::payload_doubles(scaled(big_item_bytes, 64)), call, fresh);
                                   })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  return true;
}();

// --------------------------------------------------------------------- CPU-bound job

// Seed 001's job, cube(n) for n in range(N), three ways in each iteration: a plain
// loop, a Pool (started and joined inside the timing, as a user's program would),
// and a plain std::thread pool (one thread per core pulling indices from an atomic
// counter). Counters: seconds of each and the two speedups over the loop.
void cpu_job(benchmark::State& state) {
  const std::size_t n = scaled(26'000);
  std::vector<std::uint64_t> xs(n);
  std::iota(xs.begin(), xs.end(), std::uint64_t{0});
  const std::size_t workers = mproc::cpu_count();
  std::vector<std::uint64_t> serial, pooled, threaded(n);
  double serial_s = 0, pool_s = 0, threads_s = 0;
  bool same = true;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    serial.clear();
    for (std::uint64_t x : xs) serial.push_back(mproc_bench::cube(x));
    serial_s += seconds_since(start);

    start = std::chrono::steady_clock::now();
    {
      mproc::Pool pool(mproc_bench::cube);
      pooled = pool.map(xs);
      pool.close();
      pool.join();
    }
    pool_s += seconds_since(start);

    start = std::chrono::steady_clock::now();
    {
      std::atomic<std::size_t> next{0};
      std::vector<std::thread> threads;
      for (std::size_t w = 0; w < workers; ++w) {
        threads.emplace_back([&] {
          for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;)
            threaded[i] = mproc_bench::cube(xs[i]);
        });
      }
      for (auto& t : threads) t.join();
    }
    threads_s += seconds_since(start);
    same = same && pooled == serial && threaded == serial;
  }
  check(state, same, "the three ways computed the same cubes");
  using C = benchmark::Counter;
  state.counters["serial_s"] = C(serial_s, C::kAvgIterations);
  state.counters["pool_s"] = C(pool_s, C::kAvgIterations);
  state.counters["threads_s"] = C(threads_s, C::kAvgIterations);
  state.counters["pool_speedup"] = serial_s / pool_s;
  state.counters["threads_speedup"] = serial_s / threads_s;
}
BENCHMARK(cpu_job)->UseRealTime()->Unit(benchmark::kMillisecond);

// ------------------------------------------------------------------------ chunking

// The automatic chunking against fixed chunksizes, on the same pool and input, in
// rounds (rounds.hpp): counters auto, best (the best fixed chunksize), best_chunksize,
// and "chunksize:N" for each.

// 10^6 tiny tasks (square): map_ints/1000000 against chunksizes 64 to 524288 (one
// chunk per worker on 2 cores).
void tiny_chunking(benchmark::State& state) {
  const std::vector<int> xs = first_ints(scaled(1'000'000));
  mproc::Pool pool(mproc_bench::square);
  const std::vector<long> squares = pool.map(xs);  // warm-up
  check(state, all_squares(squares, xs.size()), "map returned every square in order");
  static std::size_t round = 0;
  mproc_bench::chunking_rounds(state, pool, xs, squares, {64, 256, 1024, 4096, 16384, 65536, 262144, 524288}, round);
}
BENCHMARK(tiny_chunking)->UseRealTime()->Unit(benchmark::kMillisecond);

// 300 uneven tasks (uneven_task_ns: 1 to 20 ms of CPU, a heavy tail at the end)
// against chunksizes 1 to 32.
void uneven_chunking(benchmark::State& state) {
  const std::vector<int> xs = first_ints(scaled(300));
  const auto n = static_cast<std::int64_t>(xs.size());
  mproc::Pool pool([n](int i) {
    mproc_bench::burn_cpu(mproc_bench::uneven_task_ns(i, n));
    return i;
  });
  pool.map(std::vector<int>{0, 1, 2, 3});  // warm-up (short: a round takes seconds)
  static std::size_t round = 0;
  mproc_bench::chunking_rounds(state, pool, xs, xs, {1, 2, 4, 8, 16, 32}, round);
}
BENCHMARK(uneven_chunking)->UseRealTime()->Unit(benchmark::kMillisecond);

// ------------------------------------------------------------------- call sequences

// One call's timing must not carry into the next (sequences.hpp): slow tasks right
// after a quick call, quick tasks right after a slow one, and quick calls around a
// map of slow tasks, each against the best fixed chunksize for it in the same rounds.
void after_quick(benchmark::State& state) {
  mproc::Pool pool(mproc_bench::nap);
  pool.apply(0);  // warm-up
  static std::size_t round = 0;
  mproc_bench::after_quick(state, mproc_bench::Naps(pool, [](int ms) { return ms; }), round);
}
BENCHMARK(after_quick)->UseRealTime()->Unit(benchmark::kMillisecond);

void after_slow(benchmark::State& state) {
  mproc::Pool pool(mproc_bench::nap);
  pool.apply(0);  // warm-up
  static std::size_t round = 0;
  mproc_bench::after_slow(state, mproc_bench::Naps(pool, [](int ms) { return ms; }), round);
}
BENCHMARK(after_slow)->UseRealTime()->Unit(benchmark::kMillisecond);

void interleaved(benchmark::State& state) {
  mproc::Pool pool(mproc_bench::nap);
  pool.apply(0);  // warm-up
  static std::size_t round = 0;
  mproc_bench::interleaved(state, mproc_bench::Naps(pool, [](int ms) { return ms; }), round);
}
BENCHMARK(interleaved)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return mproc_bench::run(argc, argv); }
