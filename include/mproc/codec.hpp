#pragma once
// The codec: how a value becomes bytes in one process and a value again in another.
// The first rule that applies wins:
//
//   types with a Codec<T>           the specialization's encode/decode
//   bool (and enums over bool)      a checked flag byte (a stray byte never becomes a bad bool)
//   user types with cereal          cereal's binary archive (serialize, save/load, or
//                                   save_minimal/load_minimal), even if trivially copyable
//   trivially copyable types        plain copy (memcpy), unless they hold pointers or
//                                   views, or bytes that need checking (arrays of those too)
//   optional, variant               checked tag bytes
//   string, vector, deque, list,
//   array, pair, tuple, map, set,
//   unordered_map/set (multi too)   recursively, lengths as varints
//
// Every value takes at least one byte (an empty tuple or array too), so that element
// counts can be checked against the bytes left and a pool's items found by their bytes.
// mproc::Sendable<T> says whether T can travel; every entry point static_asserts it
// and names the offending type when it can't. Decoding never trusts its input:
// every length is checked against the bytes left, and bad bytes are a ProtocolError.
// Values may nest at most max_nesting levels deep, both ways.

#include <mproc/detail/wire/bytes.hpp>
#include <mproc/detail/wire/cereal_bridge.hpp>
#include <mproc/errors.hpp>

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

