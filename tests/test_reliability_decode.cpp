// Bad bytes give mproc::ProtocolError, never a crash, undefined behaviour or a huge
// allocation: the inputs libFuzzer found (tests/fuzz/fuzz_decode.cpp; they are in
// its seed corpus too), pinned down here so that the normal suite keeps them fixed.
// Run under the sanitizer build, the first one is also checked for the undefined
// behaviour it used to have. Values nested deeper than a thread's stack can decode
// are refused, in a pool's results and on a pipe.

#include "reliability_support.hpp"  // first: it configures Catch2

#include <mproc/codec.hpp>
#include <mproc/detail/engine/lane.hpp>
#include <mproc/detail/engine/outcome.hpp>
#include <mproc/detail/engine/worker.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/pipe.hpp>
#include <mproc/pool.hpp>
#include <mproc/queue.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <vector>

namespace {

/// A user type whose cereal serialization holds a std::optional (a bool flag first).
struct WithOptional {
  std::optional<int> id;
  std::string name;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, name);
  }
};

/// A chain of `links` values, each nested in the one before, sent without recursion:
/// a flag byte per link (1 but the last), as a recursive type's encoding would be.
/// Decoding it recurses once per link, through Codec<CodecChain> or through cereal.
struct CodecChain {
  std::size_t links = 1;
};
struct CerealChain {
  std::size_t links = 1;
  template <class Archive>
  void save(Archive& ar) const {
    for (std::size_t i = 0; i < links; ++i) ar(static_cast<std::uint8_t>(i + 1 < links ? 1 : 0));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint8_t more = 0;
    ar(more);
    if (more == 0) return;
    CerealChain inner;
    ar(inner);
    links = inner.links + 1;
  }
};

/// A linked list whose cereal serialization recurses (through unique_ptr), destroyed
/// without recursion: one can be built and sent as deep as the test likes.
struct Link {
  std::unique_ptr<Link> next;
  Link() = default;
  Link(Link&&) = default;
  Link& operator=(Link&&) = default;
  ~Link() {
    for (auto p = std::move(next); p;) p = std::move(p->next);
  }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(next);
  }
};

Link linked_list(std::size_t links) {
  Link head;
  Link* last = &head;
  for (std::size_t i = 1; i < links; ++i) last = (last->next = std::make_unique<Link>()).get();
  return head;
}

std::size_t length_of(const Link& head) {
  std::size_t n = 1;
  for (const Link* p = &head; p->next; p = p->next.get()) ++n;
  return n;
}

}  // namespace

template <>
struct mproc::Codec<CodecChain> {
  static void encode(detail::Writer& w, const CodecChain& c) {
    for (std::size_t i = 0; i < c.links; ++i) w.pod(static_cast<std::uint8_t>(i + 1 < c.links ? 1 : 0));
  }
  static CodecChain decode(detail::Reader& r) {
    if (r.pod<std::uint8_t>() == 0) return {};
    return {detail::decode_value<CodecChain>(r).links + 1};
  }
};

TEST_CASE("an empty vector of doubles at an unaligned position decodes (no memcpy to a null pointer)") {
  const auto bytes = mproc::encode(std::tuple<char, std::vector<double>, char>{'a', {}, 'b'});
  const auto back = mproc::decode<std::tuple<char, std::vector<double>, char>>(bytes);
  CHECK(std::get<0>(back) == 'a');
  CHECK(std::get<1>(back).empty());
  CHECK(std::get<2>(back) == 'b');
}

TEST_CASE("a frame header claiming a huge payload does not make the reader allocate it") {
  const auto header = mproc::detail::make_frame_header(mproc::detail::FrameKind::result, 1, std::uint64_t{1} << 39);
  mproc::detail::FrameAssembler in;
  auto space = in.prepare();
  std::memcpy(space.data(), &header, sizeof header);
  in.commit(sizeof header);
  CHECK_FALSE(in.next());  // the header is fine, the payload is not there
  // Room grows with what arrives, not with what the header claims (512 GiB here).
  CHECK(in.prepare().size() <= std::size_t{8} << 20);

  // And a stream that ends there is a ProtocolError, not std::bad_alloc.
  auto pipe = mproc::detail::make_pipe();
  REQUIRE(mproc::detail::write_all(pipe.write.get(), &header, sizeof header));
  pipe.write.reset();
  mproc::detail::FrameReader reader(pipe.read.get());
  CHECK_THROWS_AS(reader.read(), mproc::ProtocolError);
}

TEST_CASE("a chunk outcome claiming more errors than its bytes can hold is a ProtocolError") {
  mproc::detail::ChunkOutcomeHeader h{0, 0xffffffffu, 0xffffffffu, 0, 0, 0};
  mproc::Bytes payload(&h, sizeof h);
  CHECK_THROWS_AS(mproc::detail::parse_chunk_outcome(payload.span()), mproc::ProtocolError);
}

TEST_CASE("a cereal payload whose bool byte is neither 0 nor 1 is a ProtocolError") {
  // Empty, so that read as "true" the bad byte would decode to a plausible value.
  mproc::Bytes bytes = mproc::encode(WithOptional{std::nullopt, "seven"});
  // After the u64 archive length comes the optional's "empty" flag: cereal writes a bool.
  REQUIRE(bytes.size() > sizeof(std::uint64_t));
  std::byte* flag = bytes.data() + sizeof(std::uint64_t);
  REQUIRE(std::to_integer<int>(*flag) == 1);
  *flag = std::byte{115};
  CHECK_THROWS_AS(mproc::decode<WithOptional>(bytes.span()), mproc::ProtocolError);
}

