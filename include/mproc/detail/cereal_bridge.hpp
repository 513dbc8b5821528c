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
#include <ostream>
#include <streambuf>
#include <string>
#include <type_traits>

namespace mproc::detail {

/// cereal's binary input format, read straight from a byte span, with every read
/// and every element count checked against the bytes left, so that a corrupt count
/// cannot make a container allocate gigabytes before the read fails.
class CheckedBinaryInputArchive
    : public cereal::InputArchive<CheckedBinaryInputArchive, cereal::AllowEmptyClassElision> {
 public:
  CheckedBinaryInputArchive(const std::byte* data, std::size_t size)
      : cereal::InputArchive<CheckedBinaryInputArchive, cereal::AllowEmptyClassElision>(this), reader_({data, size}) {}

  void loadBinary(void* data, std::size_t size) { reader_.raw(data, size); }
  /// A count of elements, each at least one byte.
  std::uint64_t load_count() {
    const auto n = reader_.pod<std::uint64_t>();
    if (n > reader_.remaining()) {
      throw ProtocolError("mproc: cereal payload claims " + std::to_string(n) + " elements in " +
                          std::to_string(reader_.remaining()) + " bytes");
    }
    return n;
  }
  std::size_t remaining() const noexcept { return reader_.remaining(); }

 private:
  Reader reader_;
};

}  // namespace mproc::detail

// cereal pairs each input archive with its output archive: save_minimal/load_minimal
// types look up the type save_minimal returns through it. (Declared before any
// serialization trait is asked about a type.)
namespace cereal::traits::detail {
template <>
struct get_output_from_input<mproc::detail::CheckedBinaryInputArchive> {
  using type = cereal::BinaryOutputArchive;
};
}  // namespace cereal::traits::detail

namespace mproc::detail {

template <class T>
  requires std::is_arithmetic_v<T>
void CEREAL_LOAD_FUNCTION_NAME(CheckedBinaryInputArchive& ar, T& t) {
  if constexpr (std::is_same_v<T, bool>) {
    // A byte other than 0 or 1 copied into a bool is not a bool (undefined behaviour
    // once read): check it, as the codec's own flags are.
    std::uint8_t byte = 0;
    ar.loadBinary(&byte, 1);
    if (byte > 1) throw ProtocolError("mproc: invalid bool byte " + std::to_string(byte) + " in a cereal payload");
    t = byte == 1;
  } else {
    ar.loadBinary(std::addressof(t), sizeof(t));
  }
}
template <class T>
void CEREAL_SERIALIZE_FUNCTION_NAME(CheckedBinaryInputArchive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
void CEREAL_SERIALIZE_FUNCTION_NAME(CheckedBinaryInputArchive& ar, cereal::SizeTag<T>& t) {
  t.size = static_cast<std::remove_reference_t<T>>(ar.load_count());
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(CheckedBinaryInputArchive& ar, cereal::BinaryData<T>& bd) {
  ar.loadBinary(bd.data, static_cast<std::size_t>(bd.size));
  // cereal reads arrays of arithmetic types (std::array<bool, N>, bool[N]) as one block
  // of bytes: bools among them are checked here, as single ones are above.
  using Element = std::remove_cv_t<std::remove_all_extents_t<std::remove_pointer_t<std::remove_reference_t<T>>>>;
  if constexpr (std::is_same_v<Element, bool>) {
    const auto* bytes = static_cast<const unsigned char*>(bd.data);
    for (std::size_t i = 0; i < static_cast<std::size_t>(bd.size); ++i) {
      if (bytes[i] > 1) {
        throw ProtocolError("mproc: invalid bool byte " + std::to_string(bytes[i]) + " in a cereal payload");
      }
    }
  }
}

template <class T>
inline constexpr bool has_cereal_serialization =
    std::is_default_constructible_v<T> &&
    cereal::traits::is_output_serializable<T, cereal::BinaryOutputArchive>::value &&
    cereal::traits::is_input_serializable<T, CheckedBinaryInputArchive>::value;

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

/// Encodes what save(archive) writes as a u64 length followed by one cereal binary
/// archive: a value, or the run of a sequence's elements. One archive for a whole
/// run, not one per element, is what keeps a vector of small cereal structs cheap (a
/// stream and an archive per element cost 40 times the bytes' own copy), and keeps
/// cereal's per-archive state (class versions, shared pointers) the same on both sides.
template <class Save>
void cereal_encode_block(Writer& w, Save&& save) {
  Bytes& out = w.buffer();
  const std::size_t length_at = out.size();
  out.extend(sizeof(std::uint64_t));
  {
    BytesOutBuf buf(out);
    std::ostream os(&buf);
    cereal::BinaryOutputArchive archive(os);
    save(archive);
  }
  const std::uint64_t length = out.size() - length_at - sizeof(std::uint64_t);
  std::memcpy(out.data() + length_at, &length, sizeof length);
}

/// Reads a block cereal_encode_block wrote: load(archive) takes the values of T (or
/// of a run of Ts) out of it, and every byte of it must be used.
template <class T, class Load>
void cereal_decode_block(Reader& r, Load&& load) {
  const auto length = r.pod<std::uint64_t>();
  if (length > r.remaining()) {
    throw ProtocolError("mproc: cereal payload of " + std::to_string(length) + " bytes exceeds the " +
                        std::to_string(r.remaining()) + " bytes left");
  }
  const std::byte* data = r.take(static_cast<std::size_t>(length));
  CheckedBinaryInputArchive archive(data, static_cast<std::size_t>(length));
  try {
    load(archive);
  } catch (const ProtocolError&) {
    throw;
  } catch (const std::exception& e) {
    // Anything else a user's load() throws on these bytes means they were not a T.
    throw ProtocolError("mproc: cannot decode a cereal-serialized " + type_name<T>() + ": " + e.what());
  }
  if (archive.remaining() != 0) {
    throw ProtocolError("mproc: cereal payload has " + std::to_string(archive.remaining()) + " trailing bytes");
  }
}

template <class T>
void cereal_encode(Writer& w, const T& value) {
  cereal_encode_block(w, [&](auto& archive) { archive(value); });
}

template <class T>
T cereal_decode(Reader& r) {
  T value{};
  cereal_decode_block<T>(r, [&](auto& archive) { archive(value); });
  return value;
}

}  // namespace mproc::detail
