// mproc::mpi::Pool against the local mproc::Pool: every method on the same inputs
// gives the same results and the same errors. Runs under `mpirun -n 3`: every rank
// runs every TEST_CASE in the same order (SPMD). Making an MPI pool is collective;
// the serving ranks serve inside its constructor and then return, so each case
// checks its results only `if (pool.is_master())`, where the local pool is made.

#include "../picky_support.hpp"

#include <mproc/mpi.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <ranges>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;

// Started before the tests, finalized after them (so pools never outlive MPI).
mproc::mpi::Environment environment;

std::vector<int> iota_vector(int n, int from = 0) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), from);
  return v;
}

long square(int x) { return long{x} * x; }

/// Throws for negative inputs, as a user's function does on bad data.
long checked_square(int x) {
  if (x < 0) throw std::invalid_argument("negative input " + std::to_string(x));
  return long{x} * x;
}

long multiply(int a, int b) { return long{a} * b; }

long checked_multiply(int a, int b) {
  if (a < 0) throw std::invalid_argument("negative factor " + std::to_string(a));
  return long{a} * b;
}

/// What a call threw, as text that two pools must agree on: the mproc exception
/// type, and for a RemoteError the remote type and message.
template <class Call>
std::string error_of(Call&& call) {
  try {
    call();
  } catch (const mproc::RemoteError& e) {
    return "RemoteError[" + e.type_name() + "][" + e.message() + "]";
  } catch (const mproc::PoolClosed&) {
    return "PoolClosed";
  } catch (const mproc::ValueError&) {
    return "ValueError";
  } catch (const mproc::Error& e) {
    return std::string("Error: ") + e.what();
  }
  return "no error";
}

/// A number a call returns, as text, or what it threw as error_of's text.
template <class Get>
std::string value_or_error(Get&& get) {
  std::string value;
  const std::string error = error_of([&] { value = std::to_string(get()); });
  return error == "no error" ? value : error;
}

/// Every result of an IMap (errors as their error_of text) in the order it yields them.
template <class R>
std::vector<std::string> drain(mproc::IMap<R>&& results) {
  std::vector<std::string> out;
  for (auto it = results.begin(); it != results.end(); ++it) out.push_back(value_or_error([&] { return *it; }));
  return out;
}

/// A user type: cereal serialization makes it Sendable.
struct Record {
  std::string name;
  std::vector<double> values;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, values);
  }
};

int world_rank() { return mproc::detail::comm_rank(MPI_COMM_WORLD); }

int forty_two() { return 42; }

mproc_test::CerealPicky picky(int x) { return {x}; }  // doesn't decode if negative

}  // namespace

TEST_CASE("map, starmap and their async forms give the local pool's results") {
  mproc::mpi::Pool pool(square);
  if (!pool.is_master()) return;
  mproc::Pool local(square, {.processes = 2});
  CHECK(pool.processes() == 2);
  CHECK_FALSE(pool.serial());

  const auto big = iota_vector(20000, -10000);
  CHECK(pool.map(big) == local.map(big));
  const auto small = iota_vector(200);
  CHECK(pool.map(small, 1) == local.map(small, 1));
  CHECK(pool.map(small, 7) == local.map(small, 7));
  CHECK(pool.map(std::vector<int>{}).empty());

  std::vector<long> from_callback;
  auto async = pool.map_async(small, [&](const std::vector<long>& r) { from_callback = r; });
  CHECK(async.get() == local.map(small));
  CHECK(from_callback == async.get());
}

TEST_CASE("starmap over pairs and tuples equals the local pool's") {
  mproc::mpi::Pool pool(multiply);
  if (!pool.is_master()) return;
  mproc::Pool local(multiply, {.processes = 2});
  std::vector<std::pair<int, int>> pairs;
  std::vector<std::tuple<int, int>> tuples;
  for (int i = 0; i < 500; ++i) {
    pairs.emplace_back(i, 3 - i);
    tuples.emplace_back(i, i);
  }
  CHECK(pool.starmap(pairs) == local.starmap(pairs));
  CHECK(pool.starmap_async(tuples, 5).get() == local.starmap(tuples, 5));
  CHECK(pool.apply(6, 7) == 42);
}

