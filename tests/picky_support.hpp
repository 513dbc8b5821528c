#pragma once
// Values whose decoding refuses some of them, as a user type that keeps an invariant
// may: for the tests of what a decoding that throws does (the codec, a pool's results
// and arguments, the MPI pool).

#include <mproc/codec.hpp>

#include <new>
#include <stdexcept>

namespace mproc_test {

/// What decoding the value `value` throws: -1 an int (not a std::exception), -2 a
/// std::runtime_error, -3 std::bad_alloc (what a decode that allocates a size claimed
/// by its bytes would throw; allocated for real, a sanitizer would stop the program
/// instead); nothing for the others.
inline void refuse_negative(int value) {
  if (value == -1) throw 42;
  if (value == -2) throw std::runtime_error("no negative values");
  if (value == -3) throw std::bad_alloc();
}

/// A user type whose cereal load() goes through refuse_negative.
struct CerealPicky {
  int value = 0;
  operator int() const { return value; }  // NOLINT: a result that reads as its number
  template <class Archive>
  void save(Archive& ar) const {
    ar(value);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(value);
    refuse_negative(value);
  }
};

/// The same through a Codec<T> of its own.
struct CodecPicky {
  int value = 0;
  operator int() const { return value; }  // NOLINT: a result that reads as its number
};

}  // namespace mproc_test

template <>
struct mproc::Codec<mproc_test::CodecPicky> {
  static void encode(detail::Writer& w, const mproc_test::CodecPicky& p) { w.pod(p.value); }
  static mproc_test::CodecPicky decode(detail::Reader& r) {
    const mproc_test::CodecPicky p{r.pod<int>()};
    mproc_test::refuse_negative(p.value);
    return p;
  }
};
