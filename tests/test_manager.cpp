// Manager, SharedList and SharedDict: Python's operations, use from several
// processes and from Pools started before or after the Manager, a full segment, and
// processes killed in the middle of an operation.

#include "shared_state_support.hpp"  // first: it configures Catch2

#include "fault_support.hpp"

#include <mproc/codec.hpp>
#include <mproc/detail/manager/container.hpp>
#include <mproc/manager.hpp>
#include <mproc/pool.hpp>
#include <mproc/sync.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

using mproc_test::exit_code;
using mproc_test::spawn;
using Ints = std::vector<int>;

TEST_CASE("SharedList: Python's list operations") {
  mproc::Manager mgr;
  auto lst = mgr.list<int>();
  CHECK(lst.empty());
  CHECK_THROWS_WITH(lst.pop(), Catch::Contains("empty list"));
  lst.append(1);
  lst.extend(Ints{2, 3, 4});
  lst.extend({5, 6});
  CHECK(lst.snapshot() == Ints{1, 2, 3, 4, 5, 6});
  CHECK(lst.size() == 6);
  CHECK(lst.at(0) == 1);
  CHECK(lst.at(-1) == 6);
  CHECK(lst.pop() == 6);
  CHECK(lst.pop(0) == 1);
  CHECK(lst.pop(1) == 3);
  CHECK(lst.snapshot() == Ints{2, 4, 5});
  lst.insert(1, 9);
  lst.insert(-1, 8);   // before the last, as in Python
  lst.insert(100, 7);  // past the end: appends
  lst.insert(-100, 0); // before the start: prepends
  CHECK(lst.snapshot() == Ints{0, 2, 9, 4, 8, 5, 7});
  lst.set(2, 3);
  lst.set(-1, 6);
  CHECK(lst.snapshot() == Ints{0, 2, 3, 4, 8, 5, 6});
  CHECK_THROWS_AS(lst.at(7), mproc::IndexError);
  CHECK_THROWS_AS(lst.at(-8), mproc::IndexError);
  CHECK_THROWS_AS(lst.set(7, 0), mproc::IndexError);
  CHECK_THROWS_WITH(lst.pop(10), Catch::Contains("index 10 out of range (size 7)"));
  lst.clear();
  CHECK(lst.empty());
  CHECK(lst.snapshot().empty());
  lst.append(1);
  CHECK(mgr.list<int>({4, 5}).snapshot() == Ints{4, 5});
  CHECK(mgr.list<int>(Ints{6}).snapshot() == Ints{6});
}

struct Big {
  std::array<std::int64_t, 8> v;  // 64 bytes: kept in place, written in several stores
};

TEST_CASE("SharedList of strings (kept encoded) and of large structs (kept in place)") {
  mproc::Manager mgr;
  auto words = mgr.list<std::string>();
  for (int i = 0; i < 100; ++i) words.append(std::string(static_cast<std::size_t>(i), 'a'));
  CHECK(words.at(99).size() == 99);
  CHECK(words.pop(50).size() == 50);
  words.insert(0, "first");
  words.set(1, "second");
  CHECK(words.at(0) == "first");
  CHECK(words.at(1) == "second");
  CHECK(words.size() == 100);
  const auto used = mgr.used();
  words.clear();
  CHECK(mgr.used() < used);  // the strings' memory went back to the segment

  auto bigs = mgr.list<Big>();
  static_assert(mproc::detail::ElementStore<Big>::in_place);
  for (std::int64_t i = 0; i < 10; ++i) bigs.append(Big{{i, i, i, i, i, i, i, i}});
  bigs.set(3, Big{{-1, -1, -1, -1, -1, -1, -1, -1}});
  CHECK(bigs.at(3).v[7] == -1);
  CHECK(bigs.pop(0).v[0] == 0);

  auto nested = mgr.list<std::vector<std::map<std::string, int>>>();
  nested.append({{{"a", 1}}, {{"b", 2}}});
  CHECK(nested.at(0)[1].at("b") == 2);
}

TEST_CASE("seed 001: a list appended from two processes holds 30 and 70") {
  mproc::Manager mgr;
  auto lst = mgr.list<int>();
  auto worker1 = spawn([&] {
    lst.append(30);
    return 0;
  });
  auto worker2 = spawn([&] {
    lst.append(70);
    return 0;
  });
  CHECK(exit_code(worker1) == 0);
  CHECK(exit_code(worker2) == 0);
  auto all = lst.snapshot();
  std::sort(all.begin(), all.end());
  CHECK(all == Ints{30, 70});
}