TEST_CASE("an F with no parameters: apply, apply_async and starmap over empty tuples, as locally") {
  mproc::mpi::Pool pool(forty_two);
  if (!pool.is_master()) return;
  mproc::Pool local(forty_two, {.processes = 2});
  CHECK(pool.apply() == 42);
  std::vector<mproc::AsyncResult<int>> pending;
  for (int i = 0; i < 10; ++i) pending.push_back(pool.apply_async());
  for (auto& r : pending) CHECK(r.get() == 42);
  const std::vector<std::tuple<>> empties(30);
  CHECK(pool.starmap(empties, 4) == local.starmap(empties, 4));
  CHECK(pool.starmap(empties).size() == 30);
}

TEST_CASE("a result that does not decode on the master fails its task alone, as locally") {
  mproc::mpi::Pool pool(picky);
  if (!pool.is_master()) return;
  mproc::Pool local(picky, {.processes = 2});
  const auto outcomes = [](auto& p) {
    std::vector<std::string> out;
    for (int x : {3, -1, 4}) out.push_back(value_or_error([&] { return p.apply(x).value; }));
    auto results = p.imap(std::vector<int>{5, -2, 6}, 3);  // one chunk
    for (auto it = results.begin(); it != results.end(); ++it) out.push_back(value_or_error([&] { return it->value; }));
    out.push_back(value_or_error([&] { return p.apply(7).value; }));  // the pool goes on
    return out;
  };
  const auto seen = outcomes(pool);
  CHECK(seen == outcomes(local));
  REQUIRE(seen.size() == 7);
  CHECK(seen[0] == "3");
  CHECK(seen[1] == "Error: mproc: cannot decode the result of task 0 (mproc: cannot decode a cereal-serialized "
                   "mproc_test::CerealPicky: int)");
  CHECK(seen[3] == "5");
  CHECK(seen[4].starts_with("Error: mproc: cannot decode the result of task 1"));
  CHECK(seen[5] == "6");
  CHECK(seen[6] == "7");
}

TEST_CASE("starmap and starmap_async with a throwing F fail as the local pool's") {
  mproc::mpi::Pool pool(checked_multiply);
  if (!pool.is_master()) return;
  mproc::Pool local(checked_multiply, {.processes = 2});
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < 300; ++i) pairs.emplace_back(i % 97 == 50 ? -i : i, 2);  // -50 and -147 fail
  const std::string expected = "RemoteError[std::invalid_argument][negative factor -50]";  // the first in input order
  CHECK(error_of([&] { pool.starmap(pairs); }) == expected);
  CHECK(error_of([&] { local.starmap(pairs); }) == expected);
  CHECK(error_of([&] { pool.starmap(pairs, 1); }) == error_of([&] { local.starmap(pairs, 1); }));

  auto failing_async = [&](auto& p) {
    std::string from_error_callback = "no callback";
    auto result = p.starmap_async(pairs, 7, nullptr, [&](const mproc::Error& e) { from_error_callback = e.what(); });
    result.wait();
    return std::vector<std::string>{error_of([&] { result.get(); }), from_error_callback,
                                    result.successful() ? "successful" : "failed"};
  };
  const auto got = failing_async(pool);
  CHECK(got == failing_async(local));
  CHECK(got[0] == expected);
}

TEST_CASE("payloads: strings, nested containers, user types and a 16 MiB vector") {
  auto summarize = [](const Record& r) {
    return std::map<std::string, double>{{r.name, std::accumulate(r.values.begin(), r.values.end(), 0.0)}};
  };
  auto reverse = [](std::vector<std::uint8_t> v) {
    std::reverse(v.begin(), v.end());
    return v;
  };
  mproc::mpi::Pool records(summarize);
  if (records.is_master()) {
    mproc::Pool local(summarize, {.processes = 2});
    std::vector<Record> in;
    for (int i = 0; i < 300; ++i) in.push_back({"r" + std::to_string(i), std::vector<double>(std::size_t(i % 17), i)});
    CHECK(records.map(in) == local.map(in));
  }
  records.close();
  records.join();

  mproc::mpi::Pool big(reverse);
  if (big.is_master()) {
    std::vector<std::uint8_t> payload(std::size_t{16} << 20);
    for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::uint8_t>(i * 7);
    auto expected = payload;
    std::reverse(expected.begin(), expected.end());
    CHECK(big.apply(payload) == expected);
  }
}

