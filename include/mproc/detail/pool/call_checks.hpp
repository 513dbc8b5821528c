#pragma once
// Compile-time checks of a Pool call's arguments: each misuse (an argument that does
// not convert to F's parameter, a map over a function of two arguments, callbacks in
// the wrong order, ...) fails with one static_assert that says what to do. For each
// check, require_*() static_asserts what is wrong and *_ok() gives the same verdict as
// a constant, on which the call compiles nothing more after an error (one message,
// not a page).

#include <mproc/errors.hpp>

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace mproc::detail {

/// Whether an argument of type From (as passed) converts implicitly to the parameter
/// type To at position Position. When it doesn't, the static_assert below fires
/// inside argument_check<Position, From, To>, so the compiler names all three.
template <std::size_t Position, class From, class To, bool ok = std::is_convertible_v<From, To>>
struct argument_check : std::true_type {};
template <std::size_t Position, class From, class To>
struct argument_check<Position, From, To, false> : std::false_type {
  static_assert(std::is_convertible_v<From, To>,
                "mproc: an argument does not convert implicitly to F's parameter type (the types are named in "
                "argument_check<position, argument, parameter> in this error). mproc makes no explicit "
                "conversions, such as a pointer to an integer: convert it yourself, or change F's parameter "
                "type.");
};

// The trailing arguments of the _async calls: [chunksize,] [callback,] [error_callback].
template <class A>
inline constexpr bool is_chunksize_arg =
    std::is_integral_v<std::remove_cvref_t<A>> && !std::is_same_v<std::remove_cvref_t<A>, bool>;
template <class T, class A>
inline constexpr bool is_result_callback =
    std::is_null_pointer_v<std::remove_cvref_t<A>> || std::is_invocable_v<A&, const T&>;
template <class A>
inline constexpr bool is_error_callback =
    std::is_null_pointer_v<std::remove_cvref_t<A>> || std::is_invocable_v<A&, const Error&>;

/// Whether Opts is nothing, a callback, an error_callback, or a callback then an
/// error_callback (nullptr stands for "none" in either place, as Python's None).
template <class T, class... Opts>
consteval bool callbacks_fit() {
  using List = std::tuple<Opts...>;
  if constexpr (sizeof...(Opts) == 0) {
    return true;
  } else if constexpr (sizeof...(Opts) == 1) {
    using A = std::tuple_element_t<0, List>;
    return is_result_callback<T, A> || is_error_callback<A>;
  } else if constexpr (sizeof...(Opts) == 2) {
    return is_result_callback<T, std::tuple_element_t<0, List>> && is_error_callback<std::tuple_element_t<1, List>>;
  } else {
    return false;
  }
}
/// As callbacks_fit, after an optional leading chunksize.
template <class T, class... Opts>
consteval bool map_options_fit() {
  if constexpr (sizeof...(Opts) > 0) {
    if constexpr (is_chunksize_arg<std::tuple_element_t<0, std::tuple<Opts...>>>) {
      return []<class First, class... Rest>(std::type_identity<std::tuple<First, Rest...>>) {
        return callbacks_fit<T, Rest...>();
      }(std::type_identity<std::tuple<Opts...>>{});
    }
  }
  return callbacks_fit<T, Opts...>();
}
/// Whether a chunksize comes after a callback (it must come first).
template <class... Opts>
consteval bool chunksize_misplaced() {
  if constexpr (sizeof...(Opts) < 2) {
    return false;
  } else {
    return []<class First, class... Rest>(std::type_identity<std::tuple<First, Rest...>>) {
      return (is_chunksize_arg<Rest> || ...);
    }(std::type_identity<std::tuple<Opts...>>{});
  }
}

/// The checks of calls to a pool of F(Args...) -> Result.
template <class Args, class Result>
struct CallChecks {
  static constexpr std::size_t arity = std::tuple_size_v<Args>;

  /// Whether each From converts implicitly to F's parameter at its position.
  template <class... From>
  static consteval bool arguments_convert(std::type_identity<std::tuple<From...>> = {}) {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (std::is_convertible_v<From, std::tuple_element_t<I, Args>> && ...);
    }(std::index_sequence_for<From...>{});
  }
  template <class... From>
  static void require_arguments_convert(std::type_identity<std::tuple<From...>> = {}) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((void)argument_check<I, From, std::tuple_element_t<I, Args>>{}, ...);
    }(std::index_sequence_for<From...>{});
  }

  template <class E>
  static consteval bool map_input_ok() {
    if constexpr (arity == 1) return arguments_convert<E>();
    else return false;
  }
  template <class E>
  static void require_map_input() {
    static_assert(arity == 1, "mproc: map/imap/imap_unordered call F with one argument per input, but F takes another "
                              "number of arguments: use starmap with tuples, or apply/apply_async");
    if constexpr (arity == 1) require_arguments_convert<E>();
  }

  /// For a starmap input element E (a tuple, pair or array): its elements as std::get
  /// hands them out, as a tuple of types.
  template <class E>
  static consteval auto element_types() {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return std::type_identity<std::tuple<decltype(std::get<I>(std::declval<E>()))...>>{};
    }(std::make_index_sequence<std::tuple_size_v<std::remove_cvref_t<E>>>{});
  }
  template <class E>
  static constexpr bool is_tuple_like = requires { std::tuple_size<std::remove_cvref_t<E>>::value; };
  template <class E>
  static consteval bool starmap_input_ok() {
    if constexpr (is_tuple_like<E>) {
      if constexpr (std::tuple_size_v<std::remove_cvref_t<E>> == arity) return arguments_convert(element_types<E>());
    }
    return false;
  }
  template <class E>
  static void require_starmap_input() {
    static_assert(is_tuple_like<E>, "mproc: starmap needs inputs that are tuples, pairs or arrays of F's arguments");
    if constexpr (is_tuple_like<E>) {
      constexpr bool fits = std::tuple_size_v<std::remove_cvref_t<E>> == arity;
      static_assert(fits, "mproc: starmap: each input tuple must have as many elements as F has parameters");
      if constexpr (fits) require_arguments_convert(element_types<E>());
    }
  }

  template <class... Options>
  static consteval bool map_options_ok() {
    return !chunksize_misplaced<Options...>() && map_options_fit<std::vector<Result>, Options...>();
  }
  template <class... Options>
  static void require_map_options() {
    constexpr bool misplaced = chunksize_misplaced<Options...>();
    static_assert(!misplaced, "mproc: map_async/starmap_async: the chunksize (an integer) comes once, right after "
                              "the inputs, before the callbacks");
    static_assert(misplaced || map_options_ok<Options...>(),
                  "mproc: map_async/starmap_async take, after the inputs, an optional chunksize, then an optional "
                  "callback(const std::vector<R>&), then an optional error_callback(const mproc::Error&), in that "
                  "order (nullptr for none)");
  }

  /// apply_async's arguments: F's, then the callbacks.
  template <class... Xs>
  static consteval auto leading_arguments() {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return std::type_identity<std::tuple<std::tuple_element_t<I, std::tuple<Xs...>>...>>{};
    }(std::make_index_sequence<arity>{});
  }
  template <class... Xs>
  static consteval bool callbacks_after_arguments_fit() {
    return []<std::size_t... J>(std::index_sequence<J...>) {
      return callbacks_fit<Result, std::tuple_element_t<arity + J, std::tuple<Xs...>>...>();
    }(std::make_index_sequence<sizeof...(Xs) - arity>{});
  }
  template <class... Xs>
  static consteval bool apply_ok() {
    if constexpr (sizeof...(Xs) >= arity) {
      return callbacks_after_arguments_fit<Xs...>() && arguments_convert(leading_arguments<Xs...>());
    }
    return false;
  }
  template <class... Xs>
  static void require_apply_arguments() {
    constexpr bool enough = sizeof...(Xs) >= arity;
    static_assert(enough, "mproc: Pool::apply_async takes all of F's arguments");
    if constexpr (enough) {
      constexpr bool fit = callbacks_after_arguments_fit<Xs...>();
      static_assert(fit, "mproc: Pool::apply_async got arguments past F's that are not callbacks: after F's "
                         "arguments only a callback(const R&), then an error_callback(const mproc::Error&), may "
                         "follow (too many arguments for F, or a callback that can't take F's result?)");
      if constexpr (fit) require_arguments_convert(leading_arguments<Xs...>());
    }
  }
};

}  // namespace mproc::detail
