// Pool<F> when things go wrong: exceptions from F come back as RemoteError; a worker
// that dies (SIGKILL, SIGSEGV, std::exit) fails exactly the item it ran with
// WorkerLost while the rest succeed on a replacement; retries; task_timeout; a
// failing initializer breaks the pool.

#include "picky_support.hpp"
#include "pool_test_support.hpp"

#include <mproc/detail/engine/lane.hpp>  // Lane: its size, to find its mappings
#include <mproc/mproc.hpp>

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

namespace app {
/// A user exception type in a namespace, to check the name that comes back.
struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace app

namespace {

using namespace std::chrono_literals;

std::vector<int> iota_vector(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i);
  return v;
}

/// Each item's outcome from an imap: its value, or the exception it threw.
using Outcome = std::variant<int, std::exception_ptr>;

template <class R>
std::vector<Outcome> outcomes(mproc::IMap<R> results) {
  std::vector<Outcome> out;
  for (;;) {
    try {
      auto r = results.next();
      if (!r) break;
      out.emplace_back(*r);
    } catch (...) {
      out.emplace_back(std::current_exception());
    }
  }
  return out;
}

/// Runs f, which must throw an E, and returns that E (or fails the test).
template <class E, class F>
E thrown_by(F&& f) {
  try {
    (void)f();
  } catch (const E& e) {
    return e;
  } catch (const std::exception& e) {
    FAIL("unexpected exception: " << e.what());
  }
  FAIL("no exception");
  throw std::logic_error("not reached");
}

/// The exception an outcome holds, which must be an E.
template <class E>
E error_of(const Outcome& o) {
  REQUIRE(o.index() == 1);
  return thrown_by<E>([&] { std::rethrow_exception(std::get<1>(o)); });
}

/// Checks that every item but `failed` succeeded with F(i) == i.
void check_others_succeeded(const std::vector<Outcome>& out, std::size_t failed) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (i == failed) continue;
    INFO("item " << i);
    REQUIRE(out[i].index() == 0);
    CHECK(std::get<0>(out[i]) == static_cast<int>(i));
  }
}

/// F that returns its argument, except that its worker dies by signal `sig` when
/// given `victim`.
struct DiesAt {
  int victim;
  int sig;
  int operator()(int x) const {
    if (x == victim) mproc_test::die_by_signal(sig);
    return x;
  }
};

using mproc_test::CerealPicky;
using mproc_test::CodecPicky;

/// What a decode failure of item `task` whose decoding threw `thrown` says.
template <class Call>
void check_decode_failure(Call&& call, const std::string& task, const std::string& thrown) {
  const auto e = thrown_by<mproc::ProtocolError>(std::forward<Call>(call));
  CHECK_THAT(e.what(), Catch::Contains(task) && Catch::Contains(thrown));
}

}  // namespace

// ---------------------------------------------------------------------------
// Exceptions

TEST_CASE("an exception thrown by F comes back as RemoteError with its type and message") {
  mproc::Pool pool(
      [](int kind) -> int {
        if (kind == 0) throw std::invalid_argument("bad input 3");
        if (kind == 1) throw app::ParseError("line 7: unexpected '}'");
        if (kind == 2) throw 42;  // not a std::exception
        return kind;
      },
      {.processes = 2});
  const auto standard = thrown_by<mproc::RemoteError>([&] { return pool.apply(0); });
  CHECK(standard.type_name() == "std::invalid_argument");
  CHECK(standard.message() == "bad input 3");
  CHECK(std::string(standard.what()) == "std::invalid_argument: bad input 3");
  const auto user = thrown_by<mproc::RemoteError>([&] { return pool.apply(1); });
  CHECK(user.type_name() == "app::ParseError");
  CHECK(user.message() == "line 7: unexpected '}'");
  const auto other = thrown_by<mproc::RemoteError>([&] { return pool.apply(2); });
  CHECK(other.type_name() == "int");
  CHECK(other.message().empty());
  CHECK(pool.apply(3) == 3);  // the workers survive their tasks' exceptions
  CHECK(pool.worker_pids().size() == 2);
}