TEST_CASE("imap and imap_unordered equal the local pool's, next() included") {
  mproc::mpi::Pool pool(checked_square);
  if (!pool.is_master()) return;
  mproc::Pool local(checked_square, {.processes = 2});
  auto inputs = iota_vector(3000, -2);  // -2 and -1 fail, the rest succeed
  CHECK(drain(pool.imap(inputs)) == drain(local.imap(inputs)));
  CHECK(drain(pool.imap(inputs, 1)) == drain(local.imap(inputs, 1)));
  auto unordered = drain(pool.imap_unordered(inputs));
  auto local_unordered = drain(local.imap_unordered(inputs));
  std::sort(unordered.begin(), unordered.end());
  std::sort(local_unordered.begin(), local_unordered.end());
  CHECK(unordered == local_unordered);

  auto it = pool.imap(std::vector<int>{3, 4});
  CHECK(it.next() == std::optional<long>(9));
  CHECK(it.next() == std::optional<long>(16));
  CHECK(it.next() == std::nullopt);
}

TEST_CASE("imap over an endless input pulls only a bounded window, as locally") {
  auto slow = [](int x) {
    std::this_thread::sleep_for(1ms);
    return x;
  };
  mproc::mpi::Pool pool(slow);
  if (!pool.is_master()) return;
  mproc::Pool local(slow, {.processes = 2});
  for (auto* which : {static_cast<void*>(&pool), static_cast<void*>(&local)}) {
    std::size_t pulled = 0;  // elements read from the endless input
    auto input = std::views::iota(0) | std::views::transform([&pulled](int x) {
                   ++pulled;
                   return x;
                 });
    {
      auto results = which == &pool ? pool.imap(input) : local.imap(input);
      int taken = 0;
      for (int r : results) {
        CHECK(r == taken);
        if (++taken == 100) break;
      }
    }
    INFO("pulled " << pulled << " elements to hand out 100 results");
    CHECK(pulled >= 100);
    CHECK(pulled < 5000);
  }
  CHECK(pool.map(iota_vector(10)) == local.map(iota_vector(10)));  // still usable after the break
}

TEST_CASE("errors come back as the local pool's: map, apply, apply_async callbacks, map_async") {
  mproc::mpi::Pool pool(checked_square);
  if (!pool.is_master()) return;
  mproc::Pool local(checked_square, {.processes = 2});
  const std::vector<int> inputs = {5, 4, -3, 2, -1, 0};
  const std::string expected = "RemoteError[std::invalid_argument][negative input -3]";  // the first in input order
  CHECK(error_of([&] { pool.map(inputs); }) == expected);
  CHECK(error_of([&] { local.map(inputs); }) == expected);
  CHECK(error_of([&] { pool.map(inputs, 1); }) == error_of([&] { local.map(inputs, 1); }));
  CHECK(error_of([&] { pool.apply(-8); }) == error_of([&] { local.apply(-8); }));

  // What the callbacks of apply_async and map_async saw, in a stable order.
  auto callbacks_saw = [&](auto& p) {
    std::vector<std::string> seen;
    std::mutex seen_mutex;
    auto note = [&](std::string what) {
      std::lock_guard lock(seen_mutex);
      seen.push_back(std::move(what));
    };
    std::vector<mproc::AsyncResult<long>> results;
    for (int x : {3, -4, 5}) {
      results.push_back(p.apply_async(
          x, [&](const long& v) { note("value " + std::to_string(v)); },
          [&](const mproc::Error& e) { note(std::string("error ") + e.what()); }));
    }
    std::vector<std::string> outcomes;
    for (auto& r : results) outcomes.push_back(value_or_error([&] { return r.get(); }));
    auto mapped = p.map_async(inputs, 2, nullptr, [&](const mproc::Error& e) { note(std::string("map ") + e.what()); });
    mapped.wait();
    outcomes.push_back(mapped.successful() ? "map successful" : "map failed");
    std::sort(seen.begin(), seen.end());
    seen.insert(seen.end(), outcomes.begin(), outcomes.end());
    return seen;
  };
  const auto seen = callbacks_saw(pool);
  CHECK(seen == callbacks_saw(local));
  CHECK(std::count(seen.begin(), seen.end(), "RemoteError[std::invalid_argument][negative input -4]") == 1);
  CHECK(std::count(seen.begin(), seen.end(), "map std::invalid_argument: negative input -3") == 1);
}

