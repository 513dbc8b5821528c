#pragma once
// Sends user types through their cereal serialization (serialize, or save/load):
// cereal's binary archives over stream buffers that read and write our buffers in place.

#include <mproc/detail/bytes.hpp>
#include <mproc/detail/type_name.hpp>

#include <cereal/archives/binary.hpp>
// The standard types a user's serialize() is likely to use, so users need no cereal includes.
#include <cereal/types/array.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/memory.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

#include <cstdint>
#include <istream>
#include <ostream>
#include <streambuf>
#include <string>
#include <type_traits>

namespace mproc::detail {

template <class T>
inline constexpr bool has_cereal_serialization =
    std::is_default_constructible_v<T> &&
    cereal::traits::is_output_serializable<T, cereal::BinaryOutputArchive>::value &&
    cereal::traits::is_input_serializable<T, cereal::BinaryInputArchive>::value;

/// A streambuf that appends to a Bytes buffer.
class BytesOutBuf : public std::streambuf {
 public:
  explicit BytesOutBuf(Bytes& out) : out_(&out) {}

 protected:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    out_->append(s, static_cast<std::size_t>(n));
    return n;
  }
  int_type overflow(int_type ch) override {
    if (traits_type::eq_int_type(ch, traits_type::eof())) return traits_type::not_eof(ch);
    const char c = traits_type::to_char_type(ch);
    out_->append(&c, 1);
    return ch;
  }

 private:
  Bytes* out_;
};

/// A read-only streambuf over a byte span (no copy).
class SpanInBuf : public std::streambuf {
 public:
  SpanInBuf(const std::byte* data, std::size_t size) {
    // std::streambuf wants char*, but only reads through get-area pointers.
    char* begin = const_cast<char*>(reinterpret_cast<const char*>(data));
    setg(begin, begin, begin + size);
  }
  std::size_t consumed() const { return static_cast<std::size_t>(gptr() - eback()); }
};

/// Encodes value as a u64 length followed by cereal's binary archive.
template <class T>
void cereal_encode(Writer& w, const T& value) {
  Bytes& out = w.buffer();
  const std::size_t length_at = out.size();
  out.extend(sizeof(std::uint64_t));
  {
    BytesOutBuf buf(out);
    std::ostream os(&buf);
    cereal::BinaryOutputArchive archive(os);
    archive(value);
  }
  const std::uint64_t length = out.size() - length_at - sizeof(std::uint64_t);
  std::memcpy(out.data() + length_at, &length, sizeof length);
}

template <class T>
T cereal_decode(Reader& r) {
  const auto length = r.pod<std::uint64_t>();
  if (length > r.remaining()) {
    throw ProtocolError("mproc: cereal payload of " + std::to_string(length) + " bytes exceeds the " +
                        std::to_string(r.remaining()) + " bytes left");
  }
  const std::byte* data = r.take(static_cast<std::size_t>(length));
  SpanInBuf buf(data, static_cast<std::size_t>(length));
  std::istream is(&buf);
  T value{};
  try {
    cereal::BinaryInputArchive archive(is);
    archive(value);
  } catch (const std::exception& e) {
    // cereal reports short reads as cereal::Exception; absurd sizes surface as
    // bad_alloc or length_error. All of them mean the bytes were not a valid T.
    throw ProtocolError("mproc: cannot decode a cereal-serialized " + type_name<T>() +
                        ": " + e.what());
  }
  if (buf.consumed() != length) {
    throw ProtocolError("mproc: cereal payload has " + std::to_string(length - buf.consumed()) +
                        " trailing bytes");
  }
  return value;
}

}  // namespace mproc::detail
