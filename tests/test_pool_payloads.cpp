// Pool<F> payloads: every kind of Sendable value goes to a worker and comes back
// unchanged (as an argument and as a result), user types through cereal, a 64 MiB
// vector both ways with its content checked, and many big ones in flight at once
// through a worker's shared-memory lanes (also when the worker dies with them).

#include "pool_test_support.hpp"

#include <mproc/detail/engine/lane.hpp>
#include <mproc/mproc.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace {

struct Pixel {  // trivially copyable
  std::uint8_t r, g, b;
  float alpha;
  bool operator==(const Pixel&) const = default;
};

struct Document {  // cereal serialize()
  std::string title;
  std::vector<std::string> lines;
  std::map<std::string, int> counts;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(title, lines, counts);
  }
  bool operator==(const Document&) const = default;
};

class Matrix {  // cereal save()/load(), private state
 public:
  Matrix() = default;
  Matrix(std::size_t rows, std::size_t cols) : rows_(rows), cols_(cols), cells_(rows * cols) {
    for (std::size_t i = 0; i < cells_.size(); ++i) cells_[i] = static_cast<double>(i) * 0.5;
  }
  template <class Archive>
  void save(Archive& ar) const {
    ar(rows_, cols_, cells_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(rows_, cols_, cells_);
  }
  bool operator==(const Matrix&) const = default;

 private:
  std::size_t rows_ = 0;
  std::size_t cols_ = 0;
  std::vector<double> cells_;
};

struct Tag {  // cereal save_minimal()/load_minimal(): travels as its string
  std::string name;
  template <class Archive>
  std::string save_minimal(const Archive&) const {
    return name;
  }
  template <class Archive>
  void load_minimal(const Archive&, const std::string& v) {
    name = v;
  }
  bool operator==(const Tag&) const = default;
};

struct Checked {  // trivially copyable; its cereal load() refuses a negative value
  int value = 0;
  template <class Archive>
  void save(Archive& ar) const {
    ar(value);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(value);
    if (value < 0) throw std::invalid_argument("negative value");
  }
};

/// Sends each value to a worker (by map and by apply) and back; F also reports its
/// pid, to prove the value really went to another process.
template <class T>
void check_echo(const std::vector<T>& values) {
  mproc::Pool pool([](T x) { return std::pair<T, pid_t>(std::move(x), ::getpid()); }, {.processes = 2});
  const auto echoed = pool.map(values);
  REQUIRE(echoed.size() == values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    CHECK(echoed[i].first == values[i]);
    CHECK(echoed[i].second != ::getpid());
  }
  const auto single = pool.apply(values.front());
  CHECK(single.first == values.front());
  CHECK(single.second != ::getpid());
}

}  // namespace

TEST_CASE("scalars and trivially copyable structs travel") {
  check_echo(std::vector<int>{0, -1, 2147483647});
  check_echo(std::vector<double>{0.0, -1.5, 1e300});
  check_echo(std::vector<char>{'a', '\0', 'z'});
  check_echo(std::vector<bool>{true, false});
  check_echo(std::vector<Pixel>{{1, 2, 3, 0.5f}, {255, 0, 128, 1.0f}});
}

TEST_CASE("strings and sequences travel") {
  check_echo(std::vector<std::string>{"", "hello", std::string("nul\0inside", 10), std::string(100000, 'x')});
  check_echo(std::vector<std::vector<int>>{{}, {1, 2, 3}});
  check_echo(std::vector<std::deque<std::string>>{{"a", "b"}});
  check_echo(std::vector<std::list<double>>{{1.0, 2.0}, {}});
  check_echo(std::vector<std::array<int, 3>>{{1, 2, 3}, {4, 5, 6}});
}

TEST_CASE("pairs, tuples, optionals and variants travel") {
  check_echo(std::vector<std::pair<int, std::string>>{{1, "one"}, {2, "two"}});
  check_echo(std::vector<std::tuple<int, std::string, double>>{{1, "a", 0.5}});
  check_echo(std::vector<std::optional<std::string>>{std::nullopt, "set"});
  using V = std::variant<int, std::string, std::vector<double>>;
  check_echo(std::vector<V>{V{1}, V{std::string("s")}, V{std::vector<double>{1.5}}});
}

TEST_CASE("maps and sets travel") {
  check_echo(std::vector<std::map<std::string, int>>{{{"a", 1}, {"b", 2}}, {}});
  check_echo(std::vector<std::unordered_map<int, std::string>>{{{1, "x"}, {2, "y"}}});
  check_echo(std::vector<std::set<int>>{{3, 1, 2}});
  check_echo(std::vector<std::unordered_set<std::string>>{{"p", "q"}});
  check_echo(std::vector<std::multimap<int, int>>{{{1, 1}, {1, 2}}});
}

