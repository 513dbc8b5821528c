// mproc::Queue: FIFO and exact size, Empty and Full with and without timeouts,
// blocking handoffs between processes, 100 MiB items (and items bigger than the
// ring), many producers and consumers with nothing lost or duplicated, Pool workers,
// and processes that die inside put() or get().

#include "blocked_support.hpp"
#include "fault_support.hpp"

#include <mproc/pool.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>

#include <catch2/catch.hpp>

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

using mproc_test::wait_until_blocked;

std::vector<std::int64_t> big_vector(std::size_t bytes) {
  std::vector<std::int64_t> v(bytes / sizeof(std::int64_t));
  std::iota(v.begin(), v.end(), std::int64_t{-12345});
  return v;
}

}  // namespace

TEST_CASE("items come out in order, and size, empty and full are exact") {
  mproc::Queue<std::string> q;
  CHECK(q.empty());
  CHECK(q.size() == 0);
  CHECK_FALSE(q.full());
  CHECK(q.maxsize() == 0);
  for (int i = 0; i < 1000; ++i) q.put("item " + std::to_string(i));
  CHECK(q.size() == 1000);
  CHECK_FALSE(q.empty());
  for (int i = 0; i < 1000; ++i) CHECK(q.get() == "item " + std::to_string(i));
  CHECK(q.empty());

  mproc::Queue<int> bounded(3);
  CHECK(bounded.maxsize() == 3);
  bounded.put(1);
  bounded.put(2);
  CHECK_FALSE(bounded.full());
  bounded.put(3);
  CHECK(bounded.full());
  CHECK(bounded.size() == 3);
}

TEST_CASE("get_nowait and get(timeout) on an empty queue throw Empty") {
  mproc::Queue<int> q;
  CHECK_THROWS_AS(q.get_nowait(), mproc::Empty);
  CHECK_THROWS_AS(q.get(10ms), mproc::Empty);
  CHECK_THROWS_AS(q.get(0s), mproc::Empty);
  q.put(5);
  CHECK(q.get(0s) == 5);
  q.put(6);
  CHECK(q.get_nowait() == 6);
  CHECK_THROWS_WITH(q.get_nowait(), Catch::Contains("empty"));
}

TEST_CASE("put_nowait and put(timeout) on a full bounded queue throw Full") {
  mproc::Queue<int> q(2);
  q.put_nowait(1);
  q.put(2, 1s);
  CHECK_THROWS_AS(q.put_nowait(3), mproc::Full);
  CHECK_THROWS_AS(q.put(3, 10ms), mproc::Full);
  CHECK_THROWS_AS(q.put(3, 0s), mproc::Full);
  CHECK(q.size() == 2);
  CHECK(q.get() == 1);
  q.put_nowait(3);
  CHECK(q.get() == 2);
  CHECK(q.get() == 3);
}

TEST_CASE("a full ring makes put wait too, and put(timeout) throw Full") {
  mproc::Queue<std::string> q(0, 4096);  // unbounded in items, one page of ring
  const std::string item(1000, 'x');
  int n = 0;
  for (;; ++n) {
    try {
      q.put_nowait(item);
    } catch (const mproc::Full&) {
      break;
    }
  }
  CHECK(n >= 3);
  CHECK_THROWS_AS(q.put(item, 5ms), mproc::Full);
  CHECK(q.get() == item);
  q.put_nowait(item);
}

TEST_CASE("timeouts too long for the clock wait as long as it takes; negative ones are zero") {
  mproc::Queue<int> q(1);
  {
    mproc_test::WhenBlocked put_one({SYS_futex}, [&] { q.put(7); });
    CHECK(q.get(std::chrono::seconds::max()) == 7);
  }
  q.put(1);
  int taken = 0;
  {
    mproc_test::WhenBlocked take_one({SYS_futex}, [&] { taken = q.get(); });  // no CHECK off the main thread
    CHECK_NOTHROW(q.put(2, std::chrono::hours::max()));
  }
  CHECK(taken == 1);
  CHECK_THROWS_AS(q.put(3, -1s), mproc::Full);
  CHECK(q.get(-1s) == 2);
  CHECK_THROWS_AS(q.get(std::chrono::milliseconds::min()), mproc::Empty);
}

