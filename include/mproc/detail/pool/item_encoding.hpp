#pragma once
// How a Pool call's inputs become a Job's encoded items: F's arguments encoded as its
// Args tuple would be, without building the tuple, one input after another.

#include <mproc/codec.hpp>
#include <mproc/detail/wire/bytes.hpp>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <tuple>
#include <utility>
#include <vector>

namespace mproc::detail {

/// Encodes the inputs of a pool of F(Args...).
template <class Args>
struct ItemEncoding {
  static constexpr std::size_t arity = std::tuple_size_v<Args>;
  /// Every item's encoded size when it is fixed, else 0 (then items have offsets).
  static constexpr std::size_t item_size = fixed_encoded_size<Args>();

  /// Encodes F's arguments as the Args tuple would be encoded, without building it:
  /// an argument already of the parameter's type is encoded in place, not copied.
  /// Others convert implicitly only (require_arguments_convert has made sure they can).
  template <class... Xs>
  static void encode_args(Writer& w, Xs&&... xs) {
    if constexpr (arity == 0) {
      encode_value(w, Args{});  // its one byte: an item is found by its bytes
    } else {
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        (encode_value<std::tuple_element_t<I, Args>>(w, std::forward<Xs>(xs)), ...);
      }(std::index_sequence_for<Xs...>{});
    }
  }
  struct MapConvert {
    template <class X>
    void operator()(Writer& w, X&& x) const {
      encode_args(w, std::forward<X>(x));
    }
  };
  struct StarConvert {
    template <class X>
    void operator()(Writer& w, X&& x) const {
      std::apply([&w](auto&&... e) { encode_args(w, std::forward<decltype(e)>(e)...); }, std::forward<X>(x));
    }
  };

  /// Encodes items from [it, end) into bytes (and their offsets, for variable-size
  /// items): at most max items, and no more once max_bytes are filled. When reading
  /// or encoding an item throws, the exception leaves; or, given `failed`, it goes
  /// there, and the items before it are kept (none half encoded): the input has
  /// ended at that item, and `it` is not used again.
  template <class It, class Sent, class Convert>
  static std::size_t encode_items(It& it, const Sent& end, std::size_t max, Convert convert, Bytes& bytes,
                                  std::vector<std::size_t>& offsets, std::size_t max_bytes = SIZE_MAX,
                                  std::exception_ptr* failed = nullptr) {
    Writer w(bytes);
    const std::size_t offsets_before = offsets.size();
    std::size_t n = 0;
    std::size_t kept = bytes.size();  // the end of the last whole item
    try {
      while (n < max && it != end && bytes.size() < max_bytes) {
        if constexpr (item_size == 0) offsets.push_back(bytes.size());
        convert(w, *it);
        ++n;
        kept = bytes.size();
        ++it;  // an item whose successor throws was read: it counts
      }
    } catch (...) {
      if (failed == nullptr) throw;
      *failed = std::current_exception();
      bytes.resize(kept);
      if constexpr (item_size == 0) offsets.resize(offsets_before + n);
    }
    return n;
  }
};

}  // namespace mproc::detail