namespace mproc {

/// Customization point: specialize Codec<T> with
///   static void encode(detail::Writer&, const T&);
///   static T decode(detail::Reader&);
/// to send a type that needs more than its bytes (mproc's own shared-memory handles
/// use it). It takes precedence over every built-in rule. An encoding must take at
/// least one byte (element counts are checked against the bytes left).
template <class T>
struct Codec;

namespace detail {

template <class T>
concept has_custom_codec = requires(Writer& w, Reader& r, const T& v) {
  Codec<T>::encode(w, v);
  { Codec<T>::decode(r) } -> std::same_as<T>;
};

template <class T>
inline constexpr bool is_std_span = false;
template <class T, std::size_t N>
inline constexpr bool is_std_span<std::span<T, N>> = true;

enum class Kind { none, custom, boolean, trivial, string, sequence, array, tuple, optional, variant, map, set, cereal };

/// bool, or an enum over bool: one byte that must be 0 or 1 (any other byte copied
/// into it is not a value of the type), so it travels as a checked flag.
template <class T>
consteval bool is_bool_like() {
  if constexpr (std::is_enum_v<T>) return std::is_same_v<std::underlying_type_t<T>, bool>;
  else return std::is_same_v<T, bool>;
}

// Trivially copyable types that hold pointers or need their bytes validated are
// excluded from the plain-copy path, and so are arrays, pairs and tuples with such an
// element (std::array<int*, 2> would copy pointers, std::array<bool, 2> unchecked
// bytes). Members of a user's struct can't be seen from here: see the README.
template <class T>
consteval bool plain_copyable_type();
template <template <class...> class Tuple, class... Ts>
consteval bool all_plain_copyable(std::type_identity<Tuple<Ts...>>) {
  return (plain_copyable_type<Ts>() && ...);
}
template <class T>
consteval bool plain_copyable_type() {
  if constexpr (!std::is_trivially_copyable_v<T> || std::is_pointer_v<T> || std::is_member_pointer_v<T> ||
                is_bool_like<T>() || is_specialization_of<T, std::optional> || is_specialization_of<T, std::variant> ||
                is_specialization_of<T, std::basic_string_view> || is_specialization_of<T, std::reference_wrapper> ||
                is_std_span<T>) {
    return false;
  } else if constexpr (std::is_array_v<T>) {
    return plain_copyable_type<std::remove_extent_t<T>>();
  } else if constexpr (is_std_array<T>) {
    return plain_copyable_type<typename T::value_type>();
  } else if constexpr (is_specialization_of<T, std::pair> || is_specialization_of<T, std::tuple>) {
    return all_plain_copyable(std::type_identity<T>{});  // where the library makes them trivially copyable
  } else {
    return true;
  }
}
template <class T>
inline constexpr bool plain_copyable = plain_copyable_type<T>();

/// The standard types the codec encodes itself, even where cereal has a rule for
/// them too (std::chrono values are plain copies).
template <class T>
inline constexpr bool is_codec_std_type =
    is_specialization_of<T, std::basic_string> || is_specialization_of<T, std::vector> ||
    is_specialization_of<T, std::deque> || is_specialization_of<T, std::list> || is_std_array<T> ||
    is_specialization_of<T, std::pair> || is_specialization_of<T, std::tuple> ||
    is_specialization_of<T, std::optional> || is_specialization_of<T, std::variant> ||
    is_specialization_of<T, std::map> || is_specialization_of<T, std::multimap> ||
    is_specialization_of<T, std::unordered_map> || is_specialization_of<T, std::unordered_multimap> ||
    is_specialization_of<T, std::set> || is_specialization_of<T, std::multiset> ||
    is_specialization_of<T, std::unordered_set> || is_specialization_of<T, std::unordered_multiset> ||
    is_specialization_of<T, std::chrono::duration> || is_specialization_of<T, std::chrono::time_point>;

/// A class type with cereal serialization of its own (serialize, save/load,
/// save_minimal/load_minimal). Like a Codec<T>, it wins over the plain copy a
/// trivially copyable type would otherwise get: its author chose how it travels.
template <class T>
inline constexpr bool uses_cereal = std::is_class_v<T> && !is_codec_std_type<T> && has_cereal_serialization<T>;

template <class T>
consteval Kind kind_of() {
  if constexpr (has_custom_codec<T>) return Kind::custom;
  else if constexpr (is_bool_like<T>()) return Kind::boolean;
  else if constexpr (uses_cereal<T>) return Kind::cereal;
  else if constexpr (plain_copyable<T>) return Kind::trivial;
  else if constexpr (is_specialization_of<T, std::basic_string>) {
    return plain_copyable<typename T::value_type> ? Kind::string : Kind::none;
  } else if constexpr (is_specialization_of<T, std::vector> || is_specialization_of<T, std::deque> ||
                       is_specialization_of<T, std::list>)
    return Kind::sequence;
  else if constexpr (is_std_array<T>) return Kind::array;
  else if constexpr (is_specialization_of<T, std::pair> || is_specialization_of<T, std::tuple>) return Kind::tuple;
  else if constexpr (is_specialization_of<T, std::optional>) return Kind::optional;
  else if constexpr (is_specialization_of<T, std::variant>) return Kind::variant;
  else if constexpr (is_specialization_of<T, std::map> || is_specialization_of<T, std::multimap> ||
                     is_specialization_of<T, std::unordered_map> || is_specialization_of<T, std::unordered_multimap>)
    return Kind::map;
  else if constexpr (is_specialization_of<T, std::set> || is_specialization_of<T, std::multiset> ||
                     is_specialization_of<T, std::unordered_set> || is_specialization_of<T, std::unordered_multiset>)
    return Kind::set;
  else return Kind::none;
}

template <class T>
consteval bool sendable();

template <class... Ts>
consteval bool all_sendable(std::type_identity<std::tuple<Ts...>>) {
  return (sendable<Ts>() && ...);
}
template <class A, class B>
consteval bool all_sendable(std::type_identity<std::pair<A, B>>) {
  return sendable<A>() && sendable<B>();
}
template <class... Ts>
consteval bool all_sendable(std::type_identity<std::variant<Ts...>>) {
  return (sendable<Ts>() && ...);
}

template <class T>
consteval bool sendable() {
  constexpr Kind kind = kind_of<T>();
  if constexpr (kind == Kind::none) return false;
  else if constexpr (kind == Kind::sequence || kind == Kind::array || kind == Kind::set) {
    return sendable<typename T::value_type>();
  } else if constexpr (kind == Kind::optional) return sendable<typename T::value_type>();
  else if constexpr (kind == Kind::map) {
    return sendable<typename T::key_type>() && sendable<typename T::mapped_type>();
  } else if constexpr (kind == Kind::tuple || kind == Kind::variant) {
    return all_sendable(std::type_identity<T>{});
  } else return true;
}

// The innermost type that makes T unsendable, so the compile error can name it.
template <class T>
struct first_unsendable;
template <class... Ts>
struct first_unsendable_of;
template <>
struct first_unsendable_of<> {
  using type = void;
};
template <class T, class... Ts>
struct first_unsendable_of<T, Ts...> {
  using type =
      std::conditional_t<sendable<T>(), typename first_unsendable_of<Ts...>::type, typename first_unsendable<T>::type>;
};
template <class T>
struct element_types {
  using type = first_unsendable_of<>;
};
template <class T>
concept has_value_type = requires { typename T::value_type; };
template <class T>
concept has_mapped_type = has_value_type<T> && requires { typename T::mapped_type; };
template <has_value_type T>
struct element_types<T> {
  using type = first_unsendable_of<typename T::value_type>;
};
template <has_mapped_type T>
struct element_types<T> {
  using type = first_unsendable_of<typename T::key_type, typename T::mapped_type>;
};
template <template <class...> class Tuple, class... Ts>
  requires(is_specialization_of<Tuple<Ts...>, std::tuple> || is_specialization_of<Tuple<Ts...>, std::pair> ||
           is_specialization_of<Tuple<Ts...>, std::variant>)
struct element_types<Tuple<Ts...>> {
  using type = first_unsendable_of<Ts...>;
};
template <class T>
struct first_unsendable {
  using inner = typename element_types<T>::type::type;
  using type = std::conditional_t<kind_of<T>() == Kind::none || std::is_void_v<inner>, T, inner>;
};

/// An array or tuple with no elements: it travels as one zero byte, as every value
/// takes a byte at least (an empty plain one is a plain copy, also of one byte).
template <class T>
consteval bool is_empty_aggregate() {
  constexpr Kind kind = kind_of<T>();
  if constexpr (kind == Kind::array || kind == Kind::tuple) return std::tuple_size_v<T> == 0;
  else return false;
}

// The smallest number of bytes any value of T encodes to; bounds element counts.
// At least one for every T.
template <class T>
consteval std::size_t min_encoded_size() {
  constexpr Kind kind = kind_of<T>();
  if constexpr (kind == Kind::trivial) return sizeof(T);
  else if constexpr (is_empty_aggregate<T>()) return 1;
  else if constexpr (kind == Kind::array) {
    return std::tuple_size_v<T> * min_encoded_size<typename T::value_type>();
  } else if constexpr (kind == Kind::tuple) {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (std::size_t{0} + ... + min_encoded_size<std::tuple_element_t<I, T>>());
    }(std::make_index_sequence<std::tuple_size_v<T>>{});
  } else if constexpr (kind == Kind::cereal) return sizeof(std::uint64_t);
  else return 1;  // a tag byte or a varint length
}

/// The encoded size of T when every value of T encodes to the same number of bytes
/// (plain copies and tuples/arrays of them), else 0. Fixed-size items need no offsets.
template <class T>
consteval std::size_t fixed_encoded_size() {
  constexpr Kind kind = kind_of<T>();
  if constexpr (kind == Kind::trivial) return sizeof(T);
  else if constexpr (kind == Kind::boolean || is_empty_aggregate<T>()) return 1;
  else if constexpr (kind == Kind::array) {
    return fixed_encoded_size<typename T::value_type>() * std::tuple_size_v<T>;
  } else if constexpr (kind == Kind::tuple) {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      constexpr std::size_t sizes[] = {fixed_encoded_size<std::tuple_element_t<I, T>>()..., 1};
      for (std::size_t i = 0; i + 1 < sizeof(sizes) / sizeof(sizes[0]); ++i) {
        if (sizes[i] == 0) return std::size_t{0};
      }
      return (std::size_t{0} + ... + sizes[I]);
    }(std::make_index_sequence<std::tuple_size_v<T>>{});
  } else return 0;
}