TEST_CASE("map raises the first failure in input order, not the first to happen") {
  // Item 5 fails late (it sleeps first), item 30 fails early: map must report item 5.
  mproc::Pool pool(
      [](int x) -> int {
        if (x == 5) {
          std::this_thread::sleep_for(200ms);
          throw std::runtime_error("item 5");
        }
        if (x == 30) throw std::runtime_error("item 30");
        return x;
      },
      {.processes = 2, .chunksize = 1});
  CHECK_THROWS_WITH(pool.map(iota_vector(40)), "std::runtime_error: item 5");
  CHECK_THROWS_WITH(pool.map_async(iota_vector(40)).get(), "std::runtime_error: item 5");
  auto failed = pool.map_async(iota_vector(40));
  failed.wait();
  CHECK(failed.ready());
  CHECK_FALSE(failed.successful());
}

TEST_CASE("imap raises a failed item at its position and iteration continues") {
  mproc::Pool pool(
      [](int x) -> int {
        if (x % 10 == 3) throw std::out_of_range("x=" + std::to_string(x));
        return x;
      },
      {.processes = 2});
  const auto out = outcomes(pool.imap(iota_vector(30)));
  REQUIRE(out.size() == 30);
  for (std::size_t i = 0; i < out.size(); ++i) {
    INFO("item " << i);
    if (i % 10 == 3) {
      CHECK(error_of<mproc::RemoteError>(out[i]).message() == "x=" + std::to_string(i));
    } else {
      CHECK(std::get<0>(out[i]) == static_cast<int>(i));
    }
  }
}

// ---------------------------------------------------------------------------
// Results and arguments that do not decode

TEST_CASE("a result whose decoding throws anything fails that task alone with ProtocolError, and the pool goes on") {
  for (const bool serial : {false, true}) {
    INFO((serial ? "serial" : "pool"));
    mproc::Pool pool([](int x) { return CerealPicky{x}; }, {.processes = 2, .serial = serial});
    check_decode_failure([&] { return pool.apply(-1); }, "the result of task 0", "int");
    check_decode_failure([&] { return pool.apply(-2); }, "task 0", "no negative values");
    check_decode_failure([&] { return pool.apply(-3); }, "task 0", "std::bad_alloc");
    // Several in flight: only the undecodable ones fail.
    const std::vector<int> inputs{5, -1, 6, -2, 7, -3, 8};
    std::vector<mproc::AsyncResult<CerealPicky>> pending;
    for (int x : inputs) pending.push_back(pool.apply_async(x));
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i] < 0) CHECK_THROWS_AS(pending[i].get(), mproc::ProtocolError);
      else CHECK(pending[i].get().value == inputs[i]);
    }
    // In one chunk, the results after an undecodable one still arrive.
    const auto out = outcomes(pool.imap(std::vector<int>{0, 1, -2, 3, -1, 5}, 6));
    REQUIRE(out.size() == 6);
    for (std::size_t i : {0u, 1u, 3u, 5u}) CHECK(std::get<0>(out[i]) == static_cast<int>(i));
    CHECK_THAT(error_of<mproc::ProtocolError>(out[2]).what(), Catch::Contains("the result of task 2"));
    CHECK_THAT(error_of<mproc::ProtocolError>(out[4]).what(), Catch::Contains("the result of task 4"));
    check_decode_failure([&] { return pool.map(std::vector<int>{0, 1, -2, 3}, 4); }, "task 2", "std::runtime_error");
    CHECK(pool.apply(9).value == 9);
    CHECK(pool.map(iota_vector(20)).size() == 20);
  }
}

TEST_CASE("a Codec<T> result that does not decode fails its task with ProtocolError; the rest of its chunk too") {
  // A Codec's decode that throws leaves no way to find where the next result starts.
  for (const bool serial : {false, true}) {
    INFO((serial ? "serial" : "pool"));
    mproc::Pool pool([](int x) { return CodecPicky{x}; }, {.processes = 1, .serial = serial});
    check_decode_failure([&] { return pool.apply(-1); }, "the result of task 0", "int");
    check_decode_failure([&] { return pool.apply_async(-2).get(); }, "task 0", "no negative values");
    const auto out = outcomes(pool.imap(std::vector<int>{0, -3, 2}, 3));
    REQUIRE(out.size() == 3);
    CHECK(std::get<0>(out[0]) == 0);
    CHECK_THAT(error_of<mproc::ProtocolError>(out[1]).what(), Catch::Contains("std::bad_alloc"));
    CHECK_THAT(error_of<mproc::ProtocolError>(out[2]).what(), Catch::Contains("the result of task 2"));
    CHECK(pool.apply(4).value == 4);
  }
}

