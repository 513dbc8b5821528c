// Messages between two processes: a Queue from a producer to a consumer and a Pipe
// ping-pong. Each workload has a twin of the same name in
// bench/python/bench_channels.py; bench/compare.py holds the ping-pong against the
// raw pipe round trip of bench_limits.cpp, measured in the same run.
#include "bench_support.hpp"

#include <mproc/pipe.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>

#include <cstdint>
#include <utility>

namespace {

using mproc_bench::check;
using mproc_bench::scaled;

// A producer Process puts 0..n-1 and then -1 (the end marker) on a Queue<int>; this
// process gets until the marker. Items per second, the Process's start included.
void queue_ints(benchmark::State& state) {
  const int n = static_cast<int>(scaled(1'000'000));
  mproc::Queue<int> q;
  bool ok = true;
  for (auto _ : state) {
    mproc::Process producer([q, n] {
      for (int i = 0; i < n; ++i) q.put(i);
      q.put(-1);
    });
    producer.start();
    std::int64_t sum = 0;
    int expected = 0;
    for (int x; (x = q.get()) != -1; ++expected) {
      ok = ok && x == expected;  // one producer: its order is kept
      sum += x;
    }
    producer.join();
    ok = ok && expected == n && sum == std::int64_t{n} * (n - 1) / 2 && producer.exitcode() == 0;
  }
  check(state, ok, "every item arrived once, in order");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
}
BENCHMARK(queue_ints)->UseRealTime()->Unit(benchmark::kMillisecond);

// An int goes to a child Process through a duplex Pipe and comes back, one round trip
// at a time; the child echoes until it gets -1.
void pipe_ping_pong(benchmark::State& state) {
  auto [here, there] = mproc::Pipe<int>();
  mproc::Process echo(
      [](mproc::Connection<int> c) {
        for (int x; (x = c.recv()) != -1;) c.send(x);
      },
      std::move(there));
  echo.start();
  bool ok = true;
  int i = 0;
  for (auto _ : state) {
    here.send(i);
    ok = ok && here.recv() == i;
    i = (i + 1) % 1000;
  }
  here.send(-1);
  echo.join();
  check(state, ok && echo.exitcode() == 0, "every message came back");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(pipe_ping_pong)->UseRealTime();

}  // namespace

int main(int argc, char** argv) { return mproc_bench::run(argc, argv); }
