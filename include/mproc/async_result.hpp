#pragma once
// AsyncResult<T>: the handle apply_async, map_async and starmap_async return, as in
// Python (get, wait, ready, successful), plus callbacks run when the result arrives;
// and None, the result of a task whose function returns void.

#include <mproc/detail/os/deadline.hpp>
#include <mproc/errors.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>

namespace mproc {

/// What a Pool returns for a task whose function returns void, as Python returns None.
struct None {
  bool operator==(const None&) const = default;
};

namespace detail {

/// Set on a pool's own thread, where callbacks run: waiting there for a result that
/// the same thread must deliver would hang, so it is refused instead.
inline thread_local bool on_pool_thread = false;

inline void report_callback_exception(const char* which) noexcept {
  try {
    throw;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc: exception in %s (ignored): %s\n", which, e.what());
  } catch (...) {
    std::fprintf(stderr, "mproc: non-standard exception in %s (ignored)\n", which);
  }
}

/// The shared state behind an AsyncResult: filled once by the pool, read by the user.
template <class T>
class ResultState {
 public:
  using Callback = std::function<void(const T&)>;
  using ErrorCallback = std::function<void(const Error&)>;

  void set_callbacks(Callback callback, ErrorCallback error_callback) {
    callback_ = std::move(callback);
    error_callback_ = std::move(error_callback);
  }

  /// Stores the value, runs the callback, then wakes the waiters (so a get() that
  /// returns happens after the callback, as in Python).
  void set_value(T value) {
    {
      std::lock_guard lock(mutex_);
      value_.emplace(std::move(value));
    }
    if (callback_) {
      try {
        callback_(*value_);
      } catch (...) {
        report_callback_exception("an AsyncResult callback");
      }
    }
    mark_done();
  }

  void set_error(std::exception_ptr error) {
    {
      std::lock_guard lock(mutex_);
      error_ = error;
    }
    if (error_callback_) {
      try {
        std::rethrow_exception(error);
      } catch (const Error& e) {
        try {
          error_callback_(e);
        } catch (...) {
          report_callback_exception("an AsyncResult error_callback");
        }
      } catch (...) {
      }
    }
    mark_done();
  }

  bool ready() const {
    std::lock_guard lock(mutex_);
    return done_;
  }

  /// Waits until done or the deadline passes; returns whether it is done.
  bool wait_until(Deadline deadline) const {
    std::unique_lock lock(mutex_);
    if (!done_ && on_pool_thread) {
      throw ValueError("mproc: waiting for a pool result inside a pool callback would never end");
    }
    if (deadline.is_forever()) {
      cv_.wait(lock, [&] { return done_; });
      return true;
    }
    return cv_.wait_until(lock, deadline.when(), [&] { return done_; });
  }
  void wait() const { (void)wait_until(Deadline::forever()); }

  /// After wait(): the value, or the stored exception rethrown.
  T& value() {
    if (error_) std::rethrow_exception(error_);
    return *value_;
  }
  bool successful() const {
    std::lock_guard lock(mutex_);
    if (!done_) throw ValueError("mproc: AsyncResult::successful() called before the result is ready");
    return !error_;
  }

 private:
  void mark_done() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
  }

  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  bool done_ = false;
  std::optional<T> value_;
  std::exception_ptr error_;
  Callback callback_;
  ErrorCallback error_callback_;
};

}  // namespace detail

/// The result of an asynchronous pool call. Copies share one result.
template <class T>
class AsyncResult {
 public:
  using value_type = T;

  AsyncResult() = default;
  explicit AsyncResult(std::shared_ptr<detail::ResultState<T>> state) {
    if (!state) return;
    // The handles share an owner of their own (the pool holds the state apart from
    // it), so state_.use_count() counts AsyncResult copies: get() && moves the value
    // out only from the last of them.
    auto owner = std::make_shared<std::shared_ptr<detail::ResultState<T>>>(std::move(state));
    state_ = std::shared_ptr<detail::ResultState<T>>(owner, owner->get());
  }

  /// Waits for the result and returns it, or rethrows the task's error
  /// (RemoteError, WorkerLost, TimeoutError, PoolClosed).
  const T& get() & {
    state().wait();
    return state_->value();
  }
  /// As get(), on a temporary AsyncResult: the value is moved out when no copy of
  /// this handle is left to read it, else copied (a move-only value with copies
  /// left: ValueError).
  T get() && {
    state().wait();
    return take_value();
  }
  /// As get(), but throws TimeoutError if the result is not ready within timeout.
  /// The task itself keeps running. A timeout too long for the clock waits forever.
  template <class Rep, class Period>
  const T& get(std::chrono::duration<Rep, Period> timeout) & {
    wait_or_throw(timeout);
    return state_->value();
  }
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) && {
    wait_or_throw(timeout);
    return take_value();
  }

  /// Blocks until the result is ready.
  void wait() const { state().wait(); }
  /// Blocks until the result is ready or timeout passes; returns whether it is ready.
  /// A timeout too long for the clock (hours::max()) waits forever.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return state().wait_until(detail::Deadline::after(timeout));
  }
  /// Whether the result has arrived (successfully or not).
  bool ready() const { return state().ready(); }
  /// Whether the task succeeded; throws ValueError if it is not ready yet.
  bool successful() const { return state().successful(); }
  /// Whether this handle refers to a result (false when default-constructed).
  bool valid() const noexcept { return state_ != nullptr; }

 private:
  detail::ResultState<T>& state() const {
    if (!state_) throw ValueError("mproc: AsyncResult has no result (default-constructed)");
    return *state_;
  }
  template <class Rep, class Period>
  void wait_or_throw(std::chrono::duration<Rep, Period> timeout) const {
    if (!wait_for(timeout)) {
      throw TimeoutError("mproc: result not ready within " +
                         std::to_string(std::chrono::duration<double>(timeout).count()) + " s");
    }
  }

  /// The value of a ready result (or its error rethrown), moved out if this is the
  /// only handle. (No copy can appear meanwhile: copying needs this very handle.)
  T take_value() {
    T& value = state_->value();
    if (state_.use_count() == 1) return std::move(value);
    if constexpr (std::is_copy_constructible_v<T>) {
      return value;
    } else {
      throw ValueError("mproc: get() on a temporary AsyncResult would move its move-only value away from the "
                       "copies that share it; destroy the other copies first, or read the value through get() "
                       "on one of them");
    }
  }

  std::shared_ptr<detail::ResultState<T>> state_;
};

}  // namespace mproc
