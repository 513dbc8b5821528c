// The codec (mproc/codec.hpp): every supported kind of value survives
// encode -> decode unchanged, hostile bytes are a ProtocolError (never a crash, a
// huge allocation or a wrong value), and Sendable says no to what cannot travel.

#include "picky_support.hpp"

#include <mproc/codec.hpp>

#include <catch2/catch.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

// ---------------------------------------------------------------------------
// Allocation probe: the largest single operator new request made by this thread
// while a probe is active. Hostile length prefixes must be rejected before any
// allocation of their claimed size.

namespace {
thread_local bool probing = false;
thread_local std::size_t largest_request = 0;
}  // namespace

#if defined(__GNUC__) && !defined(__clang__)
// g++ flags free() of what operator new returned, although here both are ours. The
// nothrow forms are replaced too: the test runner allocates with them, and a
// sanitizer's own nothrow new would not match this delete.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  if (probing && n > largest_request) largest_request = n;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  if (probing && n > largest_request) largest_request = n;
  return std::malloc(n == 0 ? 1 : n);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

/// Measures the largest allocation made while it lives (on this thread).
class AllocationProbe {
 public:
  AllocationProbe() {
    largest_request = 0;
    probing = true;
  }
  ~AllocationProbe() { probing = false; }
  AllocationProbe(const AllocationProbe&) = delete;
  AllocationProbe& operator=(const AllocationProbe&) = delete;
  std::size_t largest() const { return largest_request; }
};

// ---------------------------------------------------------------------------
// Types used below.

enum class Color : std::uint8_t { red = 1, green = 2, blue = 3 };

struct Point {  // trivially copyable: travels as its bytes
  int x;
  double y;
  char tag[3];
  bool operator==(const Point& o) const {
    return x == o.x && y == o.y && tag[0] == o.tag[0] && tag[1] == o.tag[1] && tag[2] == o.tag[2];
  }
};

struct Record {  // a user type with a cereal serialize()
  std::string name;
  std::vector<double> values;
  std::optional<int> rank;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, values, rank);
  }
  bool operator==(const Record&) const = default;
};

class Account {  // a user type with cereal save()/load() and private state
 public:
  Account() = default;
  Account(std::string owner, long cents) : owner_(std::move(owner)), cents_(cents) {}
  template <class Archive>
  void save(Archive& ar) const {
    ar(owner_, cents_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(owner_, cents_);
  }
  bool operator==(const Account&) const = default;

 private:
  std::string owner_;
  long cents_ = 0;
};

struct Blob {  // a cereal type holding a vector, for hostile size prefixes inside cereal
  std::vector<int> data;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(data);
  }
};

struct Throws {  // constructing it from an int throws: makes a valueless variant
  Throws() = default;
  explicit Throws(int) { throw std::runtime_error("no"); }
  std::string text;  // not trivially copyable, so std::variant may become valueless
  template <class Archive>
  void serialize(Archive& ar) {
    ar(text);
  }
};

struct NoSerialize {  // not trivially copyable, no serialize: cannot travel
  std::string text;
};

struct Percent {  // trivially copyable, but its own save()/load() decide how it travels
  int value = 0;
  template <class Archive>
  void save(Archive& ar) const {
    ar(static_cast<std::int8_t>(value));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::int8_t v = 0;
    ar(v);
    value = v < 0 ? 0 : v > 100 ? 100 : v;  // load() keeps the invariant
  }
};
struct Vec2 {  // trivially copyable, with a non-member cereal serialize()
  float x = 0, y = 0;
  bool operator==(const Vec2&) const = default;
};
template <class Archive>
void serialize(Archive& ar, Vec2& v) {
  ar(v.x, v.y);
}

struct Versioned {  // cereal class version: written once per archive
  int value = 0;
  template <class Archive>
  void serialize(Archive& ar, std::uint32_t version) {
    ar(value);
    if (version != 3) throw std::runtime_error("wrong version");
  }
  auto operator<=>(const Versioned&) const = default;
};

struct Nothing {  // an empty class: cereal writes no bytes for it
  template <class Archive>
  void serialize(Archive&) {}
  bool operator==(const Nothing&) const = default;
};

struct Label {  // cereal save_minimal()/load_minimal(): travels as one string
  std::string text;
  template <class Archive>
  std::string save_minimal(const Archive&) const {
    return text;
  }
  template <class Archive>
  void load_minimal(const Archive&, const std::string& v) {
    text = v;
  }
  bool operator==(const Label&) const = default;
};