template <class T>
void encode_value(Writer& w, const T& value);
template <class T>
T decode_value(Reader& r);

/// Whether the elements of a sequence or set of E travel as one cereal block (see
/// cereal_encode_block), at least a byte each. An empty class, which cereal writes as
/// no bytes, travels element by element, each with its length.
template <class E>
inline constexpr bool cereal_run = kind_of<E>() == Kind::cereal && !std::is_empty_v<E>;

/// The fewest bytes an element of a sequence or set of E takes.
template <class E>
consteval std::size_t min_element_size() {
  return cereal_run<E> ? 1 : min_encoded_size<E>();
}

template <class Seq>
void encode_elements(Writer& w, const Seq& seq) {
  using E = typename Seq::value_type;
  w.varint(seq.size());
  if constexpr (kind_of<E>() == Kind::trivial && requires { seq.data(); }) {
    w.raw(seq.data(), seq.size() * sizeof(E));
  } else if constexpr (cereal_run<E>) {
    cereal_encode_block(w, [&](auto& archive) {
      for (const auto& e : seq) archive(e);
    });
  } else {
    for (const auto& e : seq) encode_value(w, e);
  }
}

template <class Tuple, std::size_t... I>
Tuple decode_tuple(Reader& r, std::index_sequence<I...>) {
  // Braced initialisation evaluates left to right, so fields decode in order.
  return Tuple{decode_value<std::tuple_element_t<I, Tuple>>(r)...};
}

