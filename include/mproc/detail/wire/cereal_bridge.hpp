#pragma once
// Sends user types through their cereal serialization (serialize, or save/load):
// cereal's binary format, written and read by archives of our own straight into and
// out of our buffers, which check what they read and count how deep values nest.

#include <mproc/detail/wire/bytes.hpp>
#include <mproc/detail/wire/type_name.hpp>

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

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

namespace mproc::detail {

/// cereal's binary output format (cereal::BinaryOutputArchive's bytes), appended to a
/// Bytes buffer without a stream in between.
class CheckedBinaryOutputArchive
    : public cereal::OutputArchive<CheckedBinaryOutputArchive, cereal::AllowEmptyClassElision> {
 public:
  /// depth: the levels of nesting (max_nesting) the archive's values are inside.
  CheckedBinaryOutputArchive(Bytes& out, std::size_t depth)
      : cereal::OutputArchive<CheckedBinaryOutputArchive, cereal::AllowEmptyClassElision>(this),
        out_(&out),
        nesting_(depth) {}

  void saveBinary(const void* data, std::size_t size) { out_->append(data, size); }
  Nesting& nesting() noexcept { return nesting_; }

 private:
  Bytes* out_;
  Nesting nesting_;
};

/// cereal's binary input format, read straight from a byte span, with every read
/// and every element count checked against the bytes left, so that a corrupt count
/// cannot make a container allocate gigabytes before the read fails.
class CheckedBinaryInputArchive
    : public cereal::InputArchive<CheckedBinaryInputArchive, cereal::AllowEmptyClassElision> {
 public:
  /// depth: the levels of nesting (max_nesting) the archive's values are inside.
  CheckedBinaryInputArchive(const std::byte* data, std::size_t size, std::size_t depth)
      : cereal::InputArchive<CheckedBinaryInputArchive, cereal::AllowEmptyClassElision>(this),
        reader_({data, size}),
        nesting_(depth) {}

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
  Nesting& nesting() noexcept { return nesting_; }

 private:
  Reader reader_;
  Nesting nesting_;
};

}  // namespace mproc::detail

// cereal pairs each input archive with its output archive: save_minimal/load_minimal
// types look up the type save_minimal returns through it. (Declared before any
// serialization trait is asked about a type.)
namespace cereal::traits::detail {
template <>
struct get_output_from_input<mproc::detail::CheckedBinaryInputArchive> {
  using type = mproc::detail::CheckedBinaryOutputArchive;
};
template <>
struct get_input_from_output<mproc::detail::CheckedBinaryOutputArchive> {
  using type = mproc::detail::CheckedBinaryInputArchive;
};
}  // namespace cereal::traits::detail

namespace mproc::detail {

template <class T, template <class...> class Template>
inline constexpr bool is_specialization_of = false;
template <template <class...> class Template, class... Args>
inline constexpr bool is_specialization_of<Template<Args...>, Template> = true;

template <class T>
inline constexpr bool is_std_array = false;
template <class T, std::size_t N>
inline constexpr bool is_std_array<std::array<T, N>> = true;

/// Whether cereal's processing of a T is a level of nesting (max_nesting), as in the
/// codec: class types are (a user's type, a container, a smart pointer), except strings,
/// those that nest only as deep as their type is written (pairs, tuples, arrays,
/// optionals, variants) and cereal's wrappers around one value (a name, a size, a block
/// of bytes, the pointee of a smart pointer).
template <class T>
inline constexpr bool cereal_level =
    std::is_class_v<T> && !is_specialization_of<T, std::basic_string> && !is_specialization_of<T, std::pair> &&
    !is_specialization_of<T, std::tuple> && !is_specialization_of<T, std::optional> &&
    !is_specialization_of<T, std::variant> && !is_std_array<T> && !is_specialization_of<T, cereal::NameValuePair> &&
    !is_specialization_of<T, cereal::SizeTag> && !is_specialization_of<T, cereal::BinaryData> &&
    !is_specialization_of<T, cereal::memory_detail::PtrWrapper>;

// cereal calls prologue before it processes each value and epilogue after (found here
// by argument-dependent lookup): they count the levels, so that a recursive type is
// refused past max_nesting instead of overflowing the stack. An exception skips the
// epilogues, but an archive is never used after one.
template <class T>
void prologue(CheckedBinaryOutputArchive& ar, const T&) {
  if constexpr (cereal_level<T>) ar.nesting().enter<ValueError>();
}
template <class T>
void epilogue(CheckedBinaryOutputArchive& ar, const T&) noexcept {
  if constexpr (cereal_level<T>) ar.nesting().leave();
}
template <class T>
void prologue(CheckedBinaryInputArchive& ar, const T&) {
  if constexpr (cereal_level<T>) ar.nesting().enter<ProtocolError>();
}
template <class T>
void epilogue(CheckedBinaryInputArchive& ar, const T&) noexcept {
  if constexpr (cereal_level<T>) ar.nesting().leave();
}

template <class T>
  requires std::is_arithmetic_v<T>
void CEREAL_SAVE_FUNCTION_NAME(CheckedBinaryOutputArchive& ar, const T& t) {
  ar.saveBinary(std::addressof(t), sizeof(t));
}
template <class T>
void CEREAL_SERIALIZE_FUNCTION_NAME(CheckedBinaryOutputArchive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
void CEREAL_SERIALIZE_FUNCTION_NAME(CheckedBinaryOutputArchive& ar, cereal::SizeTag<T>& t) {
  ar(t.size);
}
template <class T>
void CEREAL_SAVE_FUNCTION_NAME(CheckedBinaryOutputArchive& ar, const cereal::BinaryData<T>& bd) {
  ar.saveBinary(bd.data, static_cast<std::size_t>(bd.size));
}

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
    cereal::traits::is_output_serializable<T, CheckedBinaryOutputArchive>::value &&
    cereal::traits::is_input_serializable<T, CheckedBinaryInputArchive>::value;

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
    CheckedBinaryOutputArchive archive(out, w.depth());
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
  CheckedBinaryInputArchive archive(data, static_cast<std::size_t>(length), r.depth());
  try {
    load(archive);
  } catch (const ProtocolError&) {
    throw;
  } catch (...) {
    // Anything else a user's load() throws on these bytes means they were not a T.
    throw ProtocolError("mproc: cannot decode a cereal-serialized " + type_name<T>() + ": " +
                        describe_current_exception().text());
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
