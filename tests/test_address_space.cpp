// Address-space limits (`ulimit -v`, RLIMIT_AS: batch schedulers and login nodes set
// them): a Pool of 2 workers, Queues and a Manager list do real work under 1 GiB, as
// Python's do, 200 Queues fit under 64 GiB, and what cannot be mapped under a limit
// takes another way (the pipe, a wait for readers) instead of failing.
//
// Each case runs in a forked child that lowers its own limit and reports through its
// exit code (and stderr). AddressSanitizer reserves terabytes of shadow memory at
// start, so no such limit can be set in that build: there the cases say so and
// check nothing.

#include "reliability_support.hpp"  // first: it configures Catch2

#include <mproc/detail/engine/lane.hpp>
#include <mproc/detail/shm/shared_ring.hpp>
#include <mproc/manager.hpp>
#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>

#include <catch2/catch.hpp>

#include <sys/resource.h>

#include <cstddef>
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

namespace {

using mproc_test::exit_code;
using mproc_test::spawn;

constexpr std::size_t mib = std::size_t{1} << 20;
constexpr std::size_t gib = std::size_t{1} << 30;

#ifdef MPROC_TEST_ASAN
constexpr bool limits_apply = false;
#else
constexpr bool limits_apply = true;
#endif

/// Says why a case checks nothing in this build; true if it does.
bool limits_can_be_set() {
  if (!limits_apply) WARN("AddressSanitizer reserves terabytes of address space: no RLIMIT_AS case runs in this build");
  return limits_apply;
}

/// This process's address space in use (VmSize), in bytes.
std::size_t address_space_used() {
  std::ifstream status("/proc/self/status");
  for (std::string key; status >> key;) {
    std::size_t kib = 0;
    if (key == "VmSize:" && status >> kib) return kib * 1024;
  }
  return 0;
}

bool limit_address_space(std::size_t bytes) {
  const rlimit limit{bytes, bytes};
  return ::setrlimit(RLIMIT_AS, &limit) == 0;
}

/// Runs one step in a limited child: its exit code if it returns true, else `code`
/// (also when it throws, after saying what on stderr).
template <class Step>
int step(int code, const char* what, Step&& run) {
  try {
    if (run()) return 0;
    std::fprintf(stderr, "%s: wrong result\n", what);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", what, e.what());
  }
  return code;
}

std::vector<char> pattern(std::size_t size) {
  std::vector<char> v(size);
  for (std::size_t i = 0; i < size; ++i) v[i] = static_cast<char>(i * 31 + size);
  return v;
}

std::vector<char> echo(const std::vector<char>& v) { return v; }

}  // namespace

TEST_CASE("under a 1 GiB address-space limit a Pool of 2 workers, Queues and a Manager list do real work") {
  if (!limits_can_be_set()) return;
  auto child = spawn([] {
    if (!limit_address_space(gib)) return 10;
    if (const int failed = step(11, "Pool(2).map of payloads up to 64 MiB", [] {
          mproc::Pool pool(echo, {.processes = 2});
          std::vector<std::vector<char>> payloads;
          for (const std::size_t kib : {1, 300, 4 << 10, 32 << 10, 64 << 10, 1 << 10}) {
            payloads.push_back(pattern(kib << 10));
          }
          return pool.map(payloads) == payloads && pool.apply(payloads[4]) == payloads[4];
        })) {
      return failed;
    }
    if (const int failed = step(12, "Queues holding 8 MiB each, and a 20 MiB item", [] {
          std::vector<mproc::Queue<std::vector<char>>> queues(3);
          const std::vector<char> item = pattern(64 << 10);
          for (auto& q : queues) {
            for (int i = 0; i < 128; ++i) q.put_nowait(item);  // nobody reads yet: the rings grow
          }
          const std::vector<char> big = pattern(20 * mib);
          queues[0].put(big);
          mproc::Process consumer([queues, item, big] {
            for (const auto& q : queues) {
              for (int i = 0; i < 128; ++i) {
                if (q.get() != item) std::exit(2);
              }
            }
            std::exit(queues[0].get() == big ? 0 : 3);
          });
          consumer.start();
          consumer.join();
          return consumer.exitcode() == 0;
        })) {
      return failed;
    }
    return step(13, "a Manager list appended to by a Pool and a Process", [] {
      mproc::Manager mgr;
      auto lst = mgr.list<std::string>();
      mproc::Pool pool(
          [lst](int i) mutable {
            lst.append("pool " + std::to_string(i));
            return i;
          },
          {.processes = 2});
      std::vector<int> items(1000);
      for (int i = 0; i < 1000; ++i) items[static_cast<std::size_t>(i)] = i;
      (void)pool.map(items);
      mproc::Process appender([lst]() mutable {
        for (int i = 0; i < 1000; ++i) lst.append("process " + std::to_string(i));
      });
      appender.start();
      appender.join();
      return appender.exitcode() == 0 && lst.size() == 2000 && mgr.max_size() <= gib / 8;
    });
  });
  CHECK(exit_code(child) == 0);
}

TEST_CASE("200 Queues can be made under a 64 GiB address-space limit, and each carries items") {
  if (!limits_can_be_set()) return;
  auto child = spawn([] {
    if (!limit_address_space(64 * gib)) return 10;
    return step(11, "200 Queues", [] {
      std::vector<mproc::Queue<int>> queues;
      for (int i = 0; i < 200; ++i) {
        queues.emplace_back();
        queues.back().put(i);
      }
      bool all = true;
      for (int i = 0; i < 200; ++i) all = all && queues[static_cast<std::size_t>(i)].get() == i;
      return all;
    });
  });
  CHECK(exit_code(child) == 0);
}

TEST_CASE("a payload the lane cannot map for lack of address space is left to the pipe") {
  if (!limits_can_be_set()) return;
  auto child = spawn([] {
    const std::vector<std::byte> big(200 * mib);
    std::vector<std::byte> small(mib);
    for (std::size_t i = 0; i < small.size(); ++i) small[i] = static_cast<std::byte>(i * 7);
    mproc::detail::Lane lane;
    if (!limit_address_space(address_space_used() + 64 * mib)) return 10;
    if (lane.try_put(big)) return 11;  // 200 MiB cannot be mapped: the pipe takes it
    if (!lane.try_put(small)) return 12;  // the next one that fits goes through the lane
    const auto seen = lane.view(small.size());
    if (!std::equal(seen.begin(), seen.end(), small.begin(), small.end())) return 13;
    lane.release(small.size());
    return 0;
  });
  CHECK(exit_code(child) == 0);
}

TEST_CASE("a Queue whose ring cannot grow for lack of address space fills up as a full one does") {
  if (!limits_can_be_set()) return;
  auto child = spawn([] {
    mproc::Queue<std::vector<char>> q;
    const std::vector<char> item = pattern(64 << 10);
    // Room for the next region (8 MiB of address space) is not left.
    if (!limit_address_space(address_space_used() + 6 * mib)) return 10;
    return step(11, "filling the queue", [&] {
      int n = 0;
      try {
        for (;; ++n) q.put_nowait(item);
      } catch (const mproc::Full&) {
      }
      const bool full_at_first_region = n > 0 && n * item.size() <= mproc::detail::SharedRing::initial_capacity;
      const bool goes_on = q.get_nowait() == item && (q.put_nowait(item), q.size() == static_cast<std::size_t>(n));
      return full_at_first_region && goes_on;
    });
  });
  CHECK(exit_code(child) == 0);
}
