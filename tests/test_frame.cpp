// Frames (mproc/detail/wire/frame.hpp): headers are validated field by field, the
// assembler rebuilds frames from a byte stream cut anywhere, and frames cross a
// real pipe intact, 64 MiB payloads included.

#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/wire/frame.hpp>

#include <catch2/catch.hpp>

#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using mproc::detail::FrameHeader;
using mproc::detail::FrameKind;

/// A frame as the tests compare them: header fields and an owned payload.
struct Frame {
  FrameKind kind;
  std::uint64_t id;
  std::string payload;
  bool operator==(const Frame&) const = default;
};

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

Frame own(const mproc::detail::FrameView& f) {
  return {f.header.kind, f.header.id, std::string(reinterpret_cast<const char*>(f.payload.data()), f.payload.size())};
}

/// The bytes of the frames, back to back, as a writer would send them.
std::string serialize(const std::vector<Frame>& frames) {
  std::string out;
  for (const Frame& f : frames) {
    const FrameHeader h = mproc::detail::make_frame_header(f.kind, f.id, f.payload.size());
    out.append(reinterpret_cast<const char*>(&h), sizeof h);
    out += f.payload;
  }
  return out;
}

/// The next frame the assembler holds, copied out. Not inlined: g++ 12 then loses
/// track of the assembler's std::optional header and warns -Wmaybe-uninitialized.
[[gnu::noinline]] std::optional<Frame> take(mproc::detail::FrameAssembler& assembler) {
  if (auto f = assembler.next()) return own(*f);
  return std::nullopt;
}

/// Feeds `stream` to a FrameAssembler in pieces of at most `piece` bytes and
/// returns every frame it produced.
std::vector<Frame> reassemble(const std::string& stream, std::size_t piece) {
  mproc::detail::FrameAssembler assembler;
  std::vector<Frame> frames;
  for (std::size_t pos = 0; pos < stream.size();) {
    const auto space = assembler.prepare(piece);
    const std::size_t n = std::min({piece, space.size(), stream.size() - pos});
    std::memcpy(space.data(), stream.data() + pos, n);
    assembler.commit(n);
    pos += n;
    while (auto f = take(assembler)) frames.push_back(*f);
    assembler.release();
  }
  CHECK(assembler.unread() == 0);
  return frames;
}

std::vector<Frame> sample_frames() {
  std::string big(200 * 1024, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 31 + 7);
  return {
      {FrameKind::task, 1, "first"},
      {FrameKind::result, 2, ""},
      {FrameKind::message, 0xffffffffffffffff, big},
      {FrameKind::ready, 3, std::string(1, '\0')},
      {FrameKind::stop, 4, "last"},
  };
}

/// Header bytes with one field changed, for validation tests.
template <class Mutate>
std::vector<std::byte> header_with(Mutate mutate) {
  FrameHeader h = mproc::detail::make_frame_header(FrameKind::task, 9, 0);
  mutate(h);
  std::vector<std::byte> bytes(sizeof h);
  std::memcpy(bytes.data(), &h, sizeof h);
  return bytes;
}

}  // namespace

TEST_CASE("a valid frame header parses back to its fields") {
  const FrameHeader h = mproc::detail::make_frame_header(FrameKind::result, 77, 1234, 5);
  std::byte bytes[sizeof h];
  std::memcpy(bytes, &h, sizeof h);
  const FrameHeader p = mproc::detail::parse_frame_header(bytes);
  CHECK(p.kind == FrameKind::result);
  CHECK(p.id == 77);
  CHECK(p.size == 1234);
  CHECK(p.flags == 5);
}

TEST_CASE("frame header validation rejects bad magic, kind, reserved bits, size and truncation") {
  using mproc::ProtocolError;
  using mproc::detail::parse_frame_header;
  CHECK_THROWS_WITH(parse_frame_header(header_with([](FrameHeader& h) { h.magic ^= 1; })), Catch::Contains("magic"));
  CHECK_THROWS_WITH(parse_frame_header(header_with([](FrameHeader& h) { h.kind = FrameKind{0}; })),
                    Catch::Contains("kind"));
  CHECK_THROWS_WITH(
      parse_frame_header(header_with([](FrameHeader& h) { h.kind = FrameKind{mproc::detail::max_frame_kind + 1}; })),
      Catch::Contains("kind"));
  CHECK_THROWS_WITH(parse_frame_header(header_with([](FrameHeader& h) { h.reserved = 1; })),
                    Catch::Contains("reserved"));
  CHECK_THROWS_AS(
      parse_frame_header(header_with([](FrameHeader& h) { h.size = mproc::detail::max_frame_payload + 1; })),
      ProtocolError);
  CHECK_NOTHROW(parse_frame_header(header_with([](FrameHeader& h) { h.size = mproc::detail::max_frame_payload; })));
  const auto good = header_with([](FrameHeader&) {});
  CHECK_THROWS_AS(parse_frame_header(std::span<const std::byte>(good.data(), good.size() - 1)), ProtocolError);
}