template <class Variant, std::size_t I = 0>
Variant decode_variant(Reader& r, std::size_t index) {
  if constexpr (I < std::variant_size_v<Variant>) {
    if (index == I) return Variant(std::in_place_index<I>, decode_value<std::variant_alternative_t<I, Variant>>(r));
    return decode_variant<Variant, I + 1>(r, index);
  } else {
    throw ProtocolError("mproc: variant index " + std::to_string(index) + " out of range");
  }
}

/// Whether a value of T takes a level of nesting (max_nesting) in the codec: containers
/// and Codec<T> types do, through which a type can hold itself. Pairs, tuples, arrays,
/// optionals and variants nest only as deep as their type is written, so they take
/// none (and a pool's argument tuples cost nothing). A cereal type's levels are counted
/// by its archive.
template <class T>
consteval bool takes_level() {
  constexpr Kind kind = kind_of<T>();
  return kind == Kind::sequence || kind == Kind::map || kind == Kind::set || kind == Kind::custom;
}

/// Enters the level of nesting a value of T takes (if it takes one) for the Writer or
/// Reader `coder`, until the returned object ends.
template <class T, class Coder>
auto enter_level(Coder& coder) {
  if constexpr (takes_level<T>()) return coder.nest();
  else return 0;
}

/// The byte an empty aggregate travels as.
inline void decode_empty(Reader& r) {
  if (r.pod<std::uint8_t>() != 0) throw ProtocolError("mproc: invalid byte for an empty tuple or array");
}

template <class T>
void encode_value(Writer& w, const T& value) {
  constexpr Kind kind = kind_of<T>();
  [[maybe_unused]] const auto level = enter_level<T>(w);
  if constexpr (kind == Kind::custom) {
    Codec<T>::encode(w, value);
  } else if constexpr (kind == Kind::boolean) {
    w.pod(static_cast<std::uint8_t>(static_cast<bool>(value) ? 1 : 0));
  } else if constexpr (kind == Kind::trivial) {
    if constexpr (std::is_empty_v<T>) w.pod(std::uint8_t{0});  // its one byte, not left indeterminate
    else w.pod(value);
  } else if constexpr (is_empty_aggregate<T>()) {
    w.pod(std::uint8_t{0});
  } else if constexpr (kind == Kind::string || kind == Kind::sequence || kind == Kind::map || kind == Kind::set) {
    if constexpr (kind == Kind::map) {
      w.varint(value.size());
      for (const auto& [k, v] : value) {
        encode_value(w, k);
        encode_value(w, v);
      }
    } else {
      encode_elements(w, value);
    }
  } else if constexpr (kind == Kind::array) {
    for (const auto& e : value) encode_value(w, e);
  } else if constexpr (kind == Kind::tuple) {
    std::apply([&w](const auto&... e) { (encode_value(w, e), ...); }, value);
  } else if constexpr (kind == Kind::optional) {
    w.pod(static_cast<std::uint8_t>(value.has_value() ? 1 : 0));
    if (value) encode_value(w, *value);
  } else if constexpr (kind == Kind::variant) {
    if (value.valueless_by_exception()) throw ValueError("mproc: cannot send a valueless std::variant");
    w.varint(value.index());
    std::visit([&w](const auto& alt) { encode_value(w, alt); }, value);
  } else if constexpr (kind == Kind::cereal) {
    cereal_encode(w, value);
  }
  // Kind::none is rejected by require_sendable at every public entry point; staying
  // silent here keeps that the only compile error a user sees.
}