TEST_CASE("close, join and terminate behave as locally; terminate drops what no rank started") {
  {
    mproc::mpi::Pool pool(square);
    if (pool.is_master()) {
      mproc::Pool local(square, {.processes = 2});
      CHECK(error_of([&] { pool.join(); }) == "ValueError");
      CHECK(error_of([&] { local.join(); }) == "ValueError");
      CHECK(pool.map(iota_vector(100)) == local.map(iota_vector(100)));
      pool.close();
      local.close();
      CHECK(error_of([&] { pool.map(iota_vector(3)); }) == "PoolClosed");
      CHECK(error_of([&] { local.map(iota_vector(3)); }) == "PoolClosed");
      CHECK(error_of([&] { pool.apply_async(1); }) == error_of([&] { local.apply_async(1); }));
      pool.join();
      local.join();
    }
  }

  // terminate(): each serving rank's first task waits for a release message from the
  // master (a rank can't be killed; it finishes what it runs). Each rank holds at
  // most two one-item chunks, so most of the 10 tasks never start.
  static bool released = false;
  constexpr int release_tag = 4242;
  auto held = [](int x) {
    if (!released) {
      int dummy = 0;
      MPI_Recv(&dummy, 1, MPI_INT, 0, release_tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      released = true;
    }
    return x;
  };
  mproc::mpi::Pool pool(held);
  if (!pool.is_master()) {
    if (!released) {  // this rank got no task: take its release here
      int dummy = 0;
      MPI_Recv(&dummy, 1, MPI_INT, 0, release_tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    return;
  }
  std::vector<mproc::AsyncResult<int>> results;
  for (int i = 0; i < 10; ++i) results.push_back(pool.apply_async(i));
  std::thread terminator([&] { pool.terminate(); });
  results.back().wait();  // failed by terminate() before it waits for the ranks
  int dummy = 0;
  for (int r = 1; r < 3; ++r) MPI_Send(&dummy, 1, MPI_INT, r, release_tag, MPI_COMM_WORLD);
  terminator.join();
  for (auto& r : results) CHECK(error_of([&] { r.get(); }) == "PoolClosed");
  CHECK(error_of([&] { pool.map(iota_vector(3)); }) == "PoolClosed");

  mproc::Pool local(
      [](int x) {
        std::this_thread::sleep_for(5s);
        return x;
      },
      {.processes = 2});
  std::vector<mproc::AsyncResult<int>> local_results;
  for (int i = 0; i < 10; ++i) local_results.push_back(local.apply_async(i));
  local.terminate();
  for (auto& r : local_results) CHECK(error_of([&] { r.get(); }) == "PoolClosed");
}

TEST_CASE("close() without join(): the next pool waits for the closed one's work, as in Python") {
  mproc::mpi::Pool first(square);
  std::optional<mproc::AsyncResult<std::vector<long>>> pending;
  if (first.is_master()) pending = first.map_async(iota_vector(3000), 1);  // still running when closed
  first.close();
  mproc::mpi::Pool second(multiply);  // the serving ranks come here once first's work is done
  if (!second.is_master()) return;
  mproc::Pool local(square, {.processes = 2});
  CHECK(pending->get() == local.map(iota_vector(3000)));
  CHECK(second.apply(6, 7) == 42);
  CHECK(error_of([&] { first.apply(2); }) == "PoolClosed");
  first.join();
}

TEST_CASE("serial mode gives the same results on the master; the serving ranks just return") {
  mproc::mpi::Pool pool(checked_square, {.serial = true});
  CHECK(pool.serial());
  if (!pool.is_master()) return;
  mproc::Pool local(checked_square, {.processes = 2});
  CHECK(pool.processes() == 1);
  const auto inputs = iota_vector(500, -1);
  CHECK(drain(pool.imap(inputs)) == drain(local.imap(inputs)));
  CHECK(pool.map(iota_vector(500)) == local.map(iota_vector(500)));
  CHECK(error_of([&] { pool.map(inputs); }) == error_of([&] { local.map(inputs); }));
}

TEST_CASE("a serving rank refuses to submit tasks") {
  mproc::mpi::Pool pool(square);
  if (pool.is_master()) return;
  CHECK(pool.rank() == world_rank());
  CHECK(error_of([&] { pool.map(iota_vector(3)); }) == "ValueError");
  CHECK(error_of([&] { pool.apply(2); }) == "ValueError");
  CHECK(error_of([&] { pool.imap(iota_vector(3)); }) == "ValueError");
  CHECK(error_of([&] { pool.starmap(std::vector<std::tuple<int>>{{1}}); }) == "ValueError");
}

TEST_CASE("the initializer runs on each serving rank; one that throws breaks the pool as locally") {
  static int initialized_on = -1;
  auto where = [](int) { return initialized_on; };
  mproc::mpi::Pool pool(where, {.initializer = [] { initialized_on = world_rank(); }});
  if (pool.is_master()) {
    CHECK(initialized_on == -1);  // never on the master
    for (int rank : pool.map(iota_vector(1000), 1)) CHECK((rank == 1 || rank == 2));
  }
  pool.close();
  pool.join();

  const auto failing = [] { throw std::runtime_error("no model file"); };
  mproc::mpi::Pool broken(square, {.initializer = failing});
  if (!broken.is_master()) return;
  mproc::Pool local(square, {.processes = 2, .initializer = failing});
  const std::string expected =
      "RemoteError[std::runtime_error][in the pool's initializer (the pool is broken): no model file]";
  CHECK(error_of([&] { broken.map(iota_vector(10)); }) == expected);
  CHECK(error_of([&] { local.map(iota_vector(10)); }) == expected);
  CHECK(error_of([&] { broken.apply(1); }) == expected);  // later calls too
}

TEST_CASE("options that replace or kill workers are refused on every rank, as the master decides") {
  CHECK(error_of([] { mproc::mpi::Pool pool(square, {.maxtasksperchild = 5}); }) == "ValueError");
  CHECK(error_of([] { mproc::mpi::Pool pool(square, {.task_timeout = 1s}); }) == "ValueError");
  CHECK(error_of([] { mproc::mpi::Pool pool(square, {.retries = 1}); }) == "ValueError");
  CHECK(error_of([] { mproc::mpi::Pool pool(square, {.max_memory_per_child = 1 << 30}); }) == "ValueError");

  // Set on the master only: the serving ranks throw the same error, and no rank is
  // left waiting for another.
  const std::size_t retries = world_rank() == 0 ? 1 : 0;
  std::string what = "accepted";
  try {
    mproc::mpi::Pool pool(square, {.retries = retries});
  } catch (const mproc::ValueError& e) {
    what = e.what();
  }
  CHECK(what.starts_with("mproc::mpi::Pool: maxtasksperchild, task_timeout, retries and max_memory_per_child"));

  mproc::mpi::Pool next(square);  // every rank is still in step
  if (next.is_master()) CHECK(next.apply(3) == 9);
}

TEST_CASE("several threads of the master submit at once") {
  mproc::mpi::Pool pool(square);
  if (!pool.is_master()) return;
  mproc::Pool local(square, {.processes = 2});
  const auto expected = local.map(iota_vector(5000));
  std::vector<std::vector<long>> got(4);
  std::vector<long> applied(4);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      got[t] = pool.map(iota_vector(5000));
      applied[t] = pool.apply_async(static_cast<int>(t)).get();
    });
  }
  for (auto& t : threads) t.join();
  for (std::size_t t = 0; t < 4; ++t) {
    CHECK(got[t] == expected);
    CHECK(applied[t] == long(t * t));
  }
}