TEST_CASE("a frame that claims more bytes in a shared-memory lane than the lane holds is a ProtocolError") {
  // The size comes from the other process's frame header; reading it (or giving its
  // pages back) must not reach past the lane.
  mproc::detail::Lane lane;
  const std::vector<std::byte> payload(mproc::detail::Lane::min_payload);
  REQUIRE(lane.try_put(payload));
  CHECK_THROWS_AS(lane.view(mproc::detail::Lane::capacity + 1), mproc::ProtocolError);
  CHECK_THROWS_AS(lane.view(SIZE_MAX), mproc::ProtocolError);
  CHECK(lane.view(payload.size()).size() == payload.size());
}

TEST_CASE("a result nested 150,000 deep fails its task with ProtocolError instead of overflowing the pool's thread") {
  // The worker sends it (flat bytes); the pool's thread would recurse once per level
  // to decode it: past max_nesting the task fails, the program and the pool go on.
  using mproc::max_nesting;
  for (const bool serial : {false, true}) {
    INFO((serial ? "serial" : "pool"));
    mproc::Pool codec([](std::size_t links) { return CodecChain{links}; }, {.processes = 1, .serial = serial});
    CHECK(codec.apply(max_nesting).links == max_nesting);
    CHECK_THROWS_AS(codec.apply(max_nesting + 1), mproc::ProtocolError);
    CHECK_THROWS_AS(codec.apply(150'000), mproc::ProtocolError);
    CHECK_THROWS_AS(codec.apply(2'000'000), mproc::ProtocolError);  // far past any thread's stack
    CHECK(codec.apply(3).links == 3);

    mproc::Pool cereal([](std::size_t links) { return CerealChain{links}; }, {.processes = 1, .serial = serial});
    CHECK(cereal.apply(max_nesting).links == max_nesting);
    CHECK_THROWS_AS(cereal.apply(150'000), mproc::ProtocolError);
    auto in_a_map = cereal.map_async(std::vector<std::size_t>{2, 150'000, 4});
    CHECK_THROWS_AS(in_a_map.get(), mproc::ProtocolError);
    CHECK(cereal.apply(5).links == 5);
  }
}

TEST_CASE("a value nested too deep to send fails its task in the worker with RemoteError, and the pool goes on") {
  for (const bool serial : {false, true}) {
    INFO((serial ? "serial" : "pool"));
    mproc::Pool pool(linked_list, {.processes = 1, .serial = serial});
    std::optional<mproc::RemoteError> too_deep;
    try {
      (void)pool.apply(150'000);
    } catch (const mproc::RemoteError& e) {
      too_deep = e;
    }
    REQUIRE(too_deep);
    CHECK(too_deep->type_name() == "mproc::ValueError");
    CHECK_THAT(too_deep->message(), Catch::Contains("nested more than 1000 levels"));
    // A Link is two levels (itself and its unique_ptr).
    CHECK(length_of(pool.apply(mproc::max_nesting / 2)) == mproc::max_nesting / 2);
    CHECK_THROWS_AS(pool.apply(mproc::max_nesting / 2 + 1), mproc::RemoteError);
    CHECK(length_of(pool.apply(7)) == 7);
  }
}

TEST_CASE("a Connection's recv of a value nested too deep is a ProtocolError, and the next one arrives") {
  auto [a, b] = mproc::Pipe<CodecChain>();
  a.send(CodecChain{20'000});  // fits the pipe's buffer: no reader needed yet
  a.send(CodecChain{12});
  CHECK_THROWS_AS(b.recv(), mproc::ProtocolError);
  CHECK(b.recv().links == 12);
}

TEST_CASE("sending a value nested too deep is a ValueError that sends nothing: an argument, a pipe, a queue") {
  for (const bool serial : {false, true}) {
    INFO((serial ? "serial" : "pool"));
    mproc::Pool pool([](const Link& head) { return length_of(head); }, {.processes = 1, .serial = serial});
    CHECK_THROWS_AS(pool.apply(linked_list(mproc::max_nesting)), mproc::ValueError);
    std::vector<Link> lists;
    lists.push_back(linked_list(2));
    lists.push_back(linked_list(mproc::max_nesting));
    CHECK_THROWS_AS(pool.map(std::ranges::subrange(std::make_move_iterator(lists.begin()),  // Link is move-only
                                                   std::make_move_iterator(lists.end()))),
                    mproc::ValueError);
    CHECK(pool.apply(linked_list(9)) == 9);
  }
  auto [a, b] = mproc::Pipe<Link>();
  CHECK_THROWS_AS(a.send(linked_list(150'000)), mproc::ValueError);
  a.send(linked_list(3));
  CHECK(length_of(b.recv()) == 3);
  mproc::Queue<Link> queue;
  CHECK_THROWS_AS(queue.put(linked_list(150'000)), mproc::ValueError);
  queue.put(linked_list(4));
  CHECK(length_of(queue.get()) == 4);
}