/// Decodes the n elements of a cereal block (cereal_run<E>), handing each to add;
/// every element takes a byte at least, so a corrupt n fails before any is made.
template <class E, class Add>
void decode_cereal_run(Reader& r, std::size_t n, Add&& add) {
  cereal_decode_block<E>(r, [&](CheckedBinaryInputArchive& archive) {
    if (n > archive.remaining()) {
      throw ProtocolError("mproc: " + std::to_string(n) + " cereal elements claimed in " +
                          std::to_string(archive.remaining()) + " bytes");
    }
    for (std::size_t i = 0; i < n; ++i) {
      E e{};
      archive(e);
      add(std::move(e));
    }
  });
}

inline bool decode_flag(Reader& r) {
  const auto byte = r.pod<std::uint8_t>();
  if (byte > 1) throw ProtocolError("mproc: invalid flag byte " + std::to_string(byte));
  return byte == 1;
}

template <class T>
T decode_value(Reader& r) {
  constexpr Kind kind = kind_of<T>();
  [[maybe_unused]] const auto level = enter_level<T>(r);
  if constexpr (kind == Kind::custom) {
    return Codec<T>::decode(r);
  } else if constexpr (kind == Kind::boolean) {
    return static_cast<T>(decode_flag(r));
  } else if constexpr (kind == Kind::trivial) {
    return r.pod<T>();
  } else if constexpr (is_empty_aggregate<T>()) {
    decode_empty(r);
    return T{};
  } else if constexpr (kind == Kind::string) {
    using C = typename T::value_type;
    const std::size_t n = r.count(sizeof(C));
    T s(n, C{});
    r.raw(s.data(), n * sizeof(C));
    return s;
  } else if constexpr (kind == Kind::sequence) {
    using E = typename T::value_type;
    const std::size_t n = r.count(min_element_size<E>());
    if constexpr (kind_of<E>() == Kind::trivial && requires(T t) { t.data(); }) {
      // One pass, no zero-fill first: these vectors can be hundreds of MiB.
      const std::byte* p = r.take(n * sizeof(E));
      T seq;
      seq.reserve(n);
      advise_huge_pages(seq.data(), n * sizeof(E));
      prefault(seq.data(), n * sizeof(E));
      if (reinterpret_cast<std::uintptr_t>(p) % alignof(E) == 0) {
        const E* first = reinterpret_cast<const E*>(p);  // copied with memmove, never read as E
        seq.insert(seq.end(), first, first + n);
      } else if (n != 0) {  // an empty vector's data() may be null, never memcpy's
        seq.resize(n);
        std::memcpy(seq.data(), p, n * sizeof(E));
      }
      return seq;
    } else if constexpr (cereal_run<E>) {
      T seq;
      if constexpr (requires { seq.reserve(n); }) seq.reserve(n);
      decode_cereal_run<E>(r, n, [&](E&& e) { seq.push_back(std::move(e)); });
      return seq;
    } else {
      T seq;
      if constexpr (requires { seq.reserve(n); }) seq.reserve(n);
      for (std::size_t i = 0; i < n; ++i) seq.push_back(decode_value<E>(r));
      return seq;
    }
  } else if constexpr (kind == Kind::array) {
    return [&r]<std::size_t... I>(std::index_sequence<I...>) {
      return T{((void)I, decode_value<typename T::value_type>(r))...};
    }(std::make_index_sequence<std::tuple_size_v<T>>{});
  } else if constexpr (kind == Kind::tuple) {
    return decode_tuple<T>(r, std::make_index_sequence<std::tuple_size_v<T>>{});
  } else if constexpr (kind == Kind::optional) {
    if (!decode_flag(r)) return T{};
    return T(decode_value<typename T::value_type>(r));
  } else if constexpr (kind == Kind::variant) {
    return decode_variant<T>(r, static_cast<std::size_t>(r.varint()));
  } else if constexpr (kind == Kind::map) {
    using K = typename T::key_type;
    using V = typename T::mapped_type;
    const std::size_t n = r.count(min_encoded_size<K>() + min_encoded_size<V>());
    T map;
    for (std::size_t i = 0; i < n; ++i) {
      K key = decode_value<K>(r);  // key before value: argument order is unspecified
      V val = decode_value<V>(r);
      map.emplace_hint(map.end(), std::move(key), std::move(val));
    }
    return map;
  } else if constexpr (kind == Kind::set) {
    using K = typename T::value_type;
    const std::size_t n = r.count(min_element_size<K>());
    T set;
    if constexpr (cereal_run<K>) {
      decode_cereal_run<K>(r, n, [&](K&& k) { set.emplace_hint(set.end(), std::move(k)); });
    } else {
      for (std::size_t i = 0; i < n; ++i) set.emplace_hint(set.end(), decode_value<K>(r));
    }
    return set;
  } else if constexpr (kind == Kind::cereal) {
    return cereal_decode<T>(r);
  } else {
    throw ProtocolError("mproc: type is not Sendable");  // rejected at compile time first
  }
}

