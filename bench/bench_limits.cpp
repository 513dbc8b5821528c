// The machine's own limits, measured in the same run as mproc so the table can say
// what share of the possible each workload reaches: a raw round trip between two
// processes (by pipes, sockets, eventfds or futexes), raw pipe bandwidth, memcpy bandwidth, and a process-shared
// robust mutex, alone and contended by two processes. No mproc layer is involved
// beyond the RAII owners of fds, children and mappings.
#include "baselines.hpp"
#include "bench_support.hpp"

#include <mproc/detail/os/child.hpp>
#include <mproc/detail/os/fd.hpp>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using mproc::detail::Child;
using mproc_bench::Channel;
using mproc_bench::read_exact;
using mproc_bench::SharedGuarded;

// A message goes to a child and comes back, one at a time: the latency floor of any
// request/response between processes (Pool::apply, a Pipe round trip), by each way the
// machine offers; bench/compare.py takes the best of them as the limit.
void raw_round_trip(benchmark::State& state, mproc_bench::RawWay way) {
  mproc_bench::RawEcho echo(way);
  std::uint64_t sent = 0;
  for (auto _ : state) {
    if (!mproc_bench::check(state, echo.round_trip(++sent), "the child echoed the message")) break;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK_CAPTURE(raw_round_trip, pipes, mproc_bench::RawWay::pipes)->UseRealTime();
BENCHMARK_CAPTURE(raw_round_trip, stream_socket, mproc_bench::RawWay::stream_socket)->UseRealTime();
BENCHMARK_CAPTURE(raw_round_trip, seqpacket_socket, mproc_bench::RawWay::seqpacket_socket)->UseRealTime();
BENCHMARK_CAPTURE(raw_round_trip, eventfd_shm, mproc_bench::RawWay::eventfd_shm)->UseRealTime();
BENCHMARK_CAPTURE(raw_round_trip, futex_shm, mproc_bench::RawWay::futex_shm)->UseRealTime();

// One process streams bytes to another through a pipe (1 MiB writes and reads), with
// the kernel's default pipe buffer and with a 1 MiB one (mproc's worker pipes).
void pipe_bandwidth(benchmark::State& state) {
  const int pipe_bytes = static_cast<int>(state.range(0)) * 1024;
  const std::size_t block = std::size_t{1} << 20;
  const std::size_t total = mproc_bench::scaled(std::size_t{64} << 20, block) / block * block;
  Channel c(pipe_bytes);
  Child child = c.fork([&](int in, int out) {
    std::vector<char> buf(block);
    std::uint64_t want;
    while (read_exact(in, &want, sizeof want)) {  // a round: `want` bytes, then an ack
      for (std::uint64_t got = 0; got < want;) {
        const ssize_t r = mproc::detail::read_some(in, buf.data(), buf.size());
        if (r <= 0) return 1;
        got += static_cast<std::uint64_t>(r);
      }
      if (!mproc::detail::write_all(out, &want, sizeof want)) return 1;
    }
    return 0;
  });
  std::vector<char> data(block, 'x');
  for (auto _ : state) {
    const std::uint64_t want = total;
    mproc::detail::write_all(c.down.write.get(), &want, sizeof want);
    for (std::size_t sent = 0; sent < total; sent += block)
      mproc::detail::write_all(c.down.write.get(), data.data(), block);
    std::uint64_t ack = 0;
    if (!mproc_bench::check(state, read_exact(c.up.read.get(), &ack, sizeof ack) && ack == total,
                            "the child read every byte")) {
      break;
    }
  }
  c.finish(child);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * total));
}
BENCHMARK(pipe_bandwidth)->ArgName("pipe_kib")->Arg(64)->Arg(1024)->UseRealTime();

// One memcpy of 64 MiB between buffers already faulted in: what any copy of a
// payload costs at best.
void memcpy_bandwidth(benchmark::State& state) {
  const std::size_t n = mproc_bench::scaled(std::size_t{64} << 20, 4096);
  std::vector<char> src(n, 'x'), dst(n, 'y');
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  mproc_bench::check(state, dst[n / 2] == 'x', "memcpy copied");
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n));
}
BENCHMARK(memcpy_bandwidth)->UseRealTime();

// Lock, increment, unlock, in one process: the cost of the lock itself (what a
// Value with a Lock pays per update when nobody else wants it).
void robust_mutex_uncontended(benchmark::State& state) {
  SharedGuarded g;
  for (auto _ : state) g->increment();
  mproc_bench::check(state, g->counter == static_cast<std::uint64_t>(state.iterations()), "every increment counted");
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(robust_mutex_uncontended)->UseRealTime();

// Two processes, each lock-increment-unlock in a loop on one shared counter: the most
// a lock-protected shared Value can take from two processes.
void robust_mutex_contended(benchmark::State& state) {
  const std::uint64_t rounds = mproc_bench::scaled(200'000);
  SharedGuarded g;
  Channel c;
  Child child = c.fork([&](int in, int out) {
    std::uint64_t n;
    while (read_exact(in, &n, sizeof n)) {
      for (std::uint64_t i = 0; i < n; ++i) g->increment();
      if (!mproc::detail::write_all(out, &n, sizeof n)) return 1;
    }
    return 0;
  });
  for (auto _ : state) {
    mproc::detail::write_all(c.down.write.get(), &rounds, sizeof rounds);
    for (std::uint64_t i = 0; i < rounds; ++i) g->increment();
    std::uint64_t done = 0;
    if (!mproc_bench::check(state, read_exact(c.up.read.get(), &done, sizeof done), "the child finished its rounds")) {
      break;
    }
  }
  c.finish(child);
  mproc_bench::check(state, g->counter == 2 * rounds * static_cast<std::uint64_t>(state.iterations()),
                     "no increment lost");
  state.SetItemsProcessed(static_cast<std::int64_t>(2 * rounds * state.iterations()));
}
BENCHMARK(robust_mutex_contended)->UseRealTime();

}  // namespace

int main(int argc, char** argv) { return mproc_bench::run(argc, argv); }