TEST_CASE("nested combinations travel") {
  using Nested = std::map<std::string, std::vector<std::optional<std::tuple<int, std::set<std::string>>>>>;
  check_echo(std::vector<Nested>{
      {{"k", {std::nullopt, std::tuple<int, std::set<std::string>>{1, {"a", "b"}}}}, {"empty", {}}}});
}

TEST_CASE("cereal user types travel: serialize() and save()/load()") {
  check_echo(std::vector<Document>{{"t", {"l1", "l2"}, {{"w", 2}}}, {}});
  check_echo(std::vector<Matrix>{Matrix(3, 4), Matrix()});
  check_echo(std::vector<std::vector<Document>>{{{"nested", {}, {}}}});
}

TEST_CASE("cereal save_minimal()/load_minimal() types travel") {
  check_echo(std::vector<Tag>{{"alpha"}, {""}, {std::string(1000, 'z')}});
  check_echo(std::vector<std::map<std::string, Tag>>{{{"k", {"v"}}}});
}

TEST_CASE("a trivially copyable type with its own cereal save()/load() travels through them") {
  // Checked's load() refuses a negative value: copied as bytes, it would pass.
  STATIC_REQUIRE(std::is_trivially_copyable_v<Checked>);
  mproc::Pool pool([](Checked c) { return Checked{c.value - 10}; }, {.processes = 1});
  CHECK(pool.apply(Checked{15}).value == 5);
  CHECK_THROWS_WITH(pool.apply(Checked{-1}), Catch::Contains("negative value"));  // in the worker
  CHECK_THROWS_WITH(pool.apply(Checked{3}), Catch::Contains("negative value"));   // back in the parent
  CHECK_THROWS_WITH(pool.map(std::vector<Checked>{{12}, {4}}), Catch::Contains("negative value"));
}

TEST_CASE("F may turn one payload type into another") {
  mproc::Pool pool(
      [](const Document& d) {
        std::map<std::string, std::size_t> lengths;
        for (const auto& line : d.lines) lengths[line] = line.size();
        return std::make_tuple(d.title, lengths, std::optional<int>(d.counts.size() > 0 ? 1 : 0));
      },
      {.processes = 2});
  const auto r = pool.apply(Document{"doc", {"ab", "cde"}, {{"x", 1}}});
  CHECK(std::get<0>(r) == "doc");
  CHECK(std::get<1>(r) == std::map<std::string, std::size_t>{{"ab", 2}, {"cde", 3}});
  CHECK(std::get<2>(r) == 1);
}

TEST_CASE("a 64 MiB vector travels as an argument and as a result, content intact") {
  constexpr std::size_t size = std::size_t{64} << 20;
  std::vector<char> input(size);
  for (std::size_t i = 0; i < size; ++i) input[i] = static_cast<char>((i * 2654435761u) >> 7);

  // F checks the argument's content itself and returns a transformed copy.
  mproc::Pool pool(
      [](std::vector<char> v) {
        for (std::size_t i = 0; i < v.size(); ++i) {
          if (v[i] != static_cast<char>((i * 2654435761u) >> 7)) {
            throw std::runtime_error("argument corrupted at byte " + std::to_string(i));
          }
          v[i] = static_cast<char>(v[i] ^ 0x5a);
        }
        return v;
      },
      {.processes = 2});
  const std::vector<char> output = pool.apply(input);
  REQUIRE(output.size() == size);
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < size; ++i) mismatches += output[i] != static_cast<char>(input[i] ^ 0x5a);
  CHECK(mismatches == 0);

  // Two of them in one map, so one chunk or two workers carry 128 MiB.
  const auto both = pool.map(std::vector<std::vector<char>>{input, input});
  REQUIRE(both.size() == 2);
  CHECK(both[0] == output);
  CHECK(both[1] == output);
}

namespace {

/// n bytes that differ from item to item and from byte to byte.
std::vector<char> big_item(int item, std::size_t n = std::size_t{1} << 20) {
  std::vector<char> v(n);
  for (std::size_t i = 0; i < n; ++i)
    v[i] = static_cast<char>((i * 2654435761u + static_cast<std::size_t>(item) * 977) >> 5);
  return v;
}
std::vector<std::vector<char>> big_items(int n) {
  std::vector<std::vector<char>> items;
  for (int i = 0; i < n; ++i) items.push_back(big_item(i));
  return items;
}
std::vector<char> flipped(std::vector<char> v) {
  for (char& c : v) c = static_cast<char>(c ^ 0x5a);
  return v;
}
std::vector<std::byte> lane_payload(std::size_t n, int seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>(i * 31 + static_cast<std::size_t>(seed));
  return v;
}
bool lane_gives(mproc::detail::Lane& lane, const std::vector<std::byte>& expected) {
  const auto seen = lane.view(expected.size());
  const bool same = std::equal(seen.begin(), seen.end(), expected.begin(), expected.end());
  lane.release(expected.size());
  return same;
}

}  // namespace