struct Switches {  // cereal reads its std::array<bool, 3> as one block of bytes
  std::array<bool, 3> on{};
  template <class Archive>
  void serialize(Archive& ar) {
    ar(on);
  }
  bool operator==(const Switches&) const = default;
};

enum class Toggle : bool { off, on };

struct Meters {  // sent through a Codec<Meters> specialization, not by its bytes
  double value;
  bool operator==(const Meters&) const = default;
};

}  // namespace

CEREAL_CLASS_VERSION(Versioned, 3);

template <>
struct mproc::Codec<Meters> {
  static void encode(detail::Writer& w, const Meters& m) { w.varint(static_cast<std::uint64_t>(m.value * 1000)); }
  static Meters decode(detail::Reader& r) { return Meters{static_cast<double>(r.varint()) / 1000}; }
};

namespace {

template <class T>
T round_trip(const T& value) {
  const mproc::Bytes bytes = mproc::encode(value);
  return mproc::decode<T>(bytes);
}

template <class T>
void check_round_trip(const T& value) {
  CHECK(round_trip(value) == value);
}

/// Bytes from a list of small integers, for hand-made hostile inputs.
mproc::Bytes bytes_of(std::initializer_list<int> values) {
  mproc::Bytes out;
  for (int v : values) {
    const auto b = static_cast<std::byte>(v);
    out.append(&b, 1);
  }
  return out;
}

/// A length prefix (LEB128 varint) followed by `tail` bytes of zeros.
mproc::Bytes length_claim(std::uint64_t n, std::size_t tail = 16) {
  mproc::Bytes out;
  mproc::detail::Writer w(out);
  w.varint(n);
  for (std::size_t i = 0; i < tail; ++i) w.pod(std::uint8_t{0});
  return out;
}

/// decode<T> of hostile bytes must throw ProtocolError without a large allocation.
template <class T>
void check_rejected_cheaply(const mproc::Bytes& bytes) {
  AllocationProbe probe;
  CHECK_THROWS_AS(mproc::decode<T>(bytes), mproc::ProtocolError);
  CHECK(probe.largest() < (std::size_t{1} << 20));
}

/// A cereal tree: each node takes two levels of nesting, itself and its children.
struct Tree {
  std::vector<Tree> kids;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(kids);
  }
};

/// A chain of `nodes` Trees, each the only child of the one before.
Tree tree_chain(std::size_t nodes) {
  Tree root;
  Tree* last = &root;
  for (std::size_t i = 1; i < nodes; ++i) last = &last->kids.emplace_back();
  return root;
}

/// The number of nodes down the first children, counted without recursion.
std::size_t tree_height(const Tree& t) {
  std::size_t n = 1;
  for (const Tree* p = &t; !p->kids.empty(); p = &p->kids.front()) ++n;
  return n;
}

/// What encode(tree_chain(nodes)) is, made without building the chain (nor refusing
/// it): cereal's length, then each node's child count, 1 down to the leaf's 0.
mproc::Bytes tree_chain_bytes(std::size_t nodes) {
  mproc::Bytes out;
  const std::uint64_t length = nodes * sizeof(std::uint64_t);
  out.append(&length, sizeof length);
  for (std::size_t i = 0; i < nodes; ++i) {
    const std::uint64_t kids = i + 1 < nodes ? 1 : 0;
    out.append(&kids, sizeof kids);
  }
  return out;
}

/// A Russian doll through a Codec<Doll> of its own: one level of nesting each.
struct Doll {
  std::unique_ptr<Doll> inner;
};

/// What encode() makes of `dolls` nested Dolls: a flag byte for each, 1 but the last.
mproc::Bytes doll_bytes(std::size_t dolls) {
  mproc::Bytes out;
  for (std::size_t i = 0; i < dolls; ++i) {
    const auto has_inner = static_cast<std::uint8_t>(i + 1 < dolls ? 1 : 0);
    out.append(&has_inner, 1);
  }
  return out;
}

}  // namespace

template <>
struct mproc::Codec<Doll> {
  static void encode(detail::Writer& w, const Doll& d) {
    w.pod(static_cast<std::uint8_t>(d.inner ? 1 : 0));
    if (d.inner) detail::encode_value(w, *d.inner);
  }
  static Doll decode(detail::Reader& r) {
    Doll d;
    if (r.pod<std::uint8_t>() != 0) d.inner = std::make_unique<Doll>(detail::decode_value<Doll>(r));
    return d;
  }
};