TEST_CASE("an argument whose decoding throws anything fails its task with a RemoteError of type ProtocolError") {
  for (const bool serial : {false, true}) {
    INFO((serial ? "serial" : "pool"));
    mproc::Pool pool([](CerealPicky a, CodecPicky b) { return a.value + b.value; }, {.processes = 1, .serial = serial});
    struct Refused {
      CerealPicky a;
      CodecPicky b;
      const char* thrown;
    };
    for (const Refused& r :
         {Refused{{-1}, {0}, "int"}, Refused{{0}, {-2}, "no negative values"}, Refused{{-3}, {0}, "std::bad_alloc"}}) {
      const auto e = thrown_by<mproc::RemoteError>([&] { return pool.apply(r.a, r.b); });
      CHECK(e.type_name() == "mproc::ProtocolError");
      CHECK_THAT(e.message(), Catch::Contains("arguments") && Catch::Contains(r.thrown));
    }
    CHECK(pool.apply(CerealPicky{1}, CodecPicky{2}) == 3);
  }
}

// ---------------------------------------------------------------------------
// Workers that die

TEST_CASE("a worker killed by SIGKILL fails exactly its item with WorkerLost") {
  mproc::Pool pool(DiesAt{7, SIGKILL}, {.processes = 2});
  const auto out = outcomes(pool.imap(iota_vector(20)));
  REQUIRE(out.size() == 20);
  const auto lost = error_of<mproc::WorkerLost>(out[7]);
  CHECK(lost.signal() == SIGKILL);
  CHECK_FALSE(lost.exit_code());
  CHECK_THAT(lost.what(), Catch::Contains("SIGKILL") && Catch::Contains("task 7"));
  check_others_succeeded(out, 7);
  CHECK(pool.map(std::vector<int>{10, 11, 12}) == std::vector<int>{10, 11, 12});  // the pool goes on
}

TEST_CASE("a worker dying of SIGSEGV fails its item with WorkerLost and map raises it") {
  mproc::Pool pool(DiesAt{4, SIGSEGV}, {.processes = 2});
  const auto lost = thrown_by<mproc::WorkerLost>([&] { return pool.map(iota_vector(12)); });
  CHECK(lost.signal() == SIGSEGV);
  CHECK_THAT(lost.what(), Catch::Contains("SIGSEGV"));
  const auto out = outcomes(pool.imap(iota_vector(12)));
  CHECK(error_of<mproc::WorkerLost>(out[4]).signal() == SIGSEGV);
  check_others_succeeded(out, 4);
}

TEST_CASE("a worker calling std::exit in the middle of a map fails its item with its exit code") {
  mproc::Pool pool(
      [](int x) {
        if (x == 9) std::exit(7);
        return x;
      },
      {.processes = 2});
  const auto out = outcomes(pool.imap(iota_vector(25)));
  REQUIRE(out.size() == 25);
  const auto lost = error_of<mproc::WorkerLost>(out[9]);
  CHECK(lost.exit_code() == 7);
  CHECK_FALSE(lost.signal());
  CHECK_THAT(lost.what(), Catch::Contains("code 7"));
  check_others_succeeded(out, 9);

  auto r = pool.apply_async(9);
  CHECK_THROWS_AS(r.get(), mproc::WorkerLost);
}