TEST_CASE("SharedList: concurrent appends from two processes are all kept") {
  mproc::Manager mgr;
  auto lst = mgr.list<int>();
  constexpr int per_child = 5000;
  std::vector<mproc::detail::Child> children;
  for (int c = 0; c < 2; ++c) {
    children.push_back(spawn([&, c] {
      for (int i = 0; i < per_child; ++i) lst.append(c * per_child + i);
      return 0;
    }));
  }
  for (auto& c : children) CHECK(exit_code(c) == 0);
  auto all = lst.snapshot();
  std::sort(all.begin(), all.end());
  Ints expected(2 * per_child);
  for (int i = 0; i < 2 * per_child; ++i) expected[static_cast<std::size_t>(i)] = i;
  CHECK(all == expected);
}

TEST_CASE("SharedDict: Python's dict operations, in insertion order") {
  mproc::Manager mgr;
  auto d = mgr.dict<std::string, int>();
  CHECK(d.empty());
  CHECK_FALSE(d.get("a").has_value());
  d.set("b", 1);
  d.set("a", 2);
  d.set("c", 3);
  d.set("b", 10);  // an update keeps the key's place
  CHECK(d.size() == 3);
  CHECK(d.get("b") == 10);
  CHECK(d.get("zz", -1) == -1);
  CHECK(d.contains("a"));
  CHECK_FALSE(d.contains("zz"));
  CHECK(d.keys() == std::vector<std::string>{"b", "a", "c"});
  CHECK(d.values() == Ints{10, 2, 3});
  CHECK(d.items() == std::vector<std::pair<std::string, int>>{{"b", 10}, {"a", 2}, {"c", 3}});
  CHECK(d.erase("a"));
  CHECK_FALSE(d.erase("a"));
  CHECK(d.pop("c") == 3);
  CHECK_FALSE(d.pop("c").has_value());
  CHECK(d.keys() == std::vector<std::string>{"b"});
  d.set("a", 5);
  CHECK(d.keys() == std::vector<std::string>{"b", "a"});  // a new key goes last
  CHECK(d.update("hits", [](std::optional<int> v) { return v.value_or(0) + 1; }) == 1);
  CHECK(d.update("hits", [](std::optional<int> v) { return v.value_or(0) + 1; }) == 2);
  CHECK_THROWS_AS(d.update("x", [&](std::optional<int>) { return d.get("b", 0); }), mproc::ValueError);
  CHECK_FALSE(d.contains("x"));
  d.clear();
  CHECK(d.size() == 0);
  CHECK(d.keys().empty());

  auto by_number = mgr.dict<int, std::vector<std::string>>();
  for (int i = 0; i < 1000; ++i) by_number.set(i, {std::to_string(i)});
  for (int i = 0; i < 1000; i += 3) by_number.erase(i);
  CHECK(by_number.size() == 666);
  CHECK(by_number.get(998).value().at(0) == "998");
  CHECK_FALSE(by_number.get(999).has_value());
  CHECK(by_number.keys().front() == 1);
}

struct Cell {  // no padding, integers only: its bytes are its value
  std::int32_t row, column;
};
enum class Colour : std::uint8_t { red, green };
static_assert(mproc::detail::canonical_encoding<Cell>() && mproc::detail::canonical_encoding<Colour>() &&
              mproc::detail::canonical_encoding<std::pair<char, int>>() &&
              mproc::detail::canonical_encoding<std::tuple<char, double, std::string>>() &&
              mproc::detail::canonical_encoding<std::array<double, 2>>() &&
              mproc::detail::canonical_encoding<std::map<std::string, std::vector<int>>>() &&
              mproc::detail::canonical_encoding<std::optional<std::chrono::duration<double>>>());
struct Padded {
  char tag;
  int id;
};
struct Point {  // no padding, but floating point: refused (its padding can't be ruled out)
  double x, y;
};
static_assert(!mproc::detail::canonical_encoding<Padded>() && !mproc::detail::canonical_encoding<Point>() &&
              !mproc::detail::canonical_encoding<std::vector<Padded>>() &&
              !mproc::detail::canonical_encoding<std::unordered_map<int, int>>() &&
              !mproc::detail::canonical_encoding<std::pair<int, std::unordered_set<int>>>());

