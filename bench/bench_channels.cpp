// Messages between two processes: a Queue from a producer to a consumer and a Pipe
// ping-pong. Each workload has a twin of the same name in
// bench/python/bench_channels.py; bench/compare.py holds the ping-pong against the best
// raw round trip of bench_limits.cpp, and against raw pipe round trips timed in the
// same rounds, with the same child.
#include "baselines.hpp"
#include "bench_support.hpp"

#include <mproc/detail/os/fd.hpp>  // make_pipe: the raw pipes
#include <mproc/pipe.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>

#include <chrono>
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
// at a time. A round trip's time depends on how busy the machine is and on where the
// scheduler puts the two processes (waking an idle virtual CPU is slow), so each
// iteration is a round of `per_round` Pipe round trips followed by as many raw ones,
// 8 bytes over two plain pipes to the same child (bench_limits' pipe_round_trip):
// both meet the same load and placement. The Pipe's round trips are the timed ones
// (items_per_second); raw_round_trips_per_second is the raw rate over the same rounds.
void pipe_ping_pong(benchmark::State& state) {
  constexpr int per_round = 100;
  auto [here, there] = mproc::Pipe<int>();
  // Not private: the child inherits them (and stops at the Pipe's -1, not at their EOF).
  const mproc::detail::PipeEnds down = mproc::detail::make_pipe(), up = mproc::detail::make_pipe();
  mproc::Process echo(
      [in = down.read.get(), out = up.write.get()](mproc::Connection<int> c) {
        for (;;) {
          for (int i = 0; i < per_round; ++i) {
            const int x = c.recv();
            if (x == -1) return;
            c.send(x);
          }
          for (int i = 0; i < per_round; ++i) {
            if (!mproc_bench::echo_message(in, out)) return;
          }
        }
      },
      std::move(there));
  echo.start();
  bool ok = true;
  std::uint64_t raw_msg = 0;
  double raw_s = 0;
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < per_round; ++i) {
      here.send(i);
      ok = here.recv() == i && ok;  // always recv: a skipped one would put the two sides out of step
    }
    state.SetIterationTime(mproc_bench::seconds_since(start));
    start = std::chrono::steady_clock::now();
    for (int i = 0; i < per_round; ++i) ok = mproc_bench::round_trip(down.write.get(), up.read.get(), ++raw_msg) && ok;
    raw_s += mproc_bench::seconds_since(start);
  }
  here.send(-1);
  echo.join();
  if (!check(state, ok && echo.exitcode() == 0, "every message came back")) return;
  const double round_trips = static_cast<double>(state.iterations()) * per_round;
  state.counters["raw_round_trips_per_second"] = round_trips / raw_s;
  state.SetItemsProcessed(static_cast<std::int64_t>(round_trips));
}
BENCHMARK(pipe_ping_pong)->UseManualTime();

}  // namespace

int main(int argc, char** argv) { return mproc_bench::run(argc, argv); }