TEST_CASE("the items a dead worker held run again on a replacement worker") {
  // One worker, one chunk of 10 items: when it dies at item 3, items 0-2 (done, but
  // their results not sent) and 4-9 (not started) must all be re-run elsewhere, and
  // with only one worker, elsewhere means a replacement.
  mproc::Pool pool(DiesAt{3, SIGKILL}, {.processes = 1, .chunksize = 10});
  CHECK(pool.apply(0) == 0);  // the first worker is up
  const auto before = pool.worker_pids();
  REQUIRE(before.size() == 1);
  const auto out = outcomes(pool.imap(iota_vector(10)));
  REQUIRE(out.size() == 10);
  CHECK(error_of<mproc::WorkerLost>(out[3]).signal() == SIGKILL);
  check_others_succeeded(out, 3);
  CHECK(pool.map(std::vector<int>{10, 11}, 2) == std::vector<int>{10, 11});
  const auto after = pool.worker_pids();
  REQUIRE(after.size() == 1);
  CHECK(std::find(before.begin(), before.end(), after[0]) == before.end());
}

// ---------------------------------------------------------------------------
// Retries

TEST_CASE("retries: a task whose worker died on the first attempt succeeds on the next") {
  mproc_test::SharedCounters attempts(1);
  auto dies_first_time = [&attempts](int x) {
    if (x == 4 && attempts[0]++ == 0) mproc_test::die_by_signal(SIGKILL);
    return x;
  };
  SECTION("retries = 1: it succeeds") {
    mproc::Pool pool(dies_first_time, {.processes = 2, .retries = 1});
    CHECK(pool.map(iota_vector(10)) == iota_vector(10));
    CHECK(attempts[0] == 2);
  }
  SECTION("retries = 0: it fails with WorkerLost") {
    mproc::Pool pool(dies_first_time, {.processes = 2, .retries = 0});
    CHECK_THROWS_AS(pool.map(iota_vector(10)), mproc::WorkerLost);
    CHECK(attempts[0] == 1);
  }
}

TEST_CASE("retries are counted per task: a task that always kills its worker fails after 1 + retries runs") {
  mproc_test::SharedCounters runs(2);
  mproc::Pool pool(
      [&runs](int x) {
        if (x == 2) {
          ++runs[0];
          mproc_test::die_by_signal(SIGKILL);
        }
        if (x == 6) {
          ++runs[1];
          mproc_test::die_by_signal(SIGKILL);
        }
        return x;
      },
      {.processes = 2, .retries = 2});
  const auto out = outcomes(pool.imap(iota_vector(10)));
  REQUIRE(out.size() == 10);
  CHECK_THAT(error_of<mproc::WorkerLost>(out[2]).what(), Catch::Contains("attempt 3"));
  CHECK(error_of<mproc::WorkerLost>(out[6]).signal() == SIGKILL);
  CHECK(runs[0] == 3);
  CHECK(runs[1] == 3);
  for (int i : {0, 1, 3, 4, 5, 7, 8, 9}) CHECK(std::get<0>(out[static_cast<std::size_t>(i)]) == i);
}

namespace {

/// Makes the header page of every shared-memory lane this worker maps read-only (the
/// mappings of exactly that size of the memfds named "mproc-lane"). Each lane's data
/// is mapped as a longer copy of that mapping, with its protection, so the worker's
/// next outcome big enough for a lane faults (SIGSEGV) while being copied there:
/// after its chunk ran, before the pool has its result, with no item running.
void poison_lanes() {
  using mproc::detail::Lane;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t start = 0, end = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR, &start, &end) != 2) continue;
    if (end - start != Lane::header_bytes || line.find("/memfd:mproc-lane") == std::string::npos) continue;
    // (In the worker: no Catch here. A failure aborts, which the test sees.)
    if (::mprotect(reinterpret_cast<void*>(start), Lane::header_bytes, PROT_READ) != 0) std::abort();
  }
}

}  // namespace