TEST_CASE("SharedDict: compound keys match by value, floating-point keys by their bits") {
  mproc::Manager mgr;
  auto by_pair = mgr.dict<std::pair<char, int>, int>();  // sent member by member: padding never travels
  by_pair.set({'a', 1}, 10);
  by_pair.set({'a', 1}, 20);
  CHECK(by_pair.size() == 1);
  CHECK(by_pair.get({'a', 1}) == 20);
  auto by_cell = mgr.dict<Cell, Colour>();
  by_cell.set(Cell{1, 2}, Colour::green);
  CHECK(by_cell.get(Cell{1, 2}) == Colour::green);
  CHECK_FALSE(by_cell.contains(Cell{2, 1}));
  auto by_double = mgr.dict<double, int>();
  by_double.set(0.0, 1);
  by_double.set(-0.0, 2);  // other bits: another key (Python would overwrite 0.0's value)
  CHECK(by_double.size() == 2);
  CHECK(by_double.get(0.0) == 1);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  by_double.set(nan, 3);
  CHECK(by_double.get(nan) == 3);  // the same bits find it
}

int store_square(mproc::SharedDict<std::string, int> d, int i) {
  d.set("key" + std::to_string(i), i * i);
  return i;
}

void check_squares(const mproc::SharedDict<std::string, int>& d, int n) {
  REQUIRE(d.size() == static_cast<std::size_t>(n));
  bool all = true;
  for (int i = 0; i < n; ++i) all = all && d.get("key" + std::to_string(i)) == i * i;
  CHECK(all);
}

TEST_CASE("SharedDict: 10,000 string keys filled by a Pool started before the Manager") {
  mproc::Pool pool(store_square, {.processes = 2});
  mproc::Manager mgr;
  auto d = mgr.dict<std::string, int>();
  std::vector<std::tuple<mproc::SharedDict<std::string, int>, int>> tasks;
  for (int i = 0; i < 10000; ++i) tasks.emplace_back(d, i);
  pool.starmap(tasks);
  check_squares(d, 10000);
}

TEST_CASE("SharedDict: 10,000 string keys filled by a Pool started after the Manager") {
  mproc::Manager mgr;
  auto d = mgr.dict<std::string, int>();
  mproc::Pool pool([d](int i) { return store_square(d, i); }, {.processes = 2});
  std::vector<int> keys(10000);
  for (int i = 0; i < 10000; ++i) keys[static_cast<std::size_t>(i)] = i;
  pool.map(keys);
  check_squares(d, 10000);
}

mproc::SharedList<int> make_list_in(mproc::Manager mgr, int n) {
  auto lst = mgr.list<int>();
  for (int i = 0; i < n; ++i) lst.append(i);
  return lst;
}

TEST_CASE("A Manager can be sent to a worker, which makes a list in it and sends the list back") {
  mproc::Pool pool(make_list_in, {.processes = 1});
  mproc::Manager mgr;
  auto lst = pool.apply(mgr, 5);
  CHECK(lst.snapshot() == Ints{0, 1, 2, 3, 4});
}

TEST_CASE("SharedDict::update is atomic across processes") {
  mproc::Manager mgr;
  auto d = mgr.dict<std::string, long>();
  constexpr int per_child = 3000;
  std::vector<mproc::detail::Child> children;
  for (int c = 0; c < 2; ++c) {
    children.push_back(spawn([&] {
      for (int i = 0; i < per_child; ++i) d.update("n", [](std::optional<long> v) { return v.value_or(0) + 1; });
      return 0;
    }));
  }
  for (auto& c : children) CHECK(exit_code(c) == 0);
  CHECK(d.get("n") == 2 * per_child);
}