TEST_CASE("get blocks until another process puts, get(timeout) too") {
  mproc::Queue<int> gate;
  mproc::Queue<int> q;
  mproc::Process producer([gate, q] {
    gate.get();
    q.put(1);
    gate.get();
    q.put(2);
  });
  producer.start();
  gate.put(0);
  CHECK(q.get() == 1);
  gate.put(0);
  CHECK(q.get(std::chrono::hours(1)) == 2);
  producer.join();
  CHECK(producer.exitcode() == 0);
}

TEST_CASE("put on a full bounded queue blocks until a consumer in another process takes an item") {
  mproc::Queue<int> q(1);
  mproc::Queue<int> done;
  q.put(1);
  mproc::Process producer([q, done] {
    q.put(2);  // blocks: the queue is full
    done.put(1);
  });
  producer.start();
  wait_until_blocked(producer.pid());
  CHECK(done.empty());
  CHECK(q.get() == 1);
  CHECK(done.get() == 1);
  CHECK(q.get() == 2);
  producer.join();
}

TEST_CASE(
    "an unbounded put does not wait for a reader while the ring has room: a million items before any consumer starts") {
  mproc::Queue<int> q;
  constexpr int n = 1'000'000;
  for (int i = 0; i < n; ++i) q.put(i);
  CHECK(q.size() == static_cast<std::size_t>(n));
  mproc::Queue<std::int64_t> sum;
  mproc::Process consumer([q, sum] {
    std::int64_t s = 0;
    for (int i = 0; i < n; ++i) {
      const int v = q.get();
      if (v != i) std::exit(2);  // order broken
      s += v;
    }
    sum.put(s);
  });
  consumer.start();
  CHECK(sum.get() == std::int64_t{n} * (n - 1) / 2);
  consumer.join();
  CHECK(consumer.exitcode() == 0);
  CHECK(q.empty());
}

TEST_CASE("an unbounded queue holds what it is given with no reader, whatever came before") {
  // Earlier traffic moves the ring's positions around; a put with nobody reading
  // must still find the whole ring, not just what lies before the readers.
  mproc::Queue<std::vector<char>> q;
  const std::vector<char> big(100 * 1024, 'b');
  for (int round = 0; round < 40; ++round) {
    const int n = 1 + (round * 7) % 11;  // a different amount each round
    for (int k = 0; k < n; ++k) q.put_nowait(big);
    for (int k = 0; k < n; ++k) REQUIRE(q.get_nowait() == big);
  }
  for (int k = 0; k < 200; ++k) q.put_nowait(big);  // 20 MiB, nobody reading
  CHECK(q.size() == 200);
}

namespace {
/// Shared memory this process has touched (kB): the ring's pages in use.
long shared_memory_kb() {
  std::ifstream status("/proc/self/status");
  for (std::string key; status >> key;) {
    long value = 0;
    if (key == "RssShmem:" && status >> value) return value;
  }
  return -1;
}
}  // namespace

TEST_CASE("a queue uses memory for what it holds, not for what went through it") {
  const std::vector<char> item(1000, 'x');
  SECTION("emptied now and then") {
    mproc::Queue<std::vector<char>> q;
    q.put(std::vector<char>(std::size_t{64} << 20, 'y'));
    (void)q.get();
    for (int i = 0; i < 100'000; ++i) {  // 100 MB more through it
      q.put(item);
      (void)q.get();
    }
    CHECK(shared_memory_kb() < 4096);  // the 64 MiB item's pages were given back
  }
  SECTION("bounded and never empty") {
    mproc::Queue<std::vector<char>> q(8);
    for (int i = 0; i < 4; ++i) q.put(item);
    for (int i = 0; i < 100'000; ++i) {
      q.put(item);
      (void)q.get();
    }
    CHECK(shared_memory_kb() < 4096);
  }
}