TEST_CASE("a worker that always dies after running a chunk, before its result is out, fails its first task after "
          "retries + 1 requeues") {
  // Nothing runs when it dies, so no item is to blame: the chunk it was on goes back
  // to the queue, but not forever; and item by item, so that only the task whose
  // result kills the worker fails, not the first of its chunk.
  for (const auto& [chunksize, retries] : {std::pair<std::size_t, std::size_t>{1, 0}, {1, 2}, {4, 0}, {4, 2}}) {
    INFO("chunksize " << chunksize << ", retries " << retries);
    mproc_test::SharedCounters runs(1);
    mproc::Pool pool(
        [&runs](int x) {
          if (x != 5) return std::vector<char>(1, static_cast<char>(x));
          ++runs[0];
          std::signal(SIGSEGV, SIG_DFL);  // the fault kills the worker (no test runner's handler)
          poison_lanes();
          return std::vector<char>(mproc::detail::Lane::min_payload + 1000, 'x');  // goes through the lane
        },
        {.processes = 2, .chunksize = chunksize, .retries = retries});
    auto results = pool.imap(iota_vector(12));
    for (int i = 0; i < 12; ++i) {
      INFO("item " << i);
      if (i == 5) {
        const auto lost = thrown_by<mproc::WorkerLost>([&] { return results.next(); });
        CHECK(lost.signal() == SIGSEGV);
        CHECK_THAT(lost.what(), Catch::Contains("holding task 5 with no task running"));
      } else {
        const auto r = results.next();
        REQUIRE(r);
        CHECK(*r == std::vector<char>(1, static_cast<char>(i)));
      }
    }
    CHECK_FALSE(results.next());
    CHECK(runs[0] == static_cast<int>(retries) + 2);  // the first run and retries + 1 requeues
    CHECK(pool.apply(7) == std::vector<char>(1, 7));  // and the pool goes on
  }
}

// ---------------------------------------------------------------------------
// task_timeout

TEST_CASE("task_timeout: only the item that runs too long fails, with TimeoutError") {
  mproc::Pool pool(
      [](int x) {
        if (x == 6) std::this_thread::sleep_for(1h);  // killed long before
        return x;
      },
      {.processes = 2, .task_timeout = 1s});
  const auto out = outcomes(pool.imap(iota_vector(15)));
  REQUIRE(out.size() == 15);
  CHECK_THAT(error_of<mproc::TimeoutError>(out[6]).what(), Catch::Contains("task_timeout"));
  check_others_succeeded(out, 6);
  CHECK(pool.apply(1) == 1);  // a replacement took the killed worker's place
  CHECK(pool.worker_pids().size() == 2);

  auto r = pool.apply_async(6);
  CHECK_THROWS_AS(r.get(), mproc::TimeoutError);
}

TEST_CASE("task_timeout is not a retry: a timed-out task fails even with retries") {
  mproc_test::SharedCounters runs(1);
  mproc::Pool pool(
      [&runs](int x) {
        ++runs[0];
        std::this_thread::sleep_for(1h);
        return x;
      },
      {.processes = 1, .task_timeout = 500ms, .retries = 3});
  CHECK_THROWS_AS(pool.apply(0), mproc::TimeoutError);
  CHECK(runs[0] == 1);
}

// ---------------------------------------------------------------------------
// Initializer failures

TEST_CASE("an initializer that throws breaks the pool: calls fail with its RemoteError") {
  std::vector<std::string> texts[2];
  for (bool serial : {false, true}) {
    INFO("serial " << serial);
    mproc::Pool pool(
        [](int x) { return x; },
        {.processes = 2, .initializer = [] { throw std::runtime_error("no model file"); }, .serial = serial});
    const auto broken = thrown_by<mproc::RemoteError>([&] { return pool.map(iota_vector(4)); });
    CHECK(broken.type_name() == "std::runtime_error");
    CHECK_THAT(broken.message(), Catch::Contains("no model file"));
    // And every later call, even after close().
    auto& seen = texts[serial ? 1 : 0];
    seen.push_back(broken.what());
    seen.push_back(thrown_by<mproc::RemoteError>([&] { return pool.apply(1); }).what());
    seen.push_back(thrown_by<mproc::RemoteError>([&] { return pool.imap(iota_vector(3)); }).what());
    seen.push_back(thrown_by<mproc::RemoteError>([&] { return pool.apply_async(2).get(); }).what());
    pool.close();
    seen.push_back(
        thrown_by<mproc::RemoteError>([&] { return pool.starmap(std::vector<std::tuple<int>>{{1}}); }).what());
  }
  CHECK(texts[1] == texts[0]);  // serial mode gives the same errors
}