TEST_CASE("A full segment throws SharedMemoryFull naming its size and the container stays usable") {
  mproc::Manager mgr({.initial_size = 16 << 10, .max_size = 256 << 10});
  auto lst = mgr.list<std::string>();
  auto d = mgr.dict<int, std::string>();
  const std::string chunk(1000, 'x');
  std::size_t kept = 0;
  try {
    for (;;) {
      lst.append(chunk);
      ++kept;
    }
  } catch (const mproc::SharedMemoryFull& e) {
    CHECK_THAT(e.what(), Catch::Contains("262144 bytes") && Catch::Contains("max_size"));
  }
  CHECK(kept > 100);
  CHECK(lst.size() == kept);
  CHECK_THROWS_AS(lst.extend(std::vector<std::string>(50, chunk)), mproc::SharedMemoryFull);
  CHECK(lst.size() == kept);  // all or nothing
  CHECK_THROWS_AS(d.set(1, std::string(300 << 10, 'y')), mproc::SharedMemoryFull);
  CHECK(d.size() == 0);
  CHECK(lst.pop() == chunk);
  lst.append("fits again");
  CHECK(lst.at(-1) == "fits again");
  lst.clear();
  for (int i = 0; i < 100; ++i) d.set(i, chunk);  // the cleared list's memory is reused
  CHECK(d.size() == 100);
  CHECK(mgr.size() <= mgr.max_size());
}

// Fills the dict until the segment is full; returns how many keys fitted.
int fill(mproc::SharedDict<std::string, std::string>& d) {
  int i = 0;
  try {
    for (;; ++i) d.set("key" + std::to_string(i), std::string(100, 'x'));
  } catch (const mproc::SharedMemoryFull&) {
  }
  return i;
}

TEST_CASE("SharedMemoryFull suggests a max_size that holds the request that failed") {
  const mproc::ManagerOptions small{.initial_size = 64 << 10, .max_size = 256 << 10};
  mproc::Manager mgr(small);
  auto d = mgr.dict<std::string, std::string>();
  const int kept = fill(d);
  CHECK(kept > 100);
  std::string message;
  try {
    d.set("big", std::string(1 << 20, 'q'));  // four times max_size: doubling it is not enough
  } catch (const mproc::SharedMemoryFull& e) {
    message = e.what();
  }
  const std::string marker = ".max_size = ";
  const auto at = message.find(marker);
  REQUIRE(at != std::string::npos);
  const std::size_t suggested = std::stoull(message.substr(at + marker.size()));
  // A Manager of the suggested size holds the same keys and the request.
  mproc::Manager bigger({.initial_size = small.initial_size, .max_size = suggested});
  auto again = bigger.dict<std::string, std::string>();
  for (int i = 0; i < kept; ++i) again.set("key" + std::to_string(i), std::string(100, 'x'));
  CHECK_NOTHROW(again.set("big", std::string(1 << 20, 'q')));
  CHECK(again.size() == static_cast<std::size_t>(kept) + 1);
}

TEST_CASE("A Manager's segment grows by itself up to max_size") {
  mproc::Manager mgr({.initial_size = 64 << 10, .max_size = 256 << 20});
  CHECK(mgr.size() == 64 << 10);
  auto lst = mgr.list<std::vector<double>>();
  auto child = spawn([&] {  // the child grows it; the parent sees the data
    for (int i = 0; i < 16; ++i) lst.append(std::vector<double>(128 << 10, i));
    return 0;
  });
  CHECK(exit_code(child) == 0);
  CHECK(mgr.size() >= 16 << 20);
  CHECK(lst.at(15).back() == 15.0);
}

using mproc_test::die_at;