/// The compile-time gate: value is whether T can be sent. When it can't, the
/// static_assert fires inside send_check<Culprit>, so the compiler names the innermost
/// type that cannot be sent in the line that points here.
template <class Culprit, bool ok = sendable<Culprit>()>
struct send_check : std::true_type {};
template <class Culprit>
struct send_check<Culprit, false> : std::false_type {
  static_assert(sendable<Culprit>(),
                "mproc: this type cannot be sent between processes. Make it trivially copyable, a "
                "standard string/container/pair/tuple/optional/variant of sendable types, or give it a "
                "cereal serialize() (or save()/load()) member and a default constructor.");
};

}  // namespace detail

/// How deep values may nest inside one another to be sent or received: each container
/// (but a string), smart pointer, or class with a serialization of its own (cereal or a
/// Codec) takes a level; pairs, tuples, arrays, optionals and variants do not. Encoding
/// a deeper value throws ValueError, decoding one ProtocolError (decoding recurses once
/// per level).
inline constexpr std::size_t max_nesting = detail::max_nesting;

/// True when T can cross a process boundary (see the table at the top of codec.hpp).
template <class T>
concept Sendable = detail::sendable<std::remove_cvref_t<T>>();

/// Fails to compile, with one message naming the culprit, when T cannot be sent.
/// Callers then guard their bodies with `if constexpr (Sendable<T>)` so that the
/// message is the only error the user sees.
template <class T>
constexpr void require_sendable() {
  using Culprit = typename detail::first_unsendable<std::remove_cvref_t<T>>::type;
  (void)detail::send_check<Culprit>{};
}

/// Appends the encoding of value to out.
template <class T>
void encode_into(Bytes& out, const T& value) {
  require_sendable<T>();
  if constexpr (Sendable<T>) {
    detail::Writer w(out);
    detail::encode_value(w, value);
  }
}

/// The encoding of value.
template <class T>
Bytes encode(const T& value) {
  Bytes out;
  encode_into(out, value);
  return out;
}

/// Decodes a T from exactly these bytes; throws ProtocolError if they are not one
/// well-formed T.
template <class T>
T decode(std::span<const std::byte> bytes) {
  require_sendable<T>();
  if constexpr (Sendable<T>) {
    detail::Reader r(bytes);
    T value = detail::decode_value<std::remove_cv_t<T>>(r);
    if (!r.at_end()) {
      throw ProtocolError("mproc: " + std::to_string(r.remaining()) + " trailing bytes after the value");
    }
    return value;
  } else {
    throw ProtocolError("mproc: type is not Sendable");
  }
}

}  // namespace mproc