TEST_CASE("a 100 MiB vector goes through a Queue between processes, both ways") {
  const auto big = big_vector(std::size_t{100} << 20);
  mproc::Queue<std::vector<std::int64_t>> to_child;
  mproc::Queue<std::vector<std::int64_t>> to_parent;
  mproc::Process echo([to_child, to_parent] { to_parent.put(to_child.get()); });
  echo.start();
  to_child.put(big);
  CHECK(to_parent.get() == big);
  echo.join();
  CHECK(echo.exitcode() == 0);
}

TEST_CASE("an item bigger than the whole ring streams through it, and the queue goes on") {
  const auto big = big_vector(std::size_t{8} << 20);
  mproc::Queue<std::vector<std::int64_t>> q(0, 64 * 1024);
  mproc::Process producer([q, &big] {
    q.put({1, 2, 3});
    q.put(big);
    q.put({4});
  });
  producer.start();
  CHECK(q.get() == std::vector<std::int64_t>{1, 2, 3});
  CHECK(q.get() == big);
  CHECK(q.get() == std::vector<std::int64_t>{4});
  producer.join();
  CHECK(q.empty());
}

TEST_CASE("a bounded queue, 3 consumers, items of 260 KiB and 600 KiB: every item arrives intact") {
  // A writer that finds the queue empty past the first 256 KiB of the ring's lap
  // jumps back to its start; that must never need a reader's help to stay within
  // the ring, though a consumer often holds the get lock just then.
  constexpr int pairs = 1500;
  const std::vector<char> small(260 * 1024, 's');
  const std::vector<char> large(600 * 1024, 'L');
  mproc::Queue<std::vector<char>> q(1);
  mproc::Queue<int> counts;
  std::vector<mproc::Process> consumers;
  for (int c = 0; c < 3; ++c) {
    consumers.emplace_back([q, counts, &small, &large] {
      int n = 0;
      for (std::vector<char> v = q.get(); !v.empty(); v = q.get(), ++n) {
        if (v != small && v != large) ::_exit(2);
      }
      counts.put(n);
    });
  }
  for (auto& c : consumers) c.start();
  for (int i = 0; i < pairs; ++i) {
    q.put(small);
    q.put(large);
  }
  for (int c = 0; c < 3; ++c) q.put({});
  int total = 0;
  for (int c = 0; c < 3; ++c) total += counts.get();
  CHECK(total == 2 * pairs);
  for (auto& c : consumers) {
    c.join();
    CHECK(c.exitcode() == 0);
  }
  CHECK(q.empty());
}

TEST_CASE("3 producers and 2 consumers: nothing lost or duplicated, each producer's order kept") {
  constexpr int producers = 3;
  constexpr int per_producer = 20'000;
  using Item = std::pair<int, int>;  // producer, sequence number (-1: stop)
  mproc::Queue<Item> q(100);         // bounded, so producers also wait for consumers
  mproc::Queue<std::vector<Item>> results;

  std::vector<mproc::Process> procs;
  for (int c = 0; c < 2; ++c) {
    procs.emplace_back([q, results] {
      std::vector<Item> got;
      for (Item item = q.get(); item.second >= 0; item = q.get()) got.push_back(item);
      results.put(got);
    });
  }
  for (int p = 0; p < producers; ++p) {
    procs.emplace_back([q, p] {
      for (int i = 0; i < per_producer; ++i) q.put({p, i});
    });
  }
  for (auto& proc : procs) proc.start();
  for (std::size_t p = 2; p < procs.size(); ++p) procs[p].join();
  q.put({0, -1});
  q.put({0, -1});

  std::map<int, std::vector<int>> seen;  // producer -> sequence numbers, all consumers
  for (int c = 0; c < 2; ++c) {
    const std::vector<Item> got = results.get();
    std::map<int, int> last;  // within one consumer, each producer's items ascend
    for (const auto& [producer, seq] : got) {
      if (last.count(producer)) CHECK(seq > last[producer]);
      last[producer] = seq;
      seen[producer].push_back(seq);
    }
  }
  for (int p = 0; p < producers; ++p) {
    std::vector<int>& s = seen[p];
    std::sort(s.begin(), s.end());
    std::vector<int> expected(per_producer);
    std::iota(expected.begin(), expected.end(), 0);
    CHECK(s == expected);
  }
  for (auto& proc : procs) {
    proc.join();
    CHECK(proc.exitcode() == 0);
  }
  CHECK(q.empty());
}

