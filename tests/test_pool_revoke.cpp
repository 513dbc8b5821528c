// A worker busy with a long item keeps nothing from an idle worker: the chunks it
// holds behind that item, and has not started, are taken back and run by the idle one
// (as in Python, where a busy worker holds nothing else). Every test holds an item on
// a gate and waits for the others to finish while it is still held: on a pool that
// let them wait behind it, they never would (the watchdog turns that into a failure).

#include "pool_test_support.hpp"

#include <mproc/mproc.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <functional>
#include <future>
#include <string>
#include <vector>

namespace {

using mproc_test::Gate;
using mproc_test::GateWatchdog;
using mproc_test::SharedCounters;

/// Shared with the workers. Item `held` waits on `release` the first time it runs
/// (after saying so on `started`); the others count themselves, and the one that
/// makes them all done opens `done`.
struct Board {
  Gate release, started, done;
  SharedCounters counters;  // [0]: items finished but `held`; [1]: pid running `held`; [2 + k]: runs of item k
  explicit Board(std::size_t items) : counters(2 + items) {}
  void reset() const {
    for (std::size_t i = 0; i < counters.size(); ++i) counters[i] = 0;
  }
  int runs(std::size_t item) const { return counters[2 + item].load(); }
  int finished() const { return counters[0].load(); }
};

struct HoldOne {
  const Board* board;
  int items;
  int held;
  long operator()(int x) const {
    const int runs = ++board->counters[2 + static_cast<std::size_t>(x)];
    if (x == held) {
      if (runs == 1) {
        board->counters[1] = static_cast<int>(::getpid());
        board->started.open();
        board->release.wait();
      }
    } else if (++board->counters[0] == items - 1) {
      board->done.open();
    }
    return 10L * x;
  }
};

std::vector<int> iota_vector(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i);
  return v;
}

std::vector<long> tens(int n) {
  std::vector<long> v;
  for (int i = 0; i < n; ++i) v.push_back(10L * i);
  return v;
}

/// Waits until every item but the held one finished while it is still held (false if
/// they did not within the hang limit), then lets it go.
bool others_finish_while_held(const Board& board) {
  GateWatchdog watchdog(board.done);
  board.done.wait();
  const bool in_time = !watchdog.stop();
  board.release.open();
  return in_time;
}

/// Submits items 0..n-1 on `pool`; returns their results, in input order, to come.
/// An imap is drained on a thread of its own from the start, as it reads its input
/// only as its consumer takes results.
using Submit = std::function<std::future<std::vector<long>>(mproc::Pool<HoldOne>&, int n)>;

std::vector<long> drain(mproc::IMap<long> results, bool sorted) {
  std::vector<long> got;
  while (auto v = results.next()) got.push_back(*v);
  if (sorted) std::sort(got.begin(), got.end());
  return got;
}

struct Api {
  std::string name;
  Submit submit;
};

std::vector<Api> apis() {
  return {
      {"map",
       [](auto& pool, int n) {
         return std::async(std::launch::deferred,
                           [r = pool.map_async(iota_vector(n), 1)]() mutable { return r.get(); });
       }},
      {"imap",
       [](auto& pool, int n) {
         return std::async(std::launch::async,
                           [r = pool.imap(iota_vector(n), 1)]() mutable { return drain(std::move(r), false); });
       }},
      {"imap_unordered",
       [](auto& pool, int n) {
         return std::async(std::launch::async, [r = pool.imap_unordered(iota_vector(n), 1)]() mutable {
           return drain(std::move(r), true);
         });
       }},
      {"apply_async",
       [](auto& pool, int n) {
         std::vector<mproc::AsyncResult<long>> rs;
         for (int i = 0; i < n; ++i) rs.push_back(pool.apply_async(i));
         return std::async(std::launch::deferred, [rs = std::move(rs)]() mutable {
           std::vector<long> got;
           for (auto& r : rs) got.push_back(r.get());
           return got;
         });
       }},
  };
}

}  // namespace