namespace {

/// `n` Dolls, each inside the one before.
Doll nested_dolls(std::size_t n) {
  Doll outer;
  Doll* last = &outer;
  for (std::size_t i = 1; i < n; ++i) {
    last->inner = std::make_unique<Doll>();
    last = last->inner.get();
  }
  return outer;
}

std::size_t doll_count(const Doll& d) {
  std::size_t n = 1;
  for (const Doll* p = &d; p->inner; p = p->inner.get()) ++n;
  return n;
}

}  // namespace

// ---------------------------------------------------------------------------
// Round trips

TEST_CASE("trivially copyable values travel as their bytes") {
  check_round_trip(0);
  check_round_trip(-123456789);
  check_round_trip(std::uint64_t{0xfedcba9876543210});
  check_round_trip(3.25);
  check_round_trip('x');
  check_round_trip(Color::blue);
  check_round_trip(Point{7, -2.5, {'a', 'b', 'c'}});

  CHECK(mproc::encode(Point{1, 2, {}}).size() == sizeof(Point));
  CHECK(mproc::encode(12345).size() == sizeof(int));
}

TEST_CASE("bool is one checked byte") {
  check_round_trip(true);
  check_round_trip(false);
  const auto bytes = mproc::encode(true);
  REQUIRE(bytes.size() == 1);
  CHECK(std::to_integer<int>(bytes.data()[0]) == 1);
}

TEST_CASE("strings round-trip, including empty, embedded NULs and wide characters") {
  check_round_trip(std::string());
  check_round_trip(std::string("hello"));
  check_round_trip(std::string("a\0b\0c", 5));
  check_round_trip(std::string(100000, 'z'));
  check_round_trip(std::u32string(U"\u00e9t\u00e9"));
  check_round_trip(std::wstring(L"wide"));
}

TEST_CASE("sequences round-trip: vector, deque, list, vector<bool>, nested") {
  check_round_trip(std::vector<int>{});
  check_round_trip(std::vector<int>{1, 2, 3, -4});
  check_round_trip(std::vector<std::string>{"", "a", "bc"});
  check_round_trip(std::deque<double>{1.5, -0.0, 1e300});
  check_round_trip(std::list<std::string>{"x", "yy", "zzz"});
  check_round_trip(std::vector<bool>{true, false, true, true});
  check_round_trip(std::vector<std::vector<int>>{{}, {1}, {2, 3}});
  check_round_trip(std::vector<Point>{{1, 1.0, {'p', 'q', 'r'}}, {2, 2.0, {'s', 't', 'u'}}});

  std::vector<std::int64_t> big(1 << 20);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::int64_t>(i * i);
  check_round_trip(big);
}

TEST_CASE("arrays, pairs and tuples round-trip") {
  check_round_trip(std::array<int, 4>{1, 2, 3, 4});
  check_round_trip(std::array<std::string, 2>{"left", "right"});
  check_round_trip(std::pair<int, std::string>{5, "five"});
  check_round_trip(std::tuple<int, std::string, std::vector<double>>{1, "one", {1.0, 2.0}});
  check_round_trip(std::tuple<bool, char, std::optional<int>>{true, 'c', std::nullopt});
  check_round_trip(std::tuple<>{});
}

TEST_CASE("optional and variant round-trip in every state") {
  check_round_trip(std::optional<int>{});
  check_round_trip(std::optional<int>{42});
  check_round_trip(std::optional<std::string>{"set"});
  check_round_trip(std::optional<std::string>{});

  using V = std::variant<std::monostate, int, std::string, std::vector<int>>;
  check_round_trip(V{});
  check_round_trip(V{7});
  check_round_trip(V{std::string("text")});
  check_round_trip(V{std::vector<int>{1, 2}});
  CHECK(round_trip(V{std::string("s")}).index() == 2);
}

TEST_CASE("associative containers round-trip, duplicates included") {
  check_round_trip(std::map<std::string, int>{{"a", 1}, {"b", 2}});
  check_round_trip(std::multimap<int, std::string>{{1, "x"}, {1, "y"}, {2, "z"}});
  check_round_trip(std::unordered_map<int, std::string>{{3, "three"}, {4, "four"}});
  check_round_trip(std::unordered_multimap<int, int>{{1, 1}, {1, 2}});
  check_round_trip(std::set<std::string>{"m", "n"});
  check_round_trip(std::multiset<int>{5, 5, 6});
  check_round_trip(std::unordered_set<int>{9, 8, 7});
  check_round_trip(std::unordered_multiset<std::string>{"d", "d"});
  check_round_trip(std::map<int, int>{});
}