TEST_CASE("a Queue shared with Pool workers through F's capture") {
  mproc::Queue<std::pair<int, int>> q;
  mproc::Queue<int> jobs;
  mproc::Pool pool(
      [q, jobs](int x) {
        const int extra = jobs.get();  // workers consume from the queue too
        q.put({x, x * x + extra});
        return x;
      },
      mproc::PoolOptions{.processes = 3});
  for (int i = 0; i < 50; ++i) jobs.put(1000);
  std::vector<int> inputs(50);
  std::iota(inputs.begin(), inputs.end(), 0);
  CHECK(pool.map(inputs) == inputs);
  std::vector<std::pair<int, int>> got;
  for (int i = 0; i < 50; ++i) got.push_back(q.get());
  std::sort(got.begin(), got.end());
  for (int i = 0; i < 50; ++i) CHECK(got[static_cast<std::size_t>(i)] == std::pair{i, i * i + 1000});
  CHECK(q.empty());
  CHECK(jobs.empty());
}

TEST_CASE("close(): this process can no longer put or get, others are unaffected") {
  mproc::Queue<int> q;
  mproc::Queue<std::string> report;
  mproc::Process child([q, report] {
    q.put(1);
    q.close();
    try {
      q.put(2);
      report.put("put after close worked");
    } catch (const mproc::ValueError&) {
      report.put("ValueError");
    }
  });
  child.start();
  CHECK(report.get() == "ValueError");
  child.join();
  CHECK(q.get() == 1);
  q.put(3);
  mproc::Queue<int> copy = q;
  q.close();
  CHECK(copy.closed());
  CHECK_THROWS_AS(copy.get(), mproc::ValueError);
  CHECK_THROWS_AS(q.put(4), mproc::ValueError);
}

namespace {
/// An item whose encoding puts something into another queue (as an encoder that
/// logs would): the nested put must not clobber the outer one's buffer.
struct Chatty {
  int value;
};
const mproc::Queue<int>* chatter = nullptr;
}  // namespace

template <>
struct mproc::Codec<Chatty> {
  static void encode(mproc::detail::Writer& w, const Chatty& c) {
    w.pod(c.value);
    chatter->put(c.value * 10);
    w.pod(c.value + 1);
  }
  static Chatty decode(mproc::detail::Reader& r) {
    const int value = r.pod<int>();
    if (r.pod<int>() != value + 1) throw mproc::ProtocolError("mangled");
    return Chatty{value};
  }
};

TEST_CASE("an item whose encoding puts into another queue arrives intact") {
  const mproc::Queue<int> side;
  chatter = &side;
  mproc::Queue<Chatty> q;
  q.put(Chatty{7});
  CHECK(q.get().value == 7);
  CHECK(side.get() == 70);
}

TEST_CASE("copies are handles to one queue") {
  mproc::Queue<int> a;
  mproc::Queue<int> b = a;
  a.put(7);
  CHECK(b.size() == 1);
  CHECK(b.get() == 7);
}

TEST_CASE("a consumer killed while waiting in get does not block the others") {
  mproc::Queue<int> q;
  mproc::Queue<int> out;
  for (int round = 0; round < 3; ++round) {
    mproc::Process victim([q] { (void)q.get(); });
    victim.start();
    wait_until_blocked(victim.pid());
    victim.kill();
    victim.join();
  }
  mproc::Process consumer([q, out] { out.put(q.get() + q.get()); });
  consumer.start();
  q.put(20);
  q.put(22);
  CHECK(out.get() == 42);
  consumer.join();
}

namespace {
/// Items whose decoding waits for a ticket on decode_gate, or (Deadly) kills the
/// process that takes kill_ticket's one ticket: a consumer stopped or killed in the
/// middle of taking an item.
struct Slow {
  int value;
};
struct Deadly {
  int value;
};
const mproc::Queue<int>* decode_gate = nullptr;
const mproc::Queue<int>* kill_ticket = nullptr;
}  // namespace