TEST_CASE(
    "items held behind a long one by a busy worker go to the idle worker (map, imap, imap_unordered, apply_async)") {
  constexpr int n = 8;  // an imap of chunksize 1 on 2 workers reads 8 items ahead of its consumer at first
  for (const auto& api : apis()) {
    for (const std::size_t maxtasks : {std::size_t{0}, std::size_t{3}}) {
      INFO(api.name << ", maxtasksperchild " << maxtasks);
      const Board board(n);
      mproc::Pool pool(HoldOne{&board, n, 0}, {.processes = 2, .maxtasksperchild = maxtasks});
      auto results = api.submit(pool, n);
      CHECK(others_finish_while_held(board));
      CHECK(results.get() == tens(n));
      for (int i = 0; i < n; ++i) CHECK(board.runs(static_cast<std::size_t>(i)) == 1);
    }
  }
}

TEST_CASE("tiny items batched behind a long one go to the idle worker") {
  // Tiny items travel many chunks to a worker at a time: the one that gets the held
  // item may hold a long batch behind it.
  constexpr int n = 20000;
  const Board board(n);
  mproc::Pool pool(HoldOne{&board, n, 5000}, {.processes = 2});
  auto results = std::async(
      std::launch::async, [r = pool.imap_unordered(iota_vector(n), 1)]() mutable { return drain(std::move(r), true); });
  CHECK(others_finish_while_held(board));
  CHECK(results.get() == tens(n));
  int ran_twice = 0;
  for (int i = 0; i < n; ++i) ran_twice += board.runs(static_cast<std::size_t>(i)) != 1;
  CHECK(ran_twice == 0);
}

TEST_CASE("a worker killed right after its chunks were taken back loses nothing") {
  constexpr int n = 10;
  const Board board(n);
  mproc::Pool pool(HoldOne{&board, n, 0}, {.processes = 2, .retries = 1});
  {
    auto results = pool.map_async(iota_vector(n), 1);
    GateWatchdog started(board.started), done(board.done);
    board.started.wait();
    board.done.wait();  // what it held behind item 0 ran elsewhere; its frames may still be in its pipe
    CHECK(!started.stop());
    CHECK(!done.stop());
    const auto victim = static_cast<pid_t>(board.counters[1].load());
    REQUIRE(victim > 0);
    REQUIRE(::kill(victim, SIGKILL) == 0);
    // Item 0 runs again (retries = 1) and does not wait a second time.
    CHECK(results.get() == tens(n));
    CHECK(board.runs(0) == 2);
    for (int i = 1; i < n; ++i) CHECK(board.runs(static_cast<std::size_t>(i)) == 1);
  }
  // The replacement starts afresh: it runs what it is given, and gives up what it holds.
  board.reset();
  auto again = pool.map_async(iota_vector(n), 1);
  CHECK(others_finish_while_held(board));
  CHECK(again.get() == tens(n));
  for (int i = 0; i < n; ++i) CHECK(board.runs(static_cast<std::size_t>(i)) == 1);
}

TEST_CASE("big arguments taken back from a busy worker run elsewhere, and its pipe and lane serve again") {
  // Big arguments go through the worker's shared-memory lane while it is free, else
  // through its pipe. A small item 0 leaves the lane to the big one behind it, which
  // the busy worker drops from there once item 0 ends; a big item 0 keeps the lane,
  // and the one behind it is part written into the pipe when it is taken back: the
  // rest still follows, after the item ran elsewhere and the map freed its input.
  constexpr int n = 6;
  const Board board(n);
  const auto big = [](int x) { return std::string(std::size_t{4} << 20, static_cast<char>('a' + x)); };
  mproc::Pool pool(
      [&board](const std::string& s) -> long {
        const HoldOne hold{&board, n, 0};
        return hold(s[0] - 'a') / 10 + static_cast<long>(s.size());
      },
      {.processes = 2});
  for (const bool first_big : {true, false, true, false}) {
    INFO("item 0 " << (first_big ? "big" : "small"));
    std::vector<std::string> inputs{first_big ? big(0) : "a"};
    for (int i = 1; i < n; ++i) inputs.push_back(big(i));
    std::vector<long> expected;
    for (int i = 0; i < n; ++i) expected.push_back(i + static_cast<long>(inputs[static_cast<std::size_t>(i)].size()));
    board.reset();
    auto results = pool.map_async(inputs, 1);
    CHECK(others_finish_while_held(board));
    CHECK(results.get() == expected);
    for (int i = 0; i < n; ++i) CHECK(board.runs(static_cast<std::size_t>(i)) == 1);
  }
}