TEST_CASE("pools one after another: the serving ranks go from one to the next") {
  for (int round = 0; round < 3; ++round) {
    mproc::mpi::Pool pool(multiply);
    if (pool.is_master()) CHECK(pool.apply(round, 10) == round * 10);
  }
}

TEST_CASE("frames bigger than an MPI piece travel in pieces") {
  using namespace mproc::detail;
  using mproc::Bytes;
  Comm comm = Comm::dup(MPI_COMM_WORLD);
  constexpr std::size_t piece = 100;
  if (comm.rank() == 2) return;
  Bytes message;
  const FrameHeader h = make_frame_header(FrameKind::message, 7, 1000);
  message.append(&h, sizeof h);
  for (int i = 0; i < 1000; ++i) {
    const auto b = static_cast<std::byte>(i % 251);
    message.append(&b, 1);
  }
  Bytes buffer;
  auto receive = [&](int from) {
    MPI_Message m;
    MPI_Status st;
    MPI_Mprobe(from, mpi_tag_frame, comm.get(), &m, &st);
    return receive_frame(comm.get(), m, st, buffer, piece);
  };
  if (comm.rank() == 0) {
    send_frame(comm.get(), 1, message.span(), piece);
    const FrameView back = receive(1);
    CHECK(back.header.id == 7);
    REQUIRE(back.payload.size() == 1000);
    CHECK(std::equal(back.payload.begin(), back.payload.end(), message.data() + frame_header_size));
  } else {
    const FrameView got = receive(0);
    std::vector<MPI_Request> requests;
    Bytes echo;
    echo.append(&got.header, sizeof got.header);
    echo.append(got.payload.data(), got.payload.size());
    isend_frame(comm.get(), 0, echo.span(), requests, piece);
    CHECK(requests.size() == 11);  // 1024 bytes in pieces of 100
    MPI_Waitall(static_cast<int>(requests.size()), requests.data(), MPI_STATUSES_IGNORE);
  }
}