template <>
struct mproc::Codec<Slow> {
  static void encode(mproc::detail::Writer& w, const Slow& s) { w.pod(s.value); }
  static Slow decode(mproc::detail::Reader& r) {
    (void)decode_gate->get();
    return Slow{r.pod<int>()};
  }
};

template <>
struct mproc::Codec<Deadly> {
  static void encode(mproc::detail::Writer& w, const Deadly& d) { w.pod(d.value); }
  static Deadly decode(mproc::detail::Reader& r) {
    try {
      (void)kill_ticket->get_nowait();
      ::raise(SIGKILL);
    } catch (const mproc::Empty&) {
    }
    return Deadly{r.pod<int>()};
  }
};

TEST_CASE("get_nowait does not wait while another consumer takes an item, as in Python") {
  const mproc::Queue<int> gate;
  decode_gate = &gate;
  mproc::Queue<Slow> q;
  q.put(Slow{1});
  q.put(Slow{2});
  mproc::Process consumer([q] { (void)q.get(); });
  consumer.start();
  wait_until_blocked(consumer.pid());  // decoding item 1, waiting for its ticket
  CHECK_THROWS_AS(q.get_nowait(), mproc::Empty);
  gate.put(0);
  consumer.join();
  gate.put(0);
  CHECK(q.get_nowait().value == 2);
}

TEST_CASE("a consumer killed while taking an item: the other sleeping consumers still get items") {
  const mproc::Queue<int> ticket;
  ticket.put(1);
  kill_ticket = &ticket;
  mproc::Queue<Deadly> q;
  mproc::Queue<int> out;
  std::vector<mproc::Process> consumers;
  for (int c = 0; c < 2; ++c) consumers.emplace_back([q, out] { out.put(q.get().value); });
  for (auto& c : consumers) c.start();
  for (auto& c : consumers) wait_until_blocked(c.pid());  // both asleep on the empty queue
  q.put(Deadly{1});  // the first to take it dies decoding it
  q.put(Deadly{2});
  CHECK(out.get() == 1);  // the survivor takes it over
  std::vector<int> codes;
  for (auto& c : consumers) {
    c.join();
    codes.push_back(*c.exitcode());
  }
  std::sort(codes.begin(), codes.end());
  CHECK(codes == std::vector<int>{-SIGKILL, 0});
  CHECK(q.get().value == 2);
  CHECK(q.empty());
}

using mproc_test::die_at;

TEST_CASE("a process killed between a put's steps or a get's leaves size() exact once the queue is used again") {
  // maxsize 1: a count left one too high would make the queue look full for ever.
  using Item = std::vector<std::int64_t>;
  const mproc::Queue<Item> q(1, 64 * 1024);
  const Item small{1};
  SECTION("a producer, before its item shows") {
    die_at("ring.publish", [q, small] { q.put(small); });
    CHECK(q.size() == 0);
    CHECK_THROWS_AS(q.get_nowait(), mproc::Empty);
  }
  SECTION("a producer of an item bigger than the ring, before its first piece shows") {
    die_at("ring.publish", [q] { q.put(big_vector(std::size_t{1} << 20)); });
    CHECK(q.size() == 0);
    CHECK_THROWS_AS(q.get_nowait(), mproc::Empty);
  }
  SECTION("a producer, after its item shows, before it counts it") {
    die_at("ring.published", [q, small] { q.put(small); });
    CHECK(q.get_nowait() == small);
    CHECK(q.size() == 0);
  }
  SECTION("a consumer, after it counts the item taken, before it moves past it") {
    q.put(small);
    die_at("ring.counted", [q] { (void)q.get(); });
    CHECK(q.get_nowait() == small);  // the item the dead consumer was taking goes to the next one
    CHECK(q.size() == 0);
  }
  CHECK(q.empty());
  q.put_nowait(Item{2});  // the queue is not full
  CHECK(q.size() == 1);
  CHECK(q.full());
  CHECK(q.get_nowait() == Item{2});
  CHECK(q.size() == 0);
}