TEST_CASE("SharedList: a process killed in the middle of an operation leaves a consistent list") {
  mproc::Manager mgr;
  const Ints start{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  struct Case {
    const char* point;
    void (*op)(mproc::SharedList<int>&);
    Ints after;  // what the next user finds: the operation done, or not at all
  };
  const std::vector<Case> cases = {
      {"list.append", [](auto& l) { l.append(10); }, start},
      {"list.extend", [](auto& l) { l.extend({10, 11}); }, start},
      {"list.grow", [](auto& l) { l.extend(Ints(100, 1)); }, start},
      {"list.journal", [](auto& l) { l.pop(3); }, {0, 1, 2, 4, 5, 6, 7, 8, 9}},
      {"list.remove.shift", [](auto& l) { l.pop(1); }, {0, 2, 3, 4, 5, 6, 7, 8, 9}},
      {"list.insert.shift", [](auto& l) { l.insert(1, 42); }, {0, 42, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
      {"list.set", [](auto& l) { l.set(5, 42); }, {0, 1, 2, 3, 4, 42, 6, 7, 8, 9}},
  };
  for (const Case& c : cases) {
    SECTION(c.point) {
      auto lst = mgr.list<int>(start);
      auto after = mgr.list<int>(Ints{1});  // lies right after lst's array: growing it copies
      die_at(c.point, [&] { c.op(lst); });
      CHECK(lst.snapshot() == c.after);
      CHECK(lst.owner_deaths() == 1);
      lst.append(100);
      CHECK(lst.at(-1) == 100);
      CHECK(lst.size() == c.after.size() + 1);
    }
  }
}

TEST_CASE("SharedList of strings: a process killed while removing leaves every string intact") {
  mproc::Manager mgr;
  auto lst = mgr.list<std::string>({"a", "b", "c", "d", "e", "f"});
  die_at("list.remove.shift", [&] { lst.pop(0); });
  CHECK(lst.snapshot() == std::vector<std::string>{"b", "c", "d", "e", "f"});
  for (int i = 0; i < 10; ++i) lst.append(std::string(40, 'z'));  // reuses freed blocks: none twice
  CHECK(lst.at(0) == "b");
  CHECK(lst.size() == 15);
}

TEST_CASE("SharedDict: a process killed in the middle of an operation leaves a consistent dict") {
  mproc::Manager mgr;
  using Items = std::vector<std::pair<int, int>>;
  Items start;
  for (int i = 0; i < 8; ++i) start.emplace_back(i, i * 10);  // 8 entries: a full first table
  struct Case {
    const char* point;
    void (*op)(mproc::SharedDict<int, int>&);
    Items after;
  };
  Items without_3 = start;
  without_3.erase(without_3.begin() + 3);
  Items with_8 = start;
  with_8.emplace_back(8, 80);
  const std::vector<Case> cases = {
      {"dict.grow", [](auto& d) { d.set(8, 80); }, start},
      {"dict.insert", [](auto& d) { d.set(8, 80); }, start},
      {"dict.index", [](auto& d) { d.set(8, 80); }, with_8},
      {"dict.erase", [](auto& d) { d.erase(3); }, without_3},
  };
  for (const Case& c : cases) {
    SECTION(c.point) {
      auto d = mgr.dict<int, int>();
      for (const auto& [k, v] : start) d.set(k, v);
      die_at(c.point, [&] { c.op(d); });
      CHECK(d.items() == c.after);
      CHECK(d.size() == c.after.size());
      CHECK(d.owner_deaths() == 1);
      for (const auto& [k, v] : c.after) CHECK(d.get(k) == v);
      d.set(3, 33);
      d.set(100, 1);
      CHECK(d.get(3) == 33);
      CHECK(d.get(100) == 1);
    }
  }
}

// Appends distinct strings of about `size` bytes until the segment is full; returns how many fit.
std::size_t fill(mproc::SharedList<std::string>& lst, std::size_t size) {
  std::size_t n = 0;
  try {
    for (;; ++n) lst.append(std::to_string(n) + std::string(size, 'x'));
  } catch (const mproc::SharedMemoryFull&) {
  }
  return n;
}

bool intact(const mproc::SharedList<std::string>& lst, std::size_t size) {
  const auto all = lst.snapshot();
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (all[i] != std::to_string(i) + std::string(size, 'x')) return false;
  }
  return true;
}

TEST_CASE("A process killed inside the allocator leaves it consistent, and no block is handed out twice") {
  for (const char* point : {"alloc.split", "alloc.push"}) {
    SECTION(point) {
      mproc::Manager mgr({.initial_size = 128 << 10, .max_size = 128 << 10});
      auto lst = mgr.list<std::string>();
      auto other = mgr.list<std::string>();
      const std::size_t first = fill(lst, 1000);
      REQUIRE(first > 50);
      lst.clear();  // every block free: a small request splits one and files the rest
      die_at(point, [&] { other.append("small"); });  // dies holding other's lock and the allocator's
      const std::size_t again = fill(lst, 1000);  // takes the allocator over; the sweep finds the lost rest
      CHECK(intact(lst, 1000));
      CHECK(again + 2 >= first);
      const std::size_t small = fill(other, 10);
      CHECK(other.owner_deaths() == 1);
      CHECK(intact(lst, 1000));  // no block went to both lists
      CHECK(intact(other, 10));
      CHECK(small > 0);
    }
  }
}

TEST_CASE("The allocator extends a block where it lies when the room after it is free, and only then") {
  using mproc::detail::SegmentAllocator;
  auto seg = mproc::detail::Segment::create(mproc::detail::SegmentKind::manager, 1 << 20, 1 << 20);
  SegmentAllocator::format(*seg);
  SegmentAllocator alloc(*seg);
  const auto fill_block = [&](std::uint64_t at, std::size_t n, char c) { std::memset(seg->at<char>(at), c, n); };
  const auto holds = [&](std::uint64_t at, std::size_t n, char c) {
    return std::all_of(seg->at<char>(at), seg->at<char>(at) + n, [c](char x) { return x == c; });
  };
  const std::uint64_t a = alloc.allocate(64, "a");
  fill_block(a, 64, 'a');
  CHECK(alloc.extend(a, 1000));  // the top of the heap
  CHECK(holds(a, 64, 'a'));
  fill_block(a, 1000, 'a');
  const std::uint64_t b = alloc.allocate(500, "b");
  CHECK(b >= a + 1000);
  fill_block(b, 500, 'b');
  CHECK_FALSE(alloc.extend(a, 1200));  // b is in the way
  CHECK(holds(b, 500, 'b'));
  alloc.deallocate(b);               // now a free block at the head of its list
  CHECK(alloc.extend(a, 1200));      // takes part of b's room; the rest stays free
  CHECK(holds(a, 1000, 'a'));
  fill_block(a, 1200, 'a');
  const std::uint64_t c = alloc.allocate(100, "c");  // from the rest of b, past a's new end
  CHECK(c >= a + 1200);
  fill_block(c, 100, 'c');
  CHECK(holds(a, 1200, 'a'));
  CHECK_FALSE(alloc.extend(a, 1u << 21));  // past the segment's reserve
  CHECK(holds(c, 100, 'c'));
}

TEST_CASE("A process killed while the allocator extends a list's block in place leaves both consistent") {
  // Growing a list whose array is the top block extends it past the top; after a clear,
  // its small new array is split from a freed block and grows over the free rest.
  for (const bool after_clear : {false, true}) {
    SECTION(after_clear ? "over the free block after it" : "past the top") {
      mproc::Manager mgr;
      auto lst = mgr.list<int>();
      if (after_clear) {
        lst.extend(Ints(1000, 7));
        lst.clear();
      }
      lst.extend(Ints{1, 2, 3, 4});
      die_at("alloc.extend", [&] { lst.append(5); });  // capacity 4 is full: the array grows
      CHECK(lst.snapshot() == Ints{1, 2, 3, 4});
      CHECK(lst.owner_deaths() == 1);
      auto other = mgr.list<int>(Ints(200, 9));  // allocations after the death: none overlaps the list
      for (int i = 5; i <= 300; ++i) lst.append(i);
      CHECK(lst.size() == 300);
      CHECK(lst.at(4) == 5);
      CHECK(lst.at(-1) == 300);
      CHECK(other.snapshot() == Ints(200, 9));
    }
  }
}

TEST_CASE("A process killed while holding a dict's lock (inside update) does not hang the others") {
  mproc::Manager mgr;
  auto d = mgr.dict<std::string, int>();
  d.set("a", 1);
  auto child = spawn([&] {
    d.update("a", [](std::optional<int>) -> int {
      ::kill(::getpid(), SIGKILL);
      return 2;
    });
    return 0;
  });
  CHECK(exit_code(child) == -SIGKILL);
  CHECK(d.get("a") == 1);
  CHECK(d.owner_deaths() == 1);
  d.set("b", 2);
  CHECK(d.size() == 2);
}

TEST_CASE("Container handles travel as the same container, and decode only as what they are") {
  mproc::Manager mgr;
  auto lst = mgr.list<int>({1, 2});
  const mproc::Bytes bytes = mproc::encode(lst);
  auto same = mproc::decode<mproc::SharedList<int>>(bytes);
  same.append(3);
  CHECK(lst.snapshot() == Ints{1, 2, 3});
  CHECK_THROWS_AS(mproc::decode<mproc::SharedList<long>>(bytes), mproc::ProtocolError);
  CHECK_THROWS_AS((mproc::decode<mproc::SharedDict<int, int>>(bytes)), mproc::ProtocolError);
  const mproc::Bytes lock = mproc::encode(mproc::Lock());
  CHECK_THROWS_AS(mproc::decode<mproc::SharedList<int>>(lock), mproc::ProtocolError);
  auto lists = mgr.list<mproc::SharedList<int>>();  // handles are values like any other
  lists.append(lst);
  lists.at(0).append(4);
  CHECK(lst.size() == 4);
}

}  // namespace
