// Bad bytes give mproc::ProtocolError, never a crash, undefined behaviour or a huge
// allocation: the inputs libFuzzer found (tests/fuzz/fuzz_decode.cpp; they are in
// its seed corpus too), pinned down here so that the normal suite keeps them fixed.
// Run under the sanitizer build, the first one is also checked for the undefined
// behaviour it used to have.

#include "reliability_support.hpp"

#include <mproc/codec.hpp>
#include <mproc/detail/frame.hpp>
#include <mproc/detail/lane.hpp>
#include <mproc/detail/task.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
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

}  // namespace

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
  REQUIRE(*flag == std::byte{1});
  *flag = std::byte{115};
  CHECK_THROWS_AS(mproc::decode<WithOptional>(bytes.span()), mproc::ProtocolError);
}

TEST_CASE("a frame that claims more bytes in a shared-memory lane than the lane holds is a ProtocolError") {
  // The size comes from the other process's frame header; reading it (or giving its
  // pages back) must not reach past the lane.
  mproc::detail::Lane lane;
  CHECK(lane.view(mproc::detail::Lane::capacity).size() == mproc::detail::Lane::capacity);
  CHECK_THROWS_AS(lane.view(mproc::detail::Lane::capacity + 1), mproc::ProtocolError);
  CHECK_THROWS_AS(lane.view(SIZE_MAX), mproc::ProtocolError);
}