TEST_CASE("nested combinations round-trip") {
  using Nested = std::map<std::string, std::vector<std::optional<std::pair<int, std::string>>>>;
  check_round_trip(Nested{{"k", {std::nullopt, std::pair<int, std::string>{1, "v"}}}, {"empty", {}}});

  using Mixed = std::vector<std::variant<int, std::map<int, std::string>, std::tuple<double, std::set<int>>>>;
  check_round_trip(Mixed{1, std::map<int, std::string>{{2, "two"}}, std::tuple<double, std::set<int>>{0.5, {1, 2}}});
}

TEST_CASE("cereal user types round-trip: serialize(), save()/load(), inside containers") {
  const Record r{"rec", {1.0, 2.5}, 3};
  check_round_trip(r);
  check_round_trip(Record{});
  check_round_trip(Account("ada", 1234));
  check_round_trip(std::vector<Record>{r, Record{"second", {}, std::nullopt}});
  check_round_trip(std::map<std::string, Account>{{"a", Account("a", 1)}, {"b", Account("b", -2)}});
  check_round_trip(std::optional<Account>(Account("opt", 9)));
}

TEST_CASE("save_minimal()/load_minimal() types round-trip") {
  STATIC_REQUIRE(mproc::Sendable<Label>);
  check_round_trip(Label{"tag"});
  check_round_trip(Label{});
  check_round_trip(std::vector<Label>{{"a"}, {"bc"}});
}

TEST_CASE("a trivially copyable type's own cereal serialization wins over its bytes") {
  STATIC_REQUIRE(std::is_trivially_copyable_v<Percent>);
  STATIC_REQUIRE(mproc::detail::kind_of<Percent>() == mproc::detail::Kind::cereal);
  CHECK(round_trip(Percent{42}).value == 42);
  CHECK(round_trip(Percent{-7}).value == 0);  // through load(), not memcpy
  CHECK(round_trip(Percent{120}).value == 100);
  CHECK(mproc::decode<std::vector<Percent>>(mproc::encode(std::vector<Percent>{{5}, {-1}}))[1].value == 0);
  check_round_trip(Vec2{1.5f, -2.0f});
  STATIC_REQUIRE(mproc::detail::kind_of<Vec2>() == mproc::detail::Kind::cereal);
  // Standard types cereal also knows keep the codec's own rules.
  STATIC_REQUIRE(mproc::detail::kind_of<std::chrono::milliseconds>() == mproc::detail::Kind::trivial);
  STATIC_REQUIRE(mproc::detail::kind_of<std::array<int, 2>>() == mproc::detail::Kind::trivial);
  STATIC_REQUIRE(mproc::detail::kind_of<std::vector<int>>() == mproc::detail::Kind::sequence);
}