namespace {
using Int64Queue = mproc::Queue<std::vector<std::int64_t>>;

/// A 1 MiB item and a queue whose ring (64 KiB) it must stream through.
struct GiantItem {
  const std::vector<std::int64_t> item = big_vector(std::size_t{1} << 20);
  const Int64Queue q{0, 64 * 1024};

  /// Starts a process that puts the item and then the rest, and returns once it
  /// waits in the middle of the item, holding the put lock, the ring full.
  mproc::Process start_producer(std::vector<std::vector<std::int64_t>> rest = {}) const {
    mproc::Process p([this, rest] {
      q.put(item);
      for (const auto& r : rest) q.put(r);
    });
    p.start();
    wait_until_blocked(p.pid());
    return p;
  }
};
}  // namespace

TEST_CASE("a producer killed in the middle of an item: the item is dropped, the queue goes on") {
  const GiantItem giant;
  const Int64Queue& q = giant.q;
  mproc::Process victim = giant.start_producer();  // nobody reads yet
  victim.kill();
  victim.join();

  // The next producer repairs the stream while we read; the broken item never shows.
  mproc::Process next([q] { q.put({42}); });
  next.start();
  CHECK(q.get() == std::vector<std::int64_t>{42});
  next.join();
  CHECK(q.empty());
  q.put({1});
  CHECK(q.get() == std::vector<std::int64_t>{1});
}

TEST_CASE("a producer killed in the middle of a giant item, and no consumer: the next put drops it and goes on") {
  const GiantItem giant;
  const Int64Queue& q = giant.q;
  mproc::Process victim = giant.start_producer();  // nobody reads
  victim.kill();
  victim.join();
  q.put_nowait({3});  // no reader to wait for: the broken item is dropped right here
  CHECK(q.size() == 1);
  CHECK(q.get() == std::vector<std::int64_t>{3});
  CHECK(q.empty());
}

TEST_CASE("a consumer killed in the middle of a big item: the next consumer gets the next item") {
  const GiantItem giant;
  const Int64Queue& q = giant.q;
  mproc::Process producer = giant.start_producer({{7}});
  ::kill(producer.pid(), SIGSTOP);  // so the reader below must wait mid-item
  mproc::Process victim([q] { (void)q.get(); });
  victim.start();
  wait_until_blocked(victim.pid());  // holding the get lock, waiting for bytes
  victim.kill();
  victim.join();
  ::kill(producer.pid(), SIGCONT);
  wait_until_blocked(producer.pid());  // the ring is full again, nobody reads
  ::kill(producer.pid(), SIGSTOP);
  CHECK_THROWS_AS(q.get(10ms), mproc::Empty);  // skipping the rest waits for the stopped producer, within limits
  ::kill(producer.pid(), SIGCONT);
  CHECK(q.get() == std::vector<std::int64_t>{7});  // the rest of the big item was skipped
  producer.join();
  CHECK(producer.exitcode() == 0);
  CHECK(q.empty());
}

TEST_CASE("a producer killed in the middle of a giant item, and no other: get(timeout) drops it and throws Empty") {
  const GiantItem giant;
  const Int64Queue& q = giant.q;
  mproc::Process victim = giant.start_producer();
  victim.kill();
  victim.join();
  CHECK_THROWS_AS(q.get(10ms), mproc::Empty);
  CHECK(q.empty());
  q.put({5});
  CHECK(q.get() == std::vector<std::int64_t>{5});
}

TEST_CASE("a consumer waiting for the rest of a giant item learns that its producer was killed") {
  const GiantItem giant;
  const Int64Queue& q = giant.q;
  mproc::Queue<std::string> out;
  mproc::Process producer = giant.start_producer();
  ::kill(producer.pid(), SIGSTOP);  // so the consumer below must wait mid-item
  mproc::Process consumer([q, out] {
    try {
      (void)q.get(20ms);  // once it has part of the item, it waits for the rest regardless
      out.put("an item");
    } catch (const mproc::Empty&) {
      out.put("Empty");
    }
  });
  consumer.start();
  wait_until_blocked(consumer.pid());  // took what was there, waits for more
  producer.kill();
  producer.join();
  CHECK(out.get() == "Empty");  // the broken item was dropped, and no other came
  consumer.join();
  CHECK(q.empty());
  q.put({6});
  CHECK(q.get() == std::vector<std::int64_t>{6});
}

