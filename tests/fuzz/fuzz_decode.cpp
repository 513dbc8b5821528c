// libFuzzer target for everything that reads bytes from another process: frame
// headers, the FrameAssembler fed in pieces, chunk outcomes (and the results in them),
// and decode<T> for a selection of types. Every input goes through all of them. The
// only exception allowed out is mproc::ProtocolError; anything else (another
// exception, a crash, an out-of-bounds read, a leak, an allocation beyond
// -malloc_limit_mb) is a finding.
//
//   fuzz_decode -max_total_time=60 -rss_limit_mb=2048 -malloc_limit_mb=256 corpus/ seeds/
//
// The seed corpus (tests/fuzz/seeds/) holds one valid input of each kind. With
// MPROC_FUZZ_WRITE_SEEDS=<dir> in the environment the target writes those seeds to
// <dir> and exits instead of fuzzing (to refresh them after an encoding change).

#include <mproc/codec.hpp>
#include <mproc/detail/engine/job.hpp>
#include <mproc/detail/engine/outcome.hpp>
#include <mproc/detail/engine/worker.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/errors.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <fstream>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

namespace fuzz {

/// A user type with cereal's serialize().
struct Record {
  std::string name;
  std::vector<double> values;
  std::map<int, std::string> tags;
  std::optional<int> id;
  std::variant<int, std::string> key;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, values, tags, id, key);
  }
};

/// A user type with save()/load() whose load() rejects some values itself.
struct Checked {
  int count = 0;
  std::string label;
  template <class Archive>
  void save(Archive& ar) const {
    ar(count, label);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(count, label);
    if (count < 0) throw std::invalid_argument("negative count");
  }
};

using Nested = std::vector<std::tuple<std::string, std::optional<std::vector<int>>, std::variant<bool, double>>>;

}  // namespace fuzz

