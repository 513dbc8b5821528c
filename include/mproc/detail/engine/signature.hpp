#pragma once
// The parameter and result types of the callable a Pool is built on. Workers decode
// arguments into exactly these types, so F must have one call signature: a function,
// a function pointer, or a class with a single non-template operator().

#include <functional>
#include <tuple>
#include <type_traits>

namespace mproc::detail {

template <class Sig>
struct signature_of_call {};
template <class R, class... A>
struct signature_of_call<R(A...)> {
  using result = R;
  using params = std::tuple<A...>;  // as declared (references kept, to forward correctly)
  using args = std::tuple<std::remove_cvref_t<A>...>;  // what travels
  static constexpr std::size_t arity = sizeof...(A);
};

template <class M>
struct member_call {};
#define MPROC_MEMBER_CALL(QUALS) \
  template <class C, class R, class... A> \
  struct member_call<R (C::*)(A...) QUALS> : signature_of_call<R(A...)> {};
MPROC_MEMBER_CALL()
MPROC_MEMBER_CALL(const)
MPROC_MEMBER_CALL(noexcept)
MPROC_MEMBER_CALL(const noexcept)
MPROC_MEMBER_CALL(&)
MPROC_MEMBER_CALL(const&)
MPROC_MEMBER_CALL(& noexcept)
MPROC_MEMBER_CALL(const& noexcept)
#undef MPROC_MEMBER_CALL

template <class F, class = void>
struct signature {};
template <class R, class... A>
struct signature<R (*)(A...)> : signature_of_call<R(A...)> {};
template <class R, class... A>
struct signature<R (*)(A...) noexcept> : signature_of_call<R(A...)> {};
template <class R, class... A>
struct signature<R(A...)> : signature_of_call<R(A...)> {};
template <class R, class... A>
struct signature<R(A...) noexcept> : signature_of_call<R(A...)> {};
template <class F>
struct signature<F, std::void_t<decltype(&F::operator())>> : member_call<decltype(&F::operator())> {};

/// True when F has exactly one call signature mproc can read.
template <class F>
concept has_signature = requires { typename signature<std::remove_cvref_t<F>>::args; };

/// Stands in for a callable without one signature once that error is reported.
struct PlaceholderCallable {
  void operator()() const {}
};

}  // namespace mproc::detail