TEST_CASE("FrameAssembler rebuilds frames fed one byte at a time and in big pieces") {
  const std::vector<Frame> frames = sample_frames();
  const std::string stream = serialize(frames);
  for (std::size_t piece :
       {std::size_t{1}, std::size_t{7}, std::size_t{24}, std::size_t{4096}, std::size_t{64 * 1024}, stream.size()}) {
    INFO("pieces of " << piece << " bytes");
    CHECK(reassemble(stream, piece) == frames);
  }
}

TEST_CASE("FrameAssembler reports a bad header in the stream as a ProtocolError") {
  std::string stream = serialize({{FrameKind::task, 1, "ok"}});
  std::string bad = serialize({{FrameKind::task, 2, "bad"}});
  bad[0] ^= 0x55;  // corrupt the magic
  stream += bad;
  mproc::detail::FrameAssembler assembler;
  const auto space = assembler.prepare(stream.size());
  std::memcpy(space.data(), stream.data(), stream.size());
  assembler.commit(stream.size());
  const auto first = assembler.next();
  REQUIRE(first);
  CHECK(own(*first) == Frame{FrameKind::task, 1, "ok"});
  CHECK_THROWS_AS(assembler.next(), mproc::ProtocolError);
}

TEST_CASE("FrameReader reads frames from a pipe written by another thread") {
  const std::vector<Frame> frames = sample_frames();
  auto pipe = mproc::detail::make_pipe();
  std::thread writer([&] {
    for (const Frame& f : frames) {
      mproc::detail::write_frame(pipe.write.get(), mproc::detail::make_frame_header(f.kind, f.id, f.payload.size()),
                                 as_bytes(f.payload));
    }
    pipe.write.reset();  // end of file for the reader
  });
  mproc::detail::FrameReader reader(pipe.read.get());
  std::vector<Frame> got;
  while (auto f = reader.read()) got.push_back(own(*f));
  writer.join();
  CHECK(got == frames);
}

TEST_CASE("FrameReader: a stream that ends inside a frame is a ProtocolError") {
  const std::string stream = serialize({{FrameKind::message, 1, "complete"}, {FrameKind::message, 2, "cut"}});
  auto pipe = mproc::detail::make_pipe();
  REQUIRE(mproc::detail::write_all(pipe.write.get(), stream.data(), stream.size() - 1));
  pipe.write.reset();
  mproc::detail::FrameReader reader(pipe.read.get());
  const auto first = reader.read();
  REQUIRE(first);
  CHECK(own(*first) == Frame{FrameKind::message, 1, "complete"});
  CHECK_THROWS_AS(reader.read(), mproc::ProtocolError);
  CHECK_FALSE(reader.read());  // once: the cut frame's bytes are dropped, the end of file remains
}

TEST_CASE("write_frame sends a 64 MiB payload through a pipe intact") {
  std::string payload(std::size_t{64} << 20, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>((i * 2654435761u) >> 13);
  auto pipe = mproc::detail::make_pipe();
  bool written = false;
  std::thread writer([&] {
    written = mproc::detail::write_frame(
        pipe.write.get(), mproc::detail::make_frame_header(FrameKind::message, 42, payload.size()), as_bytes(payload));
    pipe.write.reset();
  });
  mproc::detail::FrameReader reader(pipe.read.get());
  const auto f = reader.read();
  REQUIRE(f);
  CHECK(f->header.id == 42);
  REQUIRE(f->payload.size() == payload.size());
  CHECK(std::memcmp(f->payload.data(), payload.data(), payload.size()) == 0);
  CHECK_FALSE(reader.read());
  writer.join();
  CHECK(written);
}

TEST_CASE("write_frame returns false when the reader is gone") {
  std::signal(SIGPIPE, SIG_IGN);  // this test process only: EPIPE instead of death
  auto pipe = mproc::detail::make_pipe();
  pipe.read.reset();
  const std::string payload = "nobody listens";
  CHECK_FALSE(mproc::detail::write_frame(
      pipe.write.get(), mproc::detail::make_frame_header(FrameKind::message, 1, payload.size()), as_bytes(payload)));
}