TEST_CASE("a sequence of cereal structs travels as one cereal block, not one per element") {
  std::vector<Vec2> points(10'000);
  for (std::size_t i = 0; i < points.size(); ++i) points[i] = {static_cast<float>(i), -static_cast<float>(i)};
  const auto bytes = mproc::encode(points);
  CHECK(bytes.size() <= points.size() * sizeof(Vec2) + 16);  // the floats, a count and one length
  check_round_trip(points);
  check_round_trip(std::deque<Vec2>(points.begin(), points.begin() + 3));
  check_round_trip(std::set<Versioned>{{5}, {6}});
  // One archive on both sides: a class version is written once and read once.
  check_round_trip(std::vector<Versioned>{{1}, {2}, {3}});
  check_round_trip(std::list<Versioned>{{4}});
  // An empty class writes no bytes: it travels element by element.
  check_round_trip(std::vector<Nothing>(1000));
  // A count that the block's bytes cannot hold is refused before anything is made.
  mproc::Bytes forged;
  {
    mproc::detail::Writer w(forged);
    w.varint(3);                          // three elements claimed
    w.pod(std::uint64_t{2});              // in a block of two bytes
    w.pod(std::uint16_t{0});
  }
  CHECK_THROWS_AS(mproc::decode<std::vector<Percent>>(forged), mproc::ProtocolError);
}

TEST_CASE("a Codec<T> specialization takes precedence over the built-in rules") {
  const auto bytes = mproc::encode(Meters{2.5});
  CHECK(bytes.size() == 2);  // varint(2500), not the 8 bytes of a double
  check_round_trip(Meters{2.5});
  check_round_trip(std::vector<Meters>{{0.001}, {12.0}});
}

TEST_CASE("encode_into appends to what is already in the buffer") {
  mproc::Bytes out = mproc::encode(std::string("first"));
  const std::size_t first_size = out.size();
  mproc::encode_into(out, std::string("second"));
  mproc::detail::Reader r(out);
  CHECK(mproc::detail::decode_value<std::string>(r) == "first");
  CHECK(r.position() == first_size);
  CHECK(mproc::detail::decode_value<std::string>(r) == "second");
  CHECK(r.at_end());
}

TEST_CASE("a big buffer's memory goes to the next big buffer, never to two at once") {
  constexpr std::size_t mib = std::size_t{1} << 20;
  const auto fill = [](mproc::Bytes& b, std::size_t n, char c) {
    b.resize(n);
    std::memset(b.data(), c, n);
  };
  const auto all_are = [](const mproc::Bytes& b, char c) {
    return std::all_of(b.data(), b.data() + b.size(), [c](std::byte x) { return x == std::byte(c); });
  };
  const std::byte* freed = nullptr;
  {
    mproc::Bytes a;
    fill(a, 8 * mib, 'a');
    freed = a.data();
  }
  const auto faults = [] {
    rusage u{};
    ::getrusage(RUSAGE_THREAD, &u);
    return u.ru_minflt;
  };
  mproc::Bytes b;
  const long faults_before = faults();
  fill(b, 6 * mib, 'b');  // takes the freed mapping: its pages are in already
  CHECK(faults() - faults_before < 16);  // a new mapping: 1,536 faults (or a few huge ones)
  CHECK(b.data() == freed);
  fill(b, 40 * mib, 'c');  // grows past it, keeping what it holds
  CHECK(all_are(b, 'c'));
  mproc::Bytes c;
  fill(c, 8 * mib, 'd');  // while b lives: memory of its own
  CHECK((c.data() + c.size() <= b.data() || b.data() + b.size() <= c.data()));
  CHECK(all_are(b, 'c'));
  CHECK(all_are(c, 'd'));

  // The kept mapping stays out of forked children (a pool's fork server would share its
  // pages, and each first write here would copy one); a child starts with none kept.
  {
    mproc::Bytes kept;
    fill(kept, 8 * mib, 'k');
  }
  const pid_t child = ::fork();
  if (child == 0) {
    mproc::Bytes x;
    fill(x, 6 * mib, 'x');
    ::_exit(all_are(x, 'x') ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));

  // Threads freeing and taking at once each get a mapping of their own.
  std::vector<std::thread> threads;
  std::atomic<int> mixed{0};
  for (char t = 'p'; t < 'p' + 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 50; ++round) {
        mproc::Bytes x;
        fill(x, (4 + static_cast<std::size_t>(round % 3)) * mib, t);
        if (!all_are(x, t)) ++mixed;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(mixed == 0);
}

// ---------------------------------------------------------------------------
// Hostile bytes

TEST_CASE("every truncation of an encoding is a ProtocolError") {
  using T = std::tuple<std::string, std::vector<int>, std::optional<std::map<int, std::string>>,
                       std::variant<int, std::string>, bool, Record>;
  const T value{
      "name", {1, 2, 3}, std::map<int, std::string>{{1, "one"}}, std::string("alt"), true, Record{"r", {0.5}, 1}};
  const mproc::Bytes full = mproc::encode(value);
  REQUIRE(mproc::decode<T>(full) == value);
  for (std::size_t n = 0; n < full.size(); ++n) {
    INFO("prefix of " << n << " of " << full.size() << " bytes");
    CHECK_THROWS_AS(mproc::decode<T>(std::span<const std::byte>(full.data(), n)), mproc::ProtocolError);
  }
}

TEST_CASE("trailing bytes after the value are a ProtocolError") {
  mproc::Bytes bytes = mproc::encode(std::vector<int>{1, 2});
  const std::byte extra{0};
  bytes.append(&extra, 1);
  CHECK_THROWS_WITH(mproc::decode<std::vector<int>>(bytes), Catch::Contains("trailing"));
  CHECK_THROWS_AS(mproc::decode<int>(bytes_of({1, 0, 0, 0, 0})), mproc::ProtocolError);
}

TEST_CASE("huge length prefixes are rejected before anything is allocated") {
  for (std::uint64_t claim : {std::uint64_t{1} << 28, std::uint64_t{1} << 60, std::uint64_t{1} << 62,
                              std::uint64_t{1} << 63, ~std::uint64_t{0}}) {
    INFO("claimed length " << claim);
    check_rejected_cheaply<std::vector<int>>(length_claim(claim));
    check_rejected_cheaply<std::vector<std::string>>(length_claim(claim));
    check_rejected_cheaply<std::string>(length_claim(claim));
    check_rejected_cheaply<std::deque<double>>(length_claim(claim));
    check_rejected_cheaply<std::list<int>>(length_claim(claim));
    check_rejected_cheaply<std::map<int, std::string>>(length_claim(claim));
    check_rejected_cheaply<std::unordered_set<std::int64_t>>(length_claim(claim));
  }
  // One more element than the bytes can hold.
  check_rejected_cheaply<std::vector<std::int32_t>>(length_claim(5, 16));
}

TEST_CASE("a bad bool or optional flag byte is a ProtocolError") {
  CHECK_THROWS_AS(mproc::decode<bool>(bytes_of({2})), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<bool>(bytes_of({0xff})), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<std::optional<int>>(bytes_of({2, 0, 0, 0, 0})), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<std::vector<bool>>(bytes_of({2, 1, 7})), mproc::ProtocolError);
  CHECK(mproc::decode<std::optional<int>>(bytes_of({0})) == std::nullopt);
}

TEST_CASE("bools inside arrays and cereal types are checked too") {
  check_round_trip(std::array<bool, 3>{true, false, true});
  check_round_trip(std::vector<std::array<bool, 2>>{{true, false}, {false, true}});
  check_round_trip(Toggle::on);
  check_round_trip(Switches{{true, false, true}});
  using Bools = std::array<bool, 2>;
  using NestedBools = std::array<std::array<bool, 1>, 2>;
  using BoolPairs = std::vector<std::array<bool, 2>>;
  using Optionals = std::array<std::optional<char>, 1>;
  CHECK_THROWS_AS(mproc::decode<Bools>(bytes_of({7, 1})), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<Bools>(bytes_of({1, 2})), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<NestedBools>(bytes_of({0, 3})), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<BoolPairs>(bytes_of({1, 1, 9})), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<Optionals>(bytes_of({5, 0})), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<Toggle>(bytes_of({2})), mproc::ProtocolError);

  mproc::Bytes bytes = mproc::encode(Switches{{true, false, true}});
  bytes.data()[bytes.size() - 2] = std::byte{4};  // the middle bool of the block
  CHECK_THROWS_AS(mproc::decode<Switches>(bytes), mproc::ProtocolError);
}

TEST_CASE("a variant index out of range is a ProtocolError") {
  using V = std::variant<int, double>;
  CHECK_THROWS_WITH(mproc::decode<V>(bytes_of({2, 0, 0, 0, 0, 0, 0, 0, 0})), Catch::Contains("variant index"));
  CHECK_THROWS_AS(mproc::decode<V>(length_claim(std::uint64_t{1} << 40, 8)), mproc::ProtocolError);
}

TEST_CASE("sending a valueless variant is a ValueError") {
  std::variant<int, Throws> v;
  CHECK_THROWS(v.emplace<1>(1));
  REQUIRE(v.valueless_by_exception());
  CHECK_THROWS_AS(mproc::encode(v), mproc::ValueError);
}

TEST_CASE("a malformed varint is a ProtocolError") {
  // Eleven continuation bytes: longer than any 64-bit value.
  CHECK_THROWS_WITH(
      mproc::decode<std::string>(bytes_of({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})),
      Catch::Contains("varint"));
  // The tenth byte may only carry bit 63.
  CHECK_THROWS_WITH(mproc::decode<std::string>(bytes_of({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02})),
                    Catch::Contains("varint"));
  // A varint cut short.
  CHECK_THROWS_AS(mproc::decode<std::string>(bytes_of({0x80})), mproc::ProtocolError);
  // A well-formed 64-bit varint still decodes.
  mproc::Bytes max = length_claim(~std::uint64_t{0}, 0);
  mproc::detail::Reader r(max);
  CHECK(r.varint() == ~std::uint64_t{0});
  CHECK(r.at_end());
}

TEST_CASE("bad cereal payloads are a ProtocolError") {
  const mproc::Bytes good = mproc::encode(Record{"abc", {1.0}, 2});
  // Length prefix beyond the bytes present.
  CHECK_THROWS_AS(mproc::decode<Record>(std::span<const std::byte>(good.data(), good.size() - 1)),
                  mproc::ProtocolError);
  // A length prefix longer than the archive inside: trailing bytes in the payload.
  mproc::Bytes padded;
  {
    const std::uint64_t length = good.size() - sizeof(std::uint64_t) + 1;
    padded.append(&length, sizeof length);
    padded.append(good.data() + sizeof(std::uint64_t), good.size() - sizeof(std::uint64_t));
    const std::byte zero{0};
    padded.append(&zero, 1);
  }
  CHECK_THROWS_AS(mproc::decode<Record>(padded), mproc::ProtocolError);
  // Garbage where the archive should be.
  mproc::Bytes garbage;
  {
    const std::uint64_t length = 3;
    garbage.append(&length, sizeof length);
    garbage.append("\xff\xff\xff", 3);
  }
  CHECK_THROWS_AS(mproc::decode<Record>(garbage), mproc::ProtocolError);
}

TEST_CASE("a huge size inside a cereal payload is rejected before anything is allocated") {
  // Blob's archive: a u64 element count, then the ints. Claim far more than follow.
  for (std::uint64_t claim : {std::uint64_t{1} << 28, std::uint64_t{1} << 40, std::uint64_t{1} << 62}) {
    INFO("claimed length " << claim);
    mproc::Bytes bytes;
    const std::uint64_t length = sizeof(std::uint64_t) + 8;
    bytes.append(&length, sizeof length);
    bytes.append(&claim, sizeof claim);
    bytes.append("\0\0\0\0\0\0\0\0", 8);
    check_rejected_cheaply<Blob>(bytes);
  }
}

// ---------------------------------------------------------------------------
// What can travel

TEST_CASE("Sendable accepts values and rejects what cannot leave the process") {
  STATIC_REQUIRE(mproc::Sendable<int>);
  STATIC_REQUIRE(mproc::Sendable<Point>);
  STATIC_REQUIRE(mproc::Sendable<std::string>);
  STATIC_REQUIRE(mproc::Sendable<const std::string&>);
  STATIC_REQUIRE(mproc::Sendable<std::map<std::string, std::vector<std::optional<Record>>>>);
  STATIC_REQUIRE(mproc::Sendable<Account>);
  STATIC_REQUIRE(mproc::Sendable<Meters>);

  STATIC_REQUIRE_FALSE(mproc::Sendable<int*>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<const char*>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::string_view>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::span<int>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::span<const int, 3>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<NoSerialize>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::vector<NoSerialize>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::pair<int, NoSerialize>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::map<int, NoSerialize>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::optional<std::string_view>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::variant<int, int*>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::function<int(int)>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::reference_wrapper<int>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<int Point::*>);
  // Pointers and views one level down are refused as well: a memcpy would copy them.
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::array<int*, 2>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::array<const char*, 1>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::array<std::string_view, 2>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::array<std::span<int>, 2>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::array<std::array<int*, 2>, 2>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::vector<std::array<std::string_view, 1>>>);
  STATIC_REQUIRE_FALSE(mproc::Sendable<std::pair<int, std::array<int*, 1>>>);
  STATIC_REQUIRE(mproc::Sendable<std::array<std::array<int, 2>, 2>>);
}

TEST_CASE("the compile error names the innermost type that cannot be sent") {
  using mproc::detail::first_unsendable;
  STATIC_REQUIRE(std::is_same_v<first_unsendable<std::vector<NoSerialize>>::type, NoSerialize>);
  STATIC_REQUIRE(
      std::is_same_v<first_unsendable<std::map<int, std::vector<std::string_view>>>::type, std::string_view>);
  STATIC_REQUIRE(std::is_same_v<first_unsendable<std::tuple<int, std::pair<char, int*>>>::type, int*>);
  STATIC_REQUIRE(std::is_same_v<first_unsendable<NoSerialize>::type, NoSerialize>);
  STATIC_REQUIRE(std::is_same_v<first_unsendable<std::array<std::string_view, 2>>::type, std::string_view>);
}

// ---------------------------------------------------------------------------
// Empty values, nesting

TEST_CASE("an empty tuple or array takes one byte, so that containers of them keep their length") {
  STATIC_REQUIRE(mproc::detail::fixed_encoded_size<std::tuple<>>() == 1);
  const mproc::Bytes empty = mproc::encode(std::tuple<>{});
  REQUIRE(empty.size() == 1);
  CHECK(std::to_integer<int>(empty.data()[0]) == 0);  // a fixed byte, not whatever the object holds
  CHECK(mproc::decode<std::vector<std::tuple<>>>(mproc::encode(std::vector<std::tuple<>>(5))).size() == 5);

  using NoStrings = std::array<std::string, 0>;  // not a plain copy: its own rule
  CHECK(mproc::encode(NoStrings{}).size() == 1);
  CHECK(mproc::decode<std::vector<NoStrings>>(mproc::encode(std::vector<NoStrings>(3))).size() == 3);
  const std::list<std::pair<NoStrings, std::tuple<>>> pairs(4);
  CHECK(round_trip(pairs).size() == 4);
  CHECK_THROWS_AS(mproc::decode<NoStrings>(bytes_of({1})), mproc::ProtocolError);
}

TEST_CASE("values nest up to max_nesting levels; deeper ones are refused both ways, never a stack overflow") {
  using mproc::max_nesting;
  REQUIRE(max_nesting == 1000);
  // Through cereal: a Tree node is two levels, so 500 nodes are the most.
  CHECK(tree_height(round_trip(tree_chain(max_nesting / 2))) == max_nesting / 2);
  CHECK(mproc::encode(tree_chain(max_nesting / 2)).size() == tree_chain_bytes(max_nesting / 2).size());
  CHECK_THROWS_AS(mproc::encode(tree_chain(max_nesting / 2 + 1)), mproc::ValueError);
  CHECK_THROWS_AS(mproc::decode<Tree>(tree_chain_bytes(max_nesting / 2 + 1)), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<Tree>(tree_chain_bytes(150'000)), mproc::ProtocolError);

  // Through a Codec<T>: a Doll is one level.
  CHECK(doll_count(round_trip(nested_dolls(max_nesting))) == max_nesting);
  CHECK_THROWS_AS(mproc::encode(nested_dolls(max_nesting + 1)), mproc::ValueError);
  CHECK_THROWS_AS(mproc::decode<Doll>(doll_bytes(max_nesting + 1)), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<Doll>(doll_bytes(150'000)), mproc::ProtocolError);

  // The codec's containers count too, and a cereal archive inside them goes on counting.
  std::vector<std::vector<Tree>> outer(1);
  outer[0].push_back(tree_chain(max_nesting / 2 - 1));
  CHECK(tree_height(round_trip(outer)[0][0]) == max_nesting / 2 - 1);
  outer[0][0] = tree_chain(max_nesting / 2);
  CHECK_THROWS_AS(mproc::encode(outer), mproc::ValueError);
  std::vector<std::optional<std::vector<int>>> shallow(3, std::vector<int>{1, 2});
  CHECK(round_trip(shallow) == shallow);
  // Pairs, tuples and optionals around a value take no level of their own.
  const std::optional<std::pair<int, Tree>> wrapped(std::in_place, 1, tree_chain(max_nesting / 2));
  CHECK(tree_height(round_trip(wrapped)->second) == max_nesting / 2);

  // A failed encode leaves the writer's count where it was: the same Writer goes on.
  mproc::Bytes out;
  mproc::detail::Writer w(out);
  CHECK_THROWS_AS(mproc::detail::encode_value(w, nested_dolls(max_nesting + 1)), mproc::ValueError);
  CHECK(w.depth() == 0);
}

TEST_CASE("whatever a cereal load() throws on a value is a ProtocolError") {
  using mproc_test::CerealPicky;
  CHECK(mproc::decode<CerealPicky>(mproc::encode(CerealPicky{7})).value == 7);
  for (int refused : {-1, -2, -3}) {
    INFO("value " << refused);
    CHECK_THROWS_AS(mproc::decode<CerealPicky>(mproc::encode(CerealPicky{refused})), mproc::ProtocolError);
    CHECK_THROWS_AS(mproc::decode<std::vector<CerealPicky>>(mproc::encode(std::vector<CerealPicky>(2, {refused}))),
                    mproc::ProtocolError);
  }
}