namespace {

using Bytes = std::span<const std::byte>;

/// Runs f; a ProtocolError is the expected answer to bad bytes, anything else escapes.
template <class F>
void expect_protocol_errors_only(F&& f) {
  try {
    f();
  } catch (const mproc::ProtocolError&) {
  }
}

template <class... Ts>
void decode_all(Bytes bytes) {
  (expect_protocol_errors_only([&] { (void)mproc::decode<Ts>(bytes); }), ...);
}

/// Feeds the bytes to a FrameAssembler in pieces whose sizes come from the input
/// itself, taking every frame it completes, as the pool's thread does.
void assemble(Bytes bytes) {
  if (bytes.empty()) return;
  const std::size_t piece = 1 + std::to_integer<std::size_t>(bytes[0]) % 29;
  bytes = bytes.subspan(1);
  mproc::detail::FrameAssembler in;
  std::size_t frames = 0;
  while (!bytes.empty()) {
    const auto space = in.prepare(1);
    const std::size_t n = std::min({piece, bytes.size(), space.size()});
    std::memcpy(space.data(), bytes.data(), n);
    in.commit(n);
    bytes = bytes.subspan(n);
    while (auto frame = in.next()) {
      ++frames;
      volatile std::size_t touch = 0;  // read the whole payload view: it must be in bounds
      for (std::byte b : frame->payload) touch = touch + std::to_integer<std::size_t>(b);
      (void)touch;
    }
    in.release();
  }
  (void)frames;
}

/// A chunk outcome, then the results in it decoded as strings (undecodable results
/// fail their items, they do not throw).
void outcome(Bytes bytes) {
  const auto parsed = mproc::detail::parse_chunk_outcome(bytes);
  // The pool rejects an outcome for more items than the chunk it sent (handle_result)
  // before it delivers any; the chunks here have at most 1000 items.
  if (parsed.header.count > 1000) return;
  std::size_t seen = 0;
  mproc::detail::for_each_outcome<std::string>(
      0, parsed, [&](std::size_t, std::string&&) { ++seen; }, [&](std::size_t, std::exception_ptr) { ++seen; });
  if (seen != parsed.header.count) std::abort();  // every item gets exactly one outcome
}

void write_file(const std::string& path, std::span<const std::byte> bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

/// A frame (header and payload) as it travels.
mproc::Bytes frame(mproc::detail::FrameKind kind, std::span<const std::byte> payload) {
  const auto h = mproc::detail::make_frame_header(kind, 42, payload.size());
  mproc::Bytes out(&h, sizeof h);
  out.append(payload.data(), payload.size());
  return out;
}

/// Writes one valid input of each kind the target reads into dir.
void write_seeds(const std::string& dir) {
  const fuzz::Record record{"ada", {1.5, -2.25}, {{1, "one"}, {7, "seven"}}, 12, std::string("k")};
  write_file(dir + "/record", mproc::encode(record));
  write_file(dir + "/records", mproc::encode(std::vector<fuzz::Record>{record, {}}));
  write_file(dir + "/checked", mproc::encode(fuzz::Checked{3, "three"}));
  write_file(dir + "/map_of_vectors",
             mproc::encode(std::map<std::string, std::vector<double>>{{"a", {1, 2}}, {"b", {}}}));
  write_file(dir + "/nested",
             mproc::encode(fuzz::Nested{{"x", std::vector<int>{1, 2, 3}, true}, {"", std::nullopt, 2.5}}));
  write_file(dir + "/variant",
             mproc::encode(std::variant<int, std::string, std::vector<double>>(std::vector<double>{1, 2})));
  write_file(dir + "/tuple", mproc::encode(std::tuple<int, std::string, double>{1, "two", 3.0}));
  write_file(dir + "/string", mproc::encode(std::string("hello, mproc")));
  write_file(dir + "/deque_of_lists", mproc::encode(std::deque<std::list<int>>{{1, 2}, {}, {3}}));

  // A chunk outcome with results and an error, as a worker makes it.
  mproc::Bytes items;
  for (const char* s : {"ok", "throw", "fine"}) mproc::encode_into(items, std::tuple<std::string>(s));
  auto f = [](const std::string& s) -> std::string {
    if (s == "throw") throw std::runtime_error("bad item");
    return s + "!";
  };
  mproc::Bytes outcome;
  mproc::detail::run_chunk(f, 42, items.span(), outcome, nullptr, false);
  write_file(dir + "/outcome", outcome);

  // Frames: the FrameAssembler reads from the second byte on (the first sets the piece size).
  mproc::Bytes stream;
  const std::byte piece{7};
  stream.append(&piece, 1);
  const auto task = frame(mproc::detail::FrameKind::task, items.span());
  const auto result = frame(mproc::detail::FrameKind::result, outcome.span());
  stream.append(task.data(), task.size());
  stream.append(result.data(), result.size());
  write_file(dir + "/frames", stream);
  write_file(dir + "/frame_header", task.span().first(mproc::detail::frame_header_size));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Bytes bytes(reinterpret_cast<const std::byte*>(data), size);
  expect_protocol_errors_only([&] { (void)mproc::detail::parse_frame_header(bytes); });
  expect_protocol_errors_only([&] { assemble(bytes); });
  expect_protocol_errors_only([&] { outcome(bytes); });
  decode_all<int, bool, double, std::string, std::vector<int>, std::vector<bool>, std::optional<std::string>,
             std::variant<int, std::string, std::vector<double>>, std::tuple<int, std::string, double>,
             std::pair<std::string, std::vector<std::uint8_t>>, std::array<std::int16_t, 3>,
             std::map<std::string, std::vector<double>>, std::unordered_map<int, std::string>, std::set<std::string>,
             std::deque<std::list<int>>, std::vector<std::map<int, std::optional<std::string>>>, fuzz::Nested,
             fuzz::Record, std::vector<fuzz::Record>, fuzz::Checked>(bytes);
  return 0;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("MPROC_FUZZ_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}
