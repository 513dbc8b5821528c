// Pool<F>, the everyday path: map/starmap/imap/imap_unordered/apply in input order,
// laziness on endless inputs, callbacks, serial mode, several user threads.
// Failures are in test_pool_failures.cpp, payload types in test_pool_payloads.cpp,
// lifecycle (close, terminate, maxtasksperchild, leaks) in test_pool_lifecycle.cpp.

#include "pool_test_support.hpp"

#include <mproc/mproc.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <list>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <regex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>

namespace {

using namespace std::chrono_literals;
using mproc_test::Gate;

std::vector<int> iota_vector(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

std::vector<long> squares(int n) {
  std::vector<long> v;
  for (int i = 0; i < n; ++i) v.push_back(long{i} * i);
  return v;
}

long square(int x) { return long{x} * x; }

/// Every result of an IMap, in the order it yields them.
template <class R>
std::vector<R> drain(mproc::IMap<R>&& results) {
  std::vector<R> out;
  for (auto& r : results) out.push_back(std::move(r));
  return out;
}

/// F for the ordering tests: item 0 cannot finish before another item has finished,
/// so completion order is certainly not input order. (Only one: the worker stuck on
/// item 0 may be handed more items meanwhile, so only the other worker's first item
/// is sure to finish.)
struct HeldBack {
  const Gate* release;  // item 0 waits here
  const Gate* done;     // every other item reports here
  long operator()(int x) const {
    if (x == 0) release->wait();
    else done->open();
    return long{x} * x;
  }
};

/// Runs run(pool) on a pool over HeldBack, while another thread opens `release` once
/// an item has reported on `done`; returns what run returned.
template <class Run>
auto with_item_0_held_back(Run run) {
  Gate release, done;
  mproc::Pool pool(HeldBack{&release, &done}, {.processes = 2, .chunksize = 1});
  std::thread opener([&] {
    done.wait();
    release.open();
  });
  auto results = run(pool);
  opener.join();
  return results;
}

/// An endless input range that counts the elements pulled from it.
class CountingInput {
 public:
  class iterator {
   public:
    using value_type = int;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(std::size_t* pulled) : pulled_(pulled) {}
    int operator*() const { return static_cast<int>(*pulled_); }
    iterator& operator++() {
      ++*pulled_;
      return *this;
    }
    void operator++(int) { ++*this; }

   private:
    std::size_t* pulled_ = nullptr;
  };
  iterator begin() { return iterator(&pulled_); }
  std::unreachable_sentinel_t end() const { return {}; }
  std::size_t pulled() const { return pulled_; }

 private:
  std::size_t pulled_ = 0;
};
static_assert(std::ranges::input_range<CountingInput&>);

/// The input 0, 1, 2, ... (as V) of a Python generator that raises after yielding
/// `broken_at` items: reading item broken_at throws std::runtime_error("input broke
/// at <k>"), when it is reached (the increment to it) or when it is dereferenced.
template <class V = int>
class BrokenInput {
 public:
  class iterator {
   public:
    using value_type = V;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(const BrokenInput* in) : in_(in) {
      if (in_->broken_at_ == 0 && in_->on_increment_) broke();
    }
    V operator*() const {
      if (at_ == in_->broken_at_) broke();
      return V(at_);
    }
    iterator& operator++() {
      if (++at_ == in_->broken_at_ && in_->on_increment_) broke();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return at_ == in_->broken_at_ + 100; }

   private:
    [[noreturn]] void broke() const { throw std::runtime_error("input broke at " + std::to_string(at_)); }
    const BrokenInput* in_ = nullptr;
    int at_ = 0;
  };
  BrokenInput(int broken_at, bool on_increment) : broken_at_(broken_at), on_increment_(on_increment) {}
  iterator begin() const { return iterator(this); }
  std::default_sentinel_t end() const { return {}; }

 private:
  int broken_at_;
  bool on_increment_;
};
static_assert(std::ranges::input_range<const BrokenInput<>&>);

/// What an IMap hands out, each result or error as text, up to the end ("end").
template <class R>
std::vector<std::string> entries(mproc::IMap<R>& results) {
  std::vector<std::string> out;
  for (;;) {
    try {
      const auto r = results.next();
      if (!r) break;
      out.push_back(std::to_string(*r));
    } catch (const std::exception& e) {
      out.push_back(std::string("error: ") + e.what());
    }
    if (out.size() > 1000) break;  // a stream that does not end fails below
  }
  out.push_back("end");
  return out;
}

/// Redirects this process's stderr (fd 2) into a memory file while it lives.
class CaptureStderr {
 public:
  CaptureStderr() : file_(::memfd_create("stderr", 0)), saved_(::dup(2)) {
    std::fflush(stderr);
    ::dup2(file_.get(), 2);
  }
  ~CaptureStderr() { restore(); }
  CaptureStderr(const CaptureStderr&) = delete;
  CaptureStderr& operator=(const CaptureStderr&) = delete;
  /// Restores stderr and returns what was written to it.
  std::string text() {
    restore();
    std::string out(static_cast<std::size_t>(::lseek(file_.get(), 0, SEEK_END)), '\0');
    (void)!::pread(file_.get(), out.data(), out.size(), 0);
    return out;
  }

 private:
  void restore() {
    if (!saved_) return;
    std::fflush(stderr);
    ::dup2(saved_.get(), 2);
    saved_.reset();
  }
  mproc::detail::Fd file_;
  mproc::detail::Fd saved_;
};

}  // namespace

// ---------------------------------------------------------------------------
// Results in input order

TEST_CASE("map returns F of every input in input order") {
  mproc::Pool pool(square, {.processes = 2});
  CHECK(pool.map(iota_vector(1000)) == squares(1000));
  CHECK(pool.map(std::vector<int>{7}) == std::vector<long>{49});
  for (std::size_t chunksize : {1, 3, 64, 5000}) {
    INFO("chunksize " << chunksize);
    CHECK(pool.map(iota_vector(200), chunksize) == squares(200));
  }
}

TEST_CASE("map keeps input order when items finish out of order") {
  CHECK(with_item_0_held_back([](auto& pool) { return pool.map(iota_vector(40)); }) == squares(40));
}

TEST_CASE("imap yields in input order when items finish out of order") {
  CHECK(with_item_0_held_back([](auto& pool) { return drain(pool.imap(iota_vector(40))); }) == squares(40));
}

TEST_CASE("imap_unordered yields results as they finish, each input exactly once") {
  Gate release, done;
  mproc::Pool pool(HeldBack{&release, &done}, {.processes = 2, .chunksize = 1});
  auto results = pool.imap_unordered(iota_vector(40));
  // Item 0 is held back until another is done, so an ordered stream would wait for
  // it forever here; an unordered one hands out that other one first.
  std::vector<long> got;
  const auto first = results.next();
  REQUIRE(first);
  CHECK(*first != 0);
  got.push_back(*first);
  release.open();
  while (auto r = results.next()) got.push_back(*r);
  std::sort(got.begin(), got.end());
  CHECK(got == squares(40));
}

TEST_CASE("imap and imap_unordered on plain inputs, next() ends with nothing") {
  mproc::Pool pool(square, {.processes = 2});
  CHECK(drain(pool.imap(iota_vector(500))) == squares(500));
  auto unordered = drain(pool.imap_unordered(iota_vector(500), 7));
  std::sort(unordered.begin(), unordered.end());
  CHECK(unordered == squares(500));

  auto m = pool.imap(std::vector<int>{2, 3});
  CHECK(m.next() == 4);
  CHECK(m.next() == 9);
  CHECK(m.next() == std::nullopt);
  CHECK(m.next() == std::nullopt);
}

TEST_CASE("inputs may be any input range whose elements convert to F's parameter") {
  mproc::Pool pool([](double x) { return x / 2; }, {.processes = 2});
  CHECK(pool.map(std::list<int>{2, 4, 6}) == std::vector<double>{1, 2, 3});
  // Not sized: a filtered view.
  auto evens = std::views::iota(0, 10) | std::views::filter([](int i) { return i % 2 == 0; });
  CHECK(pool.map(evens) == std::vector<double>{0, 1, 2, 3, 4});
  CHECK(drain(pool.imap(evens)) == std::vector<double>{0, 1, 2, 3, 4});
}

TEST_CASE("an empty input gives an empty result") {
  mproc::Pool pool(square, {.processes = 2});
  CHECK(pool.map(std::vector<int>{}).empty());
  CHECK(drain(pool.imap(std::vector<int>{})).empty());
  CHECK(drain(pool.imap_unordered(std::vector<int>{})).empty());
  CHECK(pool.map_async(std::vector<int>{}).get().empty());

  mproc::Pool star([](int a, int b) { return a + b; }, {.processes = 2});
  CHECK(star.starmap(std::vector<std::pair<int, int>>{}).empty());
}

// ---------------------------------------------------------------------------
// Laziness

TEST_CASE("imap over an endless range: take 100, stop, and the pool is still usable") {
  mproc::Pool pool(square, {.processes = 2});
  {
    auto results = pool.imap(std::views::iota(0));
    long expected = 0;
    for (long r : results) {
      CHECK(r == expected * expected);
      if (++expected == 100) break;
    }
    CHECK(expected == 100);
  }  // destroying the IMap cancels what is still queued
  CHECK(pool.map(iota_vector(10)) == squares(10));
}

TEST_CASE("imap pulls its input only a bounded window ahead of the consumer") {
  // Items of about a millisecond: the window the pool keeps in flight is then a few
  // hundred items at most.
  mproc::Pool pool(
      [](int x) {
        std::this_thread::sleep_for(1ms);
        return x;
      },
      {.processes = 2});
  CountingInput input;
  {
    auto results = pool.imap(input);
    int taken = 0;
    for (int r : results) {
      CHECK(r == taken);
      if (++taken == 100) break;
    }
  }
  INFO("pulled " << input.pulled() << " elements to hand out 100 results");
  CHECK(input.pulled() >= 100);
  CHECK(input.pulled() < 5000);
}

TEST_CASE("imap of cheap items never reads more than the stream window ahead") {
  mproc::Pool pool(square, {.processes = 2});
  CountingInput input;
  std::size_t taken = 0;
  std::size_t most_ahead = 0;
  {
    auto results = pool.imap_unordered(input);
    for ([[maybe_unused]] long r : results) {
      most_ahead = std::max(most_ahead, input.pulled() - ++taken);
      if (taken == 100'000) break;
    }
  }
  INFO("at most " << most_ahead << " items read ahead of the consumer");
  CHECK(most_ahead <= mproc::detail::ChunkPolicy::max_stream_window);
}

TEST_CASE("imap of big inputs reads at most max_stream_bytes of them ahead") {
  // 1 MiB per item: a window counted in items would read hundreds ahead (hundreds of
  // MiB); the stream keeps 64 MiB of input in flight at most, 64 items here.
  constexpr std::size_t item_bytes = std::size_t{1} << 20;
  constexpr std::size_t bound = mproc::detail::ChunkPolicy::max_stream_bytes / item_bytes;
  mproc::Pool pool([](const std::string& s) { return s.size(); }, {.processes = 2});
  CountingInput input;
  auto big = input | std::views::transform([](int) { return std::string(item_bytes, 'x'); });
  std::size_t taken = 0;
  std::size_t most_ahead = 0;
  bool sizes_right = true;
  {
    auto results = pool.imap(big);
    for (std::size_t n : results) {
      sizes_right = sizes_right && n == item_bytes;
      most_ahead = std::max(most_ahead, input.pulled() - ++taken);
      if (taken == 3 * bound) break;
    }
  }
  CHECK(sizes_right);
  INFO("at most " << most_ahead << " items of 1 MiB read ahead of the consumer");
  CHECK(most_ahead <= bound);
}

TEST_CASE("imap of big results reads at most max_stream_bytes of results' worth ahead") {
  // Tiny inputs, 1 MiB results: the results wait in the stream until the consumer
  // takes them, so the window counts their size too (a window counted in input bytes
  // would keep hundreds of MiB of results waiting for a slow consumer).
  constexpr std::size_t item_bytes = std::size_t{1} << 20;
  constexpr std::size_t bound = mproc::detail::ChunkPolicy::max_stream_bytes / item_bytes;
  mproc::Pool pool([](int x) { return std::string(item_bytes, static_cast<char>('a' + x % 26)); }, {.processes = 2});
  CountingInput input;
  std::size_t taken = 0;
  std::size_t most_ahead = 0;
  bool results_right = true;
  {
    auto results = pool.imap(input);
    for (const std::string& r : results) {
      results_right = results_right && r.size() == item_bytes && r[0] == static_cast<char>('a' + taken % 26);
      most_ahead = std::max(most_ahead, input.pulled() - ++taken);
      if (taken == 6 * bound) break;
    }
  }
  CHECK(results_right);
  INFO("at most " << most_ahead << " items with 1 MiB results read ahead of the consumer");
  CHECK(most_ahead <= bound);
}

TEST_CASE("imap and imap_unordered: an input that throws yields the results read before it, then its exception, "
          "then the end") {
  // As Python's imap over a generator that raises after k items: f(0) .. f(k - 1),
  // the generator's exception, StopIteration.
  for (const bool serial : {false, true}) {
    for (const bool on_increment : {false, true}) {
      for (const int k : {0, 3, 150}) {
        INFO((serial ? "serial" : "pool")
             << ", throws at " << (on_increment ? "increment" : "dereference") << ", after " << k << " items");
        mproc::Pool pool(square, {.processes = 2, .serial = serial});
        std::vector<std::string> expected;
        for (int i = 0; i < k; ++i) expected.push_back(std::to_string(square(i)));
        expected.push_back("error: input broke at " + std::to_string(k));
        expected.push_back("end");

        auto ordered = pool.imap(BrokenInput<>(k, on_increment));
        CHECK(entries(ordered) == expected);
        CHECK(ordered.next() == std::nullopt);

        auto unordered = pool.imap_unordered(BrokenInput<>(k, on_increment), 2);
        auto got = entries(unordered);
        REQUIRE(got.size() == expected.size());
        CHECK(got.back() == "end");
        CHECK(got[got.size() - 2] == expected[expected.size() - 2]);  // the exception after every result
        std::sort(got.begin(), got.end() - 2);
        std::sort(expected.begin(), expected.end() - 2);
        CHECK(got == expected);

        // A range-for sees the same: the exception at its place, then the loop ends.
        std::vector<long> seen;
        auto results = pool.imap(BrokenInput<>(k, on_increment));
        CHECK_THROWS_WITH(
            [&] {
              for (long r : results) seen.push_back(r);
            }(),
            "input broke at " + std::to_string(k));
        CHECK(seen == squares(k));
        CHECK(pool.map(iota_vector(4)) == squares(4));  // the pool goes on
      }
    }
  }
}

TEST_CASE("map, starmap and map_async raise an input's exception at once, run none of it, and the pool goes on") {
  for (const bool serial : {false, true}) {
    INFO((serial ? "serial" : "pool"));
    mproc_test::SharedCounters runs(1);
    mproc::Pool pool([&runs](int x) { return ++runs[0] > 0 ? long{x} * x : 0L; }, {.processes = 2, .serial = serial});
    CHECK_THROWS_WITH(pool.map(BrokenInput<>(50, false)), "input broke at 50");
    CHECK_THROWS_WITH(pool.map(BrokenInput<>(7, true), 2), "input broke at 7");
    CHECK_THROWS_WITH(pool.map_async(BrokenInput<>(0, true)), "input broke at 0");
    CHECK_THROWS_WITH(pool.starmap(BrokenInput<std::tuple<int>>(5, false)), "input broke at 5");
    CHECK_THROWS_WITH(pool.starmap_async(BrokenInput<std::tuple<int>>(5, true)), "input broke at 5");
    CHECK(pool.map(iota_vector(10)) == squares(10));
    pool.close();
    pool.join();
    CHECK(runs[0] == 10);  // nothing of the broken inputs ran, even later
  }
}

// ---------------------------------------------------------------------------
// starmap and apply

TEST_CASE("starmap calls F with the elements of each tuple or pair") {
  mproc::Pool pool([](int a, std::string s) { return s + ":" + std::to_string(a); }, {.processes = 2});
  const std::vector<std::tuple<int, std::string>> tuples{{1, "a"}, {2, "b"}, {3, "c"}};
  CHECK(pool.starmap(tuples) == std::vector<std::string>{"a:1", "b:2", "c:3"});
  const std::vector<std::pair<int, const char*>> pairs{{4, "d"}, {5, "e"}};
  CHECK(pool.starmap(pairs, 1) == std::vector<std::string>{"d:4", "e:5"});
  CHECK(pool.starmap_async(tuples).get() == std::vector<std::string>{"a:1", "b:2", "c:3"});
}

TEST_CASE("apply and apply_async run F with the given arguments in a worker") {
  mproc::Pool pool([](int a, int b) { return std::pair<int, pid_t>(a * b, ::getpid()); }, {.processes = 2});
  const auto [product, pid] = pool.apply(6, 7);
  CHECK(product == 42);
  CHECK(pid != ::getpid());

  std::vector<mproc::AsyncResult<std::pair<int, pid_t>>> pending;
  for (int i = 0; i < 20; ++i) pending.push_back(pool.apply_async(i, 2));
  for (int i = 0; i < 20; ++i) CHECK(pending[static_cast<std::size_t>(i)].get().first == 2 * i);
}

TEST_CASE("map runs in the workers, not in the caller") {
  mproc::Pool pool([](int) { return ::getpid(); }, {.processes = 2});
  const auto pids = pool.map(iota_vector(50));
  const auto workers = pool.worker_pids();
  CHECK(workers.size() == 2);
  for (pid_t p : pids) {
    CHECK(p != ::getpid());
    CHECK(std::find(workers.begin(), workers.end(), p) != workers.end());
  }
}

// ---------------------------------------------------------------------------
// F's shape

TEST_CASE("an F with no parameters: apply and apply_async, several in flight, in pool and serial mode") {
  for (const bool serial : {false, true}) {
    INFO((serial ? "serial" : "pool"));
    mproc::Pool pool([]() -> int { return 42; }, {.processes = 2, .serial = serial});
    CHECK(pool.apply() == 42);
    std::vector<mproc::AsyncResult<int>> pending;
    for (int i = 0; i < 20; ++i) pending.push_back(pool.apply_async());
    for (auto& r : pending) CHECK(r.get() == 42);
    std::atomic<int> called_back{0};
    auto with_callback = pool.apply_async([&](const int& v) { called_back += v; });
    CHECK(with_callback.get() == 42);
    CHECK(called_back == 42);
    CHECK(pool.apply() == 42);  // and the pool goes on

    mproc::Pool void_pool([]() {}, {.processes = 1, .serial = serial});
    CHECK(void_pool.apply() == mproc::None{});
    CHECK(void_pool.apply_async().get() == mproc::None{});
  }
}

TEST_CASE("starmap over empty tuples calls an F with no parameters once per tuple, in chunks too") {
  // Python's pool.starmap(f, [()] * n): each empty tuple is one call of f().
  for (const bool serial : {false, true}) {
    INFO((serial ? "serial" : "pool"));
    mproc_test::SharedCounters calls(1);
    mproc::Pool pool([&calls]() { return ++calls[0] > 0; }, {.processes = 2, .serial = serial});
    const std::vector<std::tuple<>> empties(100);
    CHECK(pool.starmap(empties, 10) == std::vector<bool>(100, true));
    CHECK(pool.starmap_async(empties).get().size() == 100);
    CHECK(pool.starmap(std::vector<std::tuple<>>{}).empty());
    // An input of unknown length: its items are encoded as they come, none reserved ahead.
    auto unsized = std::views::iota(0, 50) | std::views::filter([](int) { return true; }) |
                   std::views::transform([](int) { return std::tuple<>{}; });
    static_assert(!std::ranges::sized_range<decltype(unsized)>);
    CHECK(pool.starmap(unsized, 7).size() == 50);
    CHECK(calls[0] == 250);
  }
}

TEST_CASE("a void F gives mproc::None results and runs once per item") {
  mproc_test::SharedCounters calls(1);
  mproc::Pool pool([&calls](int) { ++calls[0]; }, {.processes = 2});
  const std::vector<mproc::None> results = pool.map(iota_vector(30));
  CHECK(results.size() == 30);
  CHECK(pool.apply(1) == mproc::None{});
  CHECK(calls[0] == 31);
}

TEST_CASE("F may take const references and mutable lvalue references") {
  mproc::Pool by_cref([](const std::string& s) { return s.size(); }, {.processes = 2});
  CHECK(by_cref.map(std::vector<std::string>{"", "ab", "abcd"}) == std::vector<std::size_t>{0, 2, 4});

  mproc::Pool by_ref(
      [](std::vector<int>& v) {
        v.push_back(100);  // F may change its own copy
        return std::accumulate(v.begin(), v.end(), 0);
      },
      {.processes = 2});
  const std::vector<std::vector<int>> inputs{{1, 2}, {}, {5}};
  CHECK(by_ref.map(inputs) == std::vector<int>{103, 100, 105});
  CHECK(inputs == std::vector<std::vector<int>>{{1, 2}, {}, {5}});  // the caller's are untouched
}

TEST_CASE("a lambda's captured state is in the workers without being sent") {
  // Neither a 4 MiB table nor a non-sendable object could travel as an argument;
  // workers inherit both through fork.
  std::vector<int> table(1 << 20);
  std::iota(table.begin(), table.end(), 0);
  auto model = std::make_shared<std::mutex>();  // not Sendable
  mproc::Pool pool(
      [table, model](int i) {
        std::lock_guard lock(*model);
        return table[static_cast<std::size_t>(i)] * 2;
      },
      {.processes = 2});
  CHECK(pool.map(std::vector<int>{0, 1, 1000, (1 << 20) - 1}) == std::vector<int>{0, 2, 2000, ((1 << 20) - 1) * 2});
}

TEST_CASE("a function object with state works as F") {
  struct Scale {
    int factor;
    int operator()(int x) const { return x * factor; }
  };
  mproc::Pool pool(Scale{3}, {.processes = 2});
  CHECK(pool.map(std::vector<int>{1, 2, 3}) == std::vector<int>{3, 6, 9});
}

// ---------------------------------------------------------------------------
// Callbacks

TEST_CASE("apply_async's callback gets the value, before get() returns") {
  mproc::Pool pool(square, {.processes = 2});
  std::atomic<long> seen{-1};
  std::atomic<bool> on_caller_thread{true};
  const auto caller = std::this_thread::get_id();
  auto r = pool.apply_async(9, [&](const long& v) {
    seen = v;
    on_caller_thread = std::this_thread::get_id() == caller;
  });
  CHECK(r.get() == 81);
  CHECK(seen == 81);
  CHECK_FALSE(on_caller_thread);  // callbacks run on the pool's thread
}

TEST_CASE("error_callback receives the RemoteError of a failing task") {
  mproc::Pool pool(
      [](int x) -> int {
        if (x < 0) throw std::invalid_argument("negative: " + std::to_string(x));
        return x;
      },
      {.processes = 2});
  std::mutex m;
  std::string type, message;
  bool value_callback_ran = false;
  auto r = pool.apply_async(
      -5, [&](const int&) { value_callback_ran = true; },
      [&](const mproc::Error& e) {
        std::lock_guard lock(m);
        if (const auto* remote = dynamic_cast<const mproc::RemoteError*>(&e)) {
          type = remote->type_name();
          message = remote->message();
        }
      });
  CHECK_THROWS_AS(r.get(), mproc::RemoteError);
  std::lock_guard lock(m);
  CHECK(type == "std::invalid_argument");
  CHECK(message == "negative: -5");
  CHECK_FALSE(value_callback_ran);
}

TEST_CASE("map_async's callback gets the whole vector and its error_callback the first failure") {
  mproc::Pool pool(
      [](int x) -> int {
        if (x == 3) throw std::runtime_error("three");
        return x + 1;
      },
      {.processes = 2});
  std::vector<int> got;
  auto ok = pool.map_async(std::vector<int>{0, 1, 2}, [&](const std::vector<int>& v) { got = v; });
  CHECK(ok.get() == std::vector<int>{1, 2, 3});
  CHECK(got == std::vector<int>{1, 2, 3});

  std::string error;
  auto bad = pool.map_async(
      iota_vector(10), 2, [&](const std::vector<int>&) { error = "value callback ran"; },
      [&](const mproc::Error& e) { error = e.what(); });
  CHECK_THROWS_AS(bad.get(), mproc::RemoteError);
  CHECK(error == "std::runtime_error: three");
}

TEST_CASE("waiting for another pending result inside a callback is a ValueError, not a hang") {
  Gate first_gate, second_gate;
  const Gate* gates[] = {&first_gate, &second_gate};
  // One worker: the second task waits on its gate right behind the first.
  mproc::Pool pool(
      [&gates](int which) {
        gates[which]->wait();
        return which;
      },
      {.processes = 1});
  mproc::AsyncResult<int> second;
  std::string error;
  auto first = pool.apply_async(0, [&](const int&) {
    try {
      (void)second.get();
      error = "get() returned";
    } catch (const mproc::ValueError& e) {
      error = e.what();
    }
  });
  second = pool.apply_async(1);
  mproc_test::GateWatchdog watchdog(second_gate);
  first_gate.open();  // `second` is assigned: let the first task finish
  CHECK(first.get() == 0);
  CHECK_FALSE(watchdog.stop());  // the first result came while the second task still ran
  CHECK_THAT(error, Catch::Contains("callback"));
  second_gate.open();
  CHECK(second.get() == 1);
}

TEST_CASE("a finished task's result is not held back by the next task on the same worker") {
  Gate gate;
  mproc::Pool pool(
      [&gate](int x) {
        if (x == 1) gate.wait();
        return x;
      },
      {.processes = 1, .chunksize = 1});
  mproc_test::GateWatchdog watchdog(gate);
  auto results = pool.imap(std::vector<int>{0, 1});
  CHECK(results.next() == 0);  // while item 1 is still blocked
  CHECK_FALSE(watchdog.stop());
  gate.open();
  CHECK(results.next() == 1);
  CHECK(results.next() == std::nullopt);
}

// ---------------------------------------------------------------------------
// Serial mode

namespace {

int checked_cube(int x) {
  if (x % 4 == 3) throw std::domain_error("no cube for " + std::to_string(x));
  return x * x * x;
}

/// Each item's outcome as text: the value, or the error's what().
template <class P>
std::vector<std::string> outcomes(P& pool, const std::vector<int>& inputs) {
  std::vector<std::string> out;
  auto results = pool.imap(inputs);
  for (;;) {
    try {
      const auto r = results.next();
      if (!r) break;
      out.push_back(std::to_string(*r));
    } catch (const mproc::Error& e) {
      out.push_back(std::string("error ") + e.what());
    }
  }
  return out;
}

std::string map_error(auto& pool, const std::vector<int>& inputs) {
  try {
    (void)pool.map(inputs);
  } catch (const mproc::RemoteError& e) {
    return std::string(e.what()) + " | " + e.type_name() + " | " + e.message();
  }
  return "no error";
}

}  // namespace

TEST_CASE("serial mode gives what pool mode gives: results and error texts") {
  mproc::Pool workers(checked_cube, {.processes = 2});
  mproc::Pool serial(checked_cube, {.processes = 2, .serial = true});
  REQUIRE(serial.serial());
  REQUIRE_FALSE(workers.serial());
  CHECK(serial.processes() == 1);
  CHECK(serial.worker_pids().empty());

  const std::vector<int> good{0, 1, 2, 4, 5, 6};
  CHECK(serial.map(good) == workers.map(good));
  CHECK(serial.starmap(std::vector<std::tuple<int>>{{1}, {2}}) ==
        workers.starmap(std::vector<std::tuple<int>>{{1}, {2}}));
  CHECK(serial.apply(5) == workers.apply(5));

  const std::vector<int> mixed = iota_vector(12);
  const auto expected = outcomes(workers, mixed);
  CHECK(outcomes(serial, mixed) == expected);
  CHECK(expected[3] == "error std::domain_error: no cube for 3");
  CHECK(map_error(serial, mixed) == map_error(workers, mixed));
  CHECK(map_error(workers, mixed) == "std::domain_error: no cube for 3 | std::domain_error | no cube for 3");

  auto u = drain(serial.imap_unordered(good));
  std::sort(u.begin(), u.end());
  CHECK(u == serial.map(good));
  CHECK_THROWS_AS(serial.apply_async(7).get(), mproc::RemoteError);
}

namespace {

/// A value whose decoding refuses negative numbers, as a user type that keeps an
/// invariant may: a worker cannot decode such an item.
struct NonNegative {
  int value;
};

}  // namespace

template <>
struct mproc::Codec<NonNegative> {
  static void encode(detail::Writer& w, const NonNegative& n) { w.pod(n.value); }
  static NonNegative decode(detail::Reader& r) {
    const int v = r.pod<int>();
    if (v < 0) throw ProtocolError("negative value");
    return {v};
  }
};

TEST_CASE("an argument that cannot be decoded fails it and the rest of its chunk, in serial mode too") {
  // One chunk of 8: item 3 does not decode, so neither can the items after it be
  // found; they fail as well instead of never arriving (imap would wait forever).
  std::vector<NonNegative> inputs;
  for (int i = 0; i < 8; ++i) inputs.push_back({i == 3 ? -1 : i});
  const auto run = [&](bool serial) {
    mproc::Pool pool([](NonNegative n) { return n.value; }, {.processes = 1, .serial = serial});
    std::vector<std::string> out;
    auto results = pool.imap(inputs, 8);
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      try {
        const auto r = results.next();
        out.push_back(r ? std::to_string(*r) : "end");
      } catch (const mproc::Error& e) {
        out.push_back(std::string("error ") + e.what());
      }
    }
    CHECK(results.next() == std::nullopt);
    return out;
  };
  const auto serial = run(true);
  CHECK(serial == run(false));
  REQUIRE(serial.size() == 8);
  CHECK(serial[2] == "2");
  CHECK_THAT(serial[3], Catch::Contains("negative value"));
  CHECK_THAT(serial[4], Catch::Contains("could not decode the arguments of task 4"));
  CHECK_THAT(serial[7], Catch::Contains("could not decode the arguments of task 7"));
}

TEST_CASE("serial mode runs F in the calling process and can be chosen by MPROC_SERIAL") {
  ::setenv("MPROC_SERIAL", "1", 1);
  mproc::Pool pool([](int) { return ::getpid(); });
  ::unsetenv("MPROC_SERIAL");
  CHECK(pool.serial());
  CHECK(pool.map(std::vector<int>{1, 2}) == std::vector<pid_t>{::getpid(), ::getpid()});

  ::setenv("MPROC_SERIAL", "0", 1);
  mproc::Pool not_serial([](int) { return ::getpid(); }, {.processes = 1});
  ::unsetenv("MPROC_SERIAL");
  CHECK_FALSE(not_serial.serial());
  CHECK(not_serial.apply(0) != ::getpid());
}

// ---------------------------------------------------------------------------
// Threads, progress

TEST_CASE("one pool used from two user threads at once") {
  mproc::Pool pool(square, {.processes = 2});
  std::atomic<int> wrong{0};
  auto user = [&](int offset) {
    for (int round = 0; round < 20; ++round) {
      std::vector<int> in(50);
      std::iota(in.begin(), in.end(), offset + round);
      const auto out = pool.map(in);
      for (std::size_t i = 0; i < in.size(); ++i) {
        if (out[i] != long{in[i]} * in[i]) ++wrong;
      }
      if (pool.apply_async(offset).get() != long{offset} * offset) ++wrong;
      long k = offset;
      for (long r : pool.imap(std::vector<int>{offset, offset + 1})) {
        if (r != k * k) ++wrong;
        ++k;
      }
    }
  };
  std::thread a(user, 0), b(user, 100000);
  a.join();
  b.join();
  CHECK(wrong == 0);
}

TEST_CASE("progress draws a final bar line on stderr when it is not a terminal") {
  mproc::Pool pool(square, {.processes = 2, .progress = true});
  CaptureStderr capture;
  const auto results = pool.map(iota_vector(1000));
  const std::string text = capture.text();
  CHECK(results == squares(1000));
  INFO(text);
  CHECK(std::regex_search(text, std::regex(R"(100%\|#{20}\| 1000/1000 \[\d\d:\d\d<[^,]*, [0-9.]+ it/s\]\n$)")));
}

TEST_CASE("on a terminal the progress bar redraws its line in place, clearing the rest of the old one") {
  // A pseudo-terminal stands in for the user's: the bar sees a tty and draws for one.
  mproc::detail::Fd terminal(::posix_openpt(O_RDWR | O_NOCTTY));
  REQUIRE(terminal);
  REQUIRE(::grantpt(terminal.get()) == 0);
  REQUIRE(::unlockpt(terminal.get()) == 0);
  mproc::detail::Fd bar_side(::open(::ptsname(terminal.get()), O_RDWR | O_NOCTTY));
  REQUIRE(bar_side);
  {
    mproc::detail::ProgressBar bar(std::size_t{10}, bar_side.get());
    bar.update(10);
  }  // the last drawing, then the end of the line
  std::string text;
  ::fcntl(terminal.get(), F_SETFL, O_NONBLOCK);
  char buf[4096];
  for (ssize_t n; (n = ::read(terminal.get(), buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(n));
  INFO(text);
  // Each drawing: back to the line's start, the line, then erase to its end (a line
  // shorter than the one before leaves no stale characters). The terminal may show
  // the final newline as "\r\n".
  CHECK(std::regex_match(text, std::regex(R"((\r[^\r\n\x1b]*\x1b\[K)+\r?\n)")));
  CHECK_THAT(text, Catch::Contains("10/10"));
}
