// No pipe deadlock: big arguments going to the workers while big results come back,
// both at once, through pipes far smaller than the payloads (1 MiB per worker, and
// each worker's shared-memory lane carries only one payload at a time, so the rest
// takes the pipe). A blocking writer on each side would wait for the other forever;
// the pool's thread must keep reading results while it writes tasks.

#include "reliability_support.hpp"

#include <mproc/mproc.hpp>

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

namespace {

using Payload = std::vector<std::uint8_t>;

constexpr std::size_t mib = std::size_t{1} << 20;

/// A payload whose bytes depend on its index, so a mix-up shows.
Payload make_payload(std::size_t bytes, int index) {
  Payload p(bytes);
  for (std::size_t i = 0; i < bytes; ++i) p[i] = static_cast<std::uint8_t>((i * 131 + static_cast<std::size_t>(index) * 7) >> 3);
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