namespace {
/// Runs put in a process of its own and returns how it ended: "Full", "put", or
/// "hung" if it had not returned within a limit that only turns a hang into a failure.
template <class Put>
std::string put_in_child(Put put) {
  mproc::Queue<std::string> out;
  mproc::Process p([out, put] {
    try {
      put();
      out.put("put");
    } catch (const mproc::Full&) {
      out.put("Full");
    }
  });
  p.start();
  std::string outcome = "hung";
  try {
    outcome = out.get(60s);
  } catch (const mproc::Empty&) {
    p.kill();
  }
  p.join();
  return outcome;
}
}  // namespace

TEST_CASE("put_nowait of an item bigger than the ring, with no reader, throws Full at once and changes nothing") {
  const GiantItem giant;
  const Int64Queue& q = giant.q;
  CHECK(put_in_child([&] { q.put_nowait(giant.item); }) == "Full");
  CHECK(q.empty());
  CHECK_THROWS_AS(q.get_nowait(), mproc::Empty);
  q.put({1});
  CHECK_THROWS_AS(q.put_nowait(giant.item), mproc::Full);  // a queue with items, too
  CHECK(q.size() == 1);
  CHECK(q.get() == std::vector<std::int64_t>{1});
}

TEST_CASE(
    "put(timeout) of an item bigger than the ring, with no reader, throws Full after the timeout and changes nothing") {
  const GiantItem giant;
  const Int64Queue& q = giant.q;
  CHECK(put_in_child([&] { q.put(giant.item, 50ms); }) == "Full");
  CHECK(q.empty());
  CHECK_THROWS_AS(q.get_nowait(), mproc::Empty);
  // A reader that comes now sees the next item, not a part of the withdrawn one.
  mproc::Queue<std::vector<std::int64_t>> got;
  mproc::Process consumer([q, got] { got.put(q.get()); });
  consumer.start();
  q.put({2});
  CHECK(got.get() == std::vector<std::int64_t>{2});
  consumer.join();
  CHECK(q.empty());
  CHECK(put_in_child([&] { q.put(giant.item, 0s); }) == "Full");
  q.put_nowait({3});
  CHECK(q.get_nowait() == std::vector<std::int64_t>{3});
}

TEST_CASE("put(timeout) of an item bigger than the ring goes through while a reader takes it") {
  const GiantItem giant;
  const Int64Queue& q = giant.q;
  mproc::Queue<int> verdict;
  mproc::Process consumer([q, verdict, &giant] { verdict.put(q.get() == giant.item ? 1 : 0); });
  consumer.start();
  wait_until_blocked(consumer.pid());
  CHECK(put_in_child([&] { q.put(giant.item, 60s); }) == "put");
  CHECK(verdict.get() == 1);
  consumer.join();
  CHECK(q.empty());
}

TEST_CASE("a consumer in the middle of an item whose put(timeout) ran out drops it and gets the next one") {
  const GiantItem giant;
  const Int64Queue& q = giant.q;
  mproc::Queue<std::string> out;
  mproc::Process producer([q, out, &giant] {
    try {
      q.put(giant.item, 3s);
      out.put("put");
    } catch (const mproc::Full&) {
      out.put("Full");
    }
  });
  producer.start();
  wait_until_blocked(producer.pid());  // mid-item, the ring full, nobody reads
  ::kill(producer.pid(), SIGSTOP);     // so the consumer below must wait mid-item
  mproc::Process consumer([q, out, &giant] { out.put(q.get() == giant.item ? "giant" : "next"); });
  consumer.start();
  wait_until_blocked(consumer.pid());  // took what was there, waits for more
  ::kill(consumer.pid(), SIGSTOP);     // and holds on to the item while the put runs out
  ::kill(producer.pid(), SIGCONT);
  CHECK(out.get() == "Full");
  producer.join();
  ::kill(consumer.pid(), SIGCONT);
  q.put({9});
  CHECK(out.get() == "next");
  consumer.join();
  CHECK(consumer.exitcode() == 0);
  CHECK(q.empty());
}
