// No pipe deadlock: big arguments going to the workers while big results come back,
// both at once, through pipes far smaller than the payloads (1 MiB per worker, and
// each worker's shared-memory lane carries only one payload at a time, so the rest
// takes the pipe). A blocking writer on each side would wait for the other forever;
// the pool's thread must keep reading results while it writes tasks. And a worker
// killed with a big argument on its way to it, in its lane or in its pipe.

#include "reliability_support.hpp"  // first: it configures Catch2

#include <mproc/mproc.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace {

using Payload = std::vector<std::uint8_t>;

constexpr std::size_t mib = std::size_t{1} << 20;

/// A payload whose bytes depend on its index, so a mix-up shows.
Payload make_payload(std::size_t bytes, int index) {
  Payload p(bytes);
  for (std::size_t i = 0; i < bytes; ++i)
    p[i] = static_cast<std::uint8_t>((i * 131 + static_cast<std::size_t>(index) * 7) >> 3);
  return p;
}

/// What the workers return: the argument reversed, each byte plus one.
Payload transform(const Payload& in) {
  Payload out(in.rbegin(), in.rend());
  for (auto& b : out) b = static_cast<std::uint8_t>(b + 1);
  return out;
}

std::vector<Payload> payloads(int count, std::size_t bytes) {
  std::vector<Payload> v;
  for (int i = 0; i < count; ++i) v.push_back(make_payload(bytes, i));
  return v;
}

/// Checks every result against transform(input), without printing 8 MiB on failure.
template <class Results>
void check_results(const std::vector<Payload>& inputs, const Results& results) {
  REQUIRE(results.size() == inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    INFO("item " << i);
    CHECK((results[i] == transform(inputs[i])));
  }
}

}  // namespace

TEST_CASE("8 MiB arguments and 8 MiB results in flight both ways at once: map completes") {
  mproc::Pool pool(transform, {.processes = 2});
  const auto inputs = payloads(8, 8 * mib);
  for (std::size_t chunksize : {1, 2, 8}) {
    INFO("chunksize " << chunksize);
    check_results(inputs, pool.map(inputs, chunksize));
  }
}

TEST_CASE("8 MiB arguments and results through imap and imap_unordered complete") {
  mproc::Pool pool(transform, {.processes = 2});
  const auto inputs = payloads(8, 8 * mib);
  std::vector<Payload> ordered;
  for (auto& r : pool.imap(inputs, 1)) ordered.push_back(std::move(r));
  check_results(inputs, ordered);

  std::size_t matched = 0;
  for (auto& r : pool.imap_unordered(inputs, 1)) {
    for (const auto& in : inputs) matched += r == transform(in) ? 1 : 0;
  }
  CHECK(matched == inputs.size());
}

TEST_CASE("payloads just under the lane threshold all take the pipes, both ways at once") {
  // 200 KiB each: too small for a lane, so 64 items push 12.5 MiB each way through
  // the 1 MiB pipes while results stream back.
  mproc::Pool pool(transform, {.processes = 2});
  const auto inputs = payloads(64, 200 << 10);
  check_results(inputs, pool.map(inputs, 1));
  check_results(inputs, pool.map(inputs));  // automatic chunks: several items per frame
}

TEST_CASE("many big apply_async calls queued at once complete, results in any order") {
  mproc::Pool pool(transform, {.processes = 2});
  const auto inputs = payloads(16, 4 * mib);
  std::vector<mproc::AsyncResult<Payload>> pending;
  for (const auto& in : inputs) pending.push_back(pool.apply_async(in));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    INFO("call " << i);
    CHECK((pending[i].get(mproc_test::hang_limit) == transform(inputs[i])));
  }
}

namespace {

/// The first byte that marks the argument whose task blocks until it is killed.
constexpr std::uint8_t victim_mark = 0xEE;

}  // namespace

TEST_CASE("a big argument in a killed worker's lane or pipe: the pool goes on, every other item arrives") {
  // One worker holds two chunks: it runs the first (the victim, which blocks) while
  // the second, 8 MiB, waits for it. A small victim leaves the lane free, so the big
  // argument waits there; a big victim is in the lane itself, so the next one is
  // being written through the pipe, which holds 1 MiB of it. Then the worker is
  // killed: the victim fails and everything else still arrives, through a new worker.
  for (const std::size_t victim_bytes : {std::size_t{1}, 8 * mib}) {
    INFO("victim argument of " << victim_bytes << " bytes");
    auto report = mproc::detail::make_pipe();
    const int report_fd = report.write.get();
    mproc::Pool pool(
        [report_fd](const Payload& in) {
          if (!in.empty() && in[0] == victim_mark) {
            const std::string pid = std::to_string(::getpid()) + "\n";
            (void)mproc::detail::write_all(report_fd, pid.data(), pid.size());
            for (;;) ::pause();  // until killed
          }
          return transform(in);
        },
        {.processes = 1, .chunksize = 1});
    auto inputs = payloads(6, 8 * mib);
    inputs[0] = Payload(victim_bytes, 1);
    inputs[0][0] = victim_mark;
    std::vector<mproc::AsyncResult<Payload>> pending;  // queued at once, handed out in order
    for (const auto& in : inputs) pending.push_back(pool.apply_async(in));
    const std::string pid =
        mproc_test::read_until(report.read.get(), "\n", std::chrono::steady_clock::now() + mproc_test::hang_limit);
    REQUIRE(!pid.empty());
    REQUIRE(::kill(std::stoi(pid), SIGKILL) == 0);
    CHECK_THROWS_AS(pending[0].get(mproc_test::hang_limit), mproc::WorkerLost);
    for (std::size_t i = 1; i < inputs.size(); ++i) {
      INFO("item " << i);
      CHECK((pending[i].get(mproc_test::hang_limit) == transform(inputs[i])));
    }
    CHECK((pool.apply(inputs[1]) == transform(inputs[1])));
  }
}
