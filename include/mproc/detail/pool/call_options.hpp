#pragma once
// The trailing options of a Pool's _async calls ([chunksize], [callback],
// [error_callback], which call_checks.hpp has checked), sorted into one struct, and
// the result state they go to.

#include <mproc/async_result.hpp>
#include <mproc/detail/pool/call_checks.hpp>
#include <mproc/errors.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <utility>

namespace mproc::detail {

template <class T>
struct AsyncOptions {
  std::size_t chunksize = 0;
  std::function<void(const T&)> callback;
  std::function<void(const Error&)> error_callback;
};
/// Callbacks in the forms callbacks_fit accepts: a lone one is the callback when it
/// takes the result, else the error_callback.
template <class T, class... Opts>
AsyncOptions<T> callback_options(Opts&&... opts) {
  AsyncOptions<T> o;
  if constexpr (sizeof...(Opts) == 2) {
    [&o](auto&& callback, auto&& error_callback) {
      o.callback = std::forward<decltype(callback)>(callback);
      o.error_callback = std::forward<decltype(error_callback)>(error_callback);
    }(std::forward<Opts>(opts)...);
  } else if constexpr (sizeof...(Opts) == 1) {
    [&o](auto&& callback) {
      if constexpr (is_result_callback<T, decltype(callback)>) {
        o.callback = std::forward<decltype(callback)>(callback);
      } else {
        o.error_callback = std::forward<decltype(callback)>(callback);
      }
    }(std::forward<Opts>(opts)...);
  }
  return o;
}
template <class T>
AsyncOptions<T> map_options() {
  return {};
}
template <class T, class First, class... Rest>
AsyncOptions<T> map_options(First&& first, Rest&&... rest) {
  if constexpr (is_chunksize_arg<First>) {
    AsyncOptions<T> o = callback_options<T>(std::forward<Rest>(rest)...);
    o.chunksize = static_cast<std::size_t>(first);
    return o;
  } else {
    return callback_options<T>(std::forward<First>(first), std::forward<Rest>(rest)...);
  }
}

template <class T>
std::shared_ptr<ResultState<T>> make_result_state(AsyncOptions<T> options) {
  auto state = std::make_shared<ResultState<T>>();
  state->set_callbacks(std::move(options.callback), std::move(options.error_callback));
  return state;
}

}  // namespace mproc::detail