TEST_CASE("a lane carries several payloads at once, in order, wraps around its ring, and starts empty after reset") {
  using mproc::detail::Lane;
  Lane lane;
  const std::size_t quarter = Lane::ring_bytes / 4;
  // Three in flight at once, taken in the order they were put.
  const auto a = lane_payload(Lane::min_payload, 1), b = lane_payload(quarter, 2), c = lane_payload(quarter, 3);
  REQUIRE(lane.try_put(a));
  REQUIRE(lane.try_put(b));
  REQUIRE(lane.try_put(c));
  CHECK(lane_gives(lane, a));
  // The ring fills: past its end there is room only where released payloads were.
  const auto d = lane_payload(quarter, 4), e = lane_payload(quarter, 5);
  REQUIRE(lane.try_put(d));
  CHECK_FALSE(lane.try_put(e));  // the end has no room left, nor has the start (a's room is smaller)
  CHECK(lane_gives(lane, b));
  REQUIRE(lane.try_put(e));  // wrapped around to the start
  CHECK(lane_gives(lane, c));
  CHECK(lane_gives(lane, d));
  CHECK(lane_gives(lane, e));
  // A frame that claims a payload the lane does not hold is refused.
  CHECK_THROWS_AS(lane.view(Lane::min_payload), mproc::ProtocolError);
  REQUIRE(lane.try_put(a));
  CHECK_THROWS_AS(lane.view(a.size() + 1), mproc::ProtocolError);
  // A reset lane (its receiver died) is empty, and carries payloads again.
  lane.reset();
  CHECK_THROWS_AS(lane.view(a.size()), mproc::ProtocolError);
  REQUIRE(lane.try_put(b));
  REQUIRE(lane.try_put(c));
  CHECK(lane_gives(lane, b));
  CHECK(lane_gives(lane, c));
}

TEST_CASE("a lane takes no more payloads at once than its table holds, nor one past the ring beside others") {
  using mproc::detail::Lane;
  Lane lane;
  const auto small = lane_payload(Lane::min_payload, 7);
  std::size_t n = 0;
  while (lane.try_put(small)) ++n;
  CHECK(n == std::min(Lane::max_in_flight, Lane::ring_bytes / small.size()));
  for (std::size_t i = 0; i < n; ++i) REQUIRE(lane_gives(lane, small));
  // One bigger than the ring travels alone.
  const auto huge = lane_payload(Lane::ring_bytes + (std::size_t{1} << 20), 8);
  REQUIRE(lane.try_put(huge));
  CHECK_FALSE(lane.try_put(small));
  CHECK(lane_gives(lane, huge));
  REQUIRE(lane.try_put(small));
  CHECK_FALSE(lane.try_put(huge));
  CHECK(lane_gives(lane, small));
}

TEST_CASE("many big items in flight to one worker arrive intact through map, imap_unordered and apply_async") {
  const auto items = big_items(8);
  std::vector<std::vector<char>> expected;
  for (const auto& x : items) expected.push_back(flipped(x));
  mproc::Pool pool(flipped, {.processes = 1});
  CHECK(pool.map(items, 1) == expected);
  CHECK(pool.map(items) == expected);
  std::vector<std::vector<char>> unordered;
  for (auto& r : pool.imap_unordered(items, 1)) unordered.push_back(std::move(r));
  std::sort(unordered.begin(), unordered.end());
  auto sorted = expected;
  std::sort(sorted.begin(), sorted.end());
  CHECK(unordered == sorted);
  std::vector<mproc::AsyncResult<std::vector<char>>> pending;
  for (const auto& x : items) pending.push_back(pool.apply_async(x));
  for (std::size_t i = 0; i < items.size(); ++i) CHECK(pending[i].get() == expected[i]);
}

TEST_CASE("a worker killed with big items in its lanes loses none of them, and its successor's lanes carry more") {
  // Item 2 kills its worker on its first run: the items after it that the worker
  // held are in its task lane, and results may be in its result lane. The next
  // worker starts with empty lanes.
  mproc_test::SharedCounters runs(1);
  const auto items = big_items(8);
  std::vector<std::vector<char>> expected;
  for (const auto& x : items) expected.push_back(flipped(x));
  mproc::Pool pool(
      [&runs](std::vector<char> v) {
        if (v == big_item(2) && runs[0]++ == 0) mproc_test::die_by_signal(SIGKILL);
        return flipped(std::move(v));
      },
      {.processes = 1, .retries = 1});
  CHECK(pool.map(items, 1) == expected);
  CHECK(runs[0] == 2);
  CHECK(pool.map(items, 1) == expected);
  CHECK(pool.map(items) == expected);
}
