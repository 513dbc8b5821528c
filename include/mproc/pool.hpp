#pragma once
// Pool<F>: Python's multiprocessing.Pool for one C++ callable. Worker processes are
// forked when the pool is made and inherit F with all its state (captures, a loaded
// model); only arguments and results travel, through the codec.
//
//   long cube(int n);
//   mproc::Pool pool(cube);                      // one worker per core
//   std::vector<long> r = pool.map(inputs);      // results in input order

#include <mproc/async_result.hpp>
#include <mproc/codec.hpp>
#include <mproc/cpu_count.hpp>
#include <mproc/detail/engine/typed_jobs.hpp>
#include <mproc/detail/engine/local_engine.hpp>
#include <mproc/detail/os/pid.hpp>
#include <mproc/detail/engine/signature.hpp>
#include <mproc/detail/engine/local_worker.hpp>
#include <mproc/detail/engine/outcome.hpp>
#include <mproc/detail/engine/worker.hpp>
#include <mproc/errors.hpp>
#include <mproc/imap.hpp>

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace mproc {
namespace detail {

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

}  // namespace detail

/// How a Pool runs. Fields keep this order (designated initializers rely on it).
struct PoolOptions {
  /// Worker processes; 0 means one per core this process may use (cpu_count()).
  std::size_t processes = 0;
  /// Items per chunk sent to a worker; 0 sizes chunks automatically from measured
  /// task durations. map() and friends also take a per-call chunksize.
  std::size_t chunksize = 0;
  /// Replace a worker after it has run this many tasks; 0 means never.
  std::size_t maxtasksperchild = 0;
  /// Runs once in each worker right after it is forked (load a model, open a file).
  /// If it throws, the pool is broken: pending and later calls fail with its error.
  std::function<void()> initializer = {};
  /// A task running longer than this has its worker killed and fails with
  /// TimeoutError; zero means no limit. Ignored in serial mode.
  std::chrono::nanoseconds task_timeout{0};
  /// Draw a progress bar on stderr for map, imap and imap_unordered.
  bool progress = false;
  /// Run every task in the calling process instead of workers, with the same results
  /// and errors (for stepping through F in a debugger). Also on when the environment
  /// variable MPROC_SERIAL is set to anything but "" or "0".
  bool serial = false;
  /// How many times a task whose worker died is run again before it fails with
  /// WorkerLost. Counts per task.
  std::size_t retries = 0;
  /// Replace a worker whose resident memory is above this many bytes after it
  /// finished a chunk (a leaky library, a growing cache); 0 means no limit.
  std::size_t max_memory_per_child = 0;
};

/// A pool of worker processes that call F.
///
/// F must have one call signature (a function, or a lambda with concrete parameter
/// types); its parameter and result types must be Sendable. All methods may be called
/// from any thread of the process that made the pool (serial mode: one thread only).
template <class F>
class Pool {
  static_assert(detail::has_signature<F>,
                "mproc::Pool needs a callable with exactly one call signature: a function, a function "
                "pointer, or a lambda whose parameters have concrete types (not auto). Wrap a generic or "
                "overloaded callable in a lambda with explicit parameter types.");
  // With a callable the static_assert above rejects, the rest is compiled against a
  // placeholder, so that message stays the only error.
  using Callable = std::conditional_t<detail::has_signature<F>, F, detail::PlaceholderCallable>;
  using Traits = detail::TaskTraits<Callable>;
  using Args = typename Traits::Args;
  static constexpr std::size_t arity = std::tuple_size_v<Args>;
  static constexpr std::size_t item_size = detail::fixed_encoded_size<Args>();

 public:
  /// What F returns (mproc::None when F returns void).
  using result_type = typename Traits::Result;

  /// Forks the worker processes (unless serial) and returns at once.
  explicit Pool(F fn, PoolOptions options = {}) : Pool(std::move(fn), std::move(options), start_local) {}
  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&& other) noexcept {
    if (this != &other) {
      shut_down();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  /// Finishes outstanding work and reaps the workers (close, then join), unless
  /// terminate() was called.
  ~Pool() { shut_down(); }

  // ------------------------------------------------------------------ map family

  /// F(x) for every x of inputs, in input order; blocks until all are done. Throws
  /// the first failure in input order (RemoteError, WorkerLost, TimeoutError).
  template <std::ranges::input_range R>
  std::vector<result_type> map(R&& inputs, std::size_t chunksize = 0) {
    return map_async(std::forward<R>(inputs), chunksize).get();
  }
  /// As map(), without blocking. Optional trailing arguments, in this order:
  /// chunksize, callback(const std::vector<result_type>&), error_callback(const Error&).
  template <std::ranges::input_range R, class... Options>
  AsyncResult<std::vector<result_type>> map_async(R&& inputs, Options&&... options) {
    using E = std::ranges::range_reference_t<R>;
    require_map_input<E>();
    require_map_options<Options...>();
    if constexpr (map_input_ok<E>() && map_options_ok<Options...>()) {
      return collect(inputs, MapConvert{}, std::forward<Options>(options)...);
    } else {
      return {};  // not reached: a static_assert above has failed
    }
  }
  /// F(a, b, ...) for every tuple or pair (a, b, ...) of inputs, in input order.
  template <std::ranges::input_range R>
  std::vector<result_type> starmap(R&& inputs, std::size_t chunksize = 0) {
    return starmap_async(std::forward<R>(inputs), chunksize).get();
  }
  /// As starmap(), without blocking; trailing arguments as for map_async.
  template <std::ranges::input_range R, class... Options>
  AsyncResult<std::vector<result_type>> starmap_async(R&& inputs, Options&&... options) {
    using E = std::ranges::range_reference_t<R>;
    require_starmap_input<E>();
    require_map_options<Options...>();
    if constexpr (starmap_input_ok<E>() && map_options_ok<Options...>()) {
      return collect(inputs, StarConvert{}, std::forward<Options>(options)...);
    } else {
      return {};  // not reached: a static_assert above has failed
    }
  }
  /// A lazy map: results in input order as they come. The input is read as the
  /// results are consumed, so it may be endless.
  template <std::ranges::input_range R>
  IMap<result_type> imap(R&& inputs, std::size_t chunksize = 0) {
    return stream(std::forward<R>(inputs), chunksize, true);
  }
  /// As imap(), but results in the order they finish.
  template <std::ranges::input_range R>
  IMap<result_type> imap_unordered(R&& inputs, std::size_t chunksize = 0) {
    return stream(std::forward<R>(inputs), chunksize, false);
  }

  // ------------------------------------------------------------------ apply family

  /// F(args...) in a worker; blocks for the result. The arguments convert
  /// implicitly to F's parameter types, as in a direct call.
  template <class... Xs>
  result_type apply(Xs&&... args) {
    static_assert(sizeof...(Xs) == arity, "mproc: Pool::apply takes exactly F's arguments");
    if constexpr (sizeof...(Xs) == arity) {
      return submit_apply(true, std::forward<Xs>(args)...).get();
    } else {
      std::terminate();  // not reached: the static_assert above has failed
    }
  }
  /// F(args...) in a worker, without blocking. After F's arguments, optionally a
  /// callback(const result_type&), then an error_callback(const Error&) (either may
  /// be nullptr), run in the parent (on the pool's thread) when the result arrives.
  template <class... Xs>
  AsyncResult<result_type> apply_async(Xs&&... xs) {
    return submit_apply(false, std::forward<Xs>(xs)...);
  }

  // ------------------------------------------------------------------ lifecycle

  /// No more tasks may be submitted; workers exit when the queued ones are done.
  void close() {
    if (auto* core = live_core()) core->close();
    else state().closed = true;
  }
  /// Waits for the workers to exit. Call close() or terminate() first.
  void join() {
    if (auto* core = live_core()) core->join();
    else if (!state().closed) throw ValueError("mproc: Pool::join() needs close() or terminate() first");
  }
  /// Stops the workers at once (SIGKILL) and reaps them; tasks not finished fail
  /// with PoolClosed.
  void terminate() {
    if (auto* core = live_core()) core->terminate();
    else state().closed = true;
  }

  /// The number of worker processes (1 in serial mode).
  std::size_t processes() const { return state().serial ? 1 : state().options.processes; }
  /// Whether tasks run in the calling process (PoolOptions::serial or MPROC_SERIAL).
  bool serial() const { return state().serial; }
  /// The pids of the current workers (changes when workers are replaced).
  std::vector<pid_t> worker_pids() const {
    const auto* local = dynamic_cast<const detail::LocalEngine*>(state().core.get());
    return local ? local->worker_pids() : std::vector<pid_t>{};
  }

 protected:
  /// Everything a pool holds. Protected for pools over another transport
  /// (mproc::mpi::Pool), whose setup fills in core, serial and refusal.
  struct State {
    State(F f, PoolOptions o) : fn(std::move(f)), options(std::move(o)), serial(options.serial || env_serial()) {}
    F fn;
    PoolOptions options;
    bool serial;
    bool closed = false;  // serial mode's own close flag
    pid_t owner = detail::current_pid();
    std::shared_ptr<detail::DispatchEngine> core;  // runs the tasks; null: they run here (serial)
    /// Non-empty: this process takes no tasks (an MPI serving rank); map, apply and
    /// the rest throw ValueError with this text.
    std::string refusal;
    std::exception_ptr broken;  // serial mode: the initializer's error, for every later call
    std::uint64_t next_chunk_id = 1;  // serial mode
  };

  /// For pools over another transport: `setup(state)` runs once the pool holds F and
  /// its options (processes already defaulted), unless F was rejected; it sets
  /// state.core to the engine that runs the tasks, or leaves it null for serial mode.
  template <class Setup>
  Pool(F fn, PoolOptions options, Setup&& setup)
      : state_(std::make_shared<State>(std::move(fn), std::move(options))) {
    require_sendable<Args>();
    require_sendable<result_type>();
    State& s = *state_;
    if (s.options.processes == 0) s.options.processes = cpu_count();
    if constexpr (detail::has_signature<F>) {
      std::forward<Setup>(setup)(s);
      if (!s.core && s.refusal.empty()) run_initializer_here(s);
    }
  }

 private:
  /// The local transport: forked workers, unless serial.
  static void start_local(State& s) {
    if (s.serial) return;
    State* raw = &s;  // stable (the State is heap-allocated): the child uses it after the fork
    s.core = std::make_shared<detail::LocalEngine>(detail::LocalConfig{
        s.options.processes, s.options.maxtasksperchild, s.options.task_timeout, s.options.retries,
        s.options.max_memory_per_child,
        [raw](const detail::WorkerEnv& env) { return detail::worker_main(raw->fn, raw->options.initializer, env); }});
  }

  /// Serial mode: the initializer runs once, here, as it would in each worker. If it
  /// throws, the pool is broken as a pool of workers would be: every call fails with
  /// the same RemoteError.
  static void run_initializer_here(State& s) {
    if (!s.options.initializer) return;
    try {
      s.options.initializer();
    } catch (...) {
      s.broken = detail::initializer_error(detail::describe_current_exception());
    }
  }

  static bool env_serial() {
    const char* v = std::getenv("MPROC_SERIAL");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }

  /// The state, if this process may use it (the one that made the pool).
  static State& usable(const std::shared_ptr<State>& state) {
    if (!state) throw ValueError("mproc: this Pool was moved from");
    if (detail::current_pid() != state->owner) {
      throw ValueError("mproc: a Pool can only be used by the process that created it");
    }
    return *state;
  }
  State& state() const { return usable(state_); }
  detail::DispatchEngine* live_core() const { return state().core.get(); }
  /// The state, for a call that submits tasks: refused where tasks are not taken.
  State& submitter() const {
    State& s = state();
    if (!s.refusal.empty()) throw ValueError(s.refusal);
    return s;
  }
  /// Serial mode: throws what a pool of workers would throw at a submission (the
  /// initializer's error, or PoolClosed after close() or terminate()).
  static void check_open_here(const State& s) {
    if (s.broken) std::rethrow_exception(s.broken);
    if (s.closed) throw PoolClosed("mproc: the pool is closed (close() or terminate() was called)");
  }

  void shut_down() noexcept {
    if (!state_) return;
    if (::getpid() != state_->owner) {
      // A forked child must not touch the parent's workers or thread, nor run F's
      // destructor: its reference to the state is left behind, on purpose.
      (void)new std::shared_ptr<State>(std::move(state_));
      return;
    }
    try {
      if (state_->core) {
        state_->core->close();
        state_->core->join();
      }
    } catch (...) {
    }
    state_->closed = true;  // a serial imap that outlives the pool ends with PoolClosed
    state_.reset();
  }

  // ---- argument conversion

  /// Encodes F's arguments as the Args tuple would be encoded, without building it:
  /// an argument already of the parameter's type is encoded in place, not copied.
  /// Others convert implicitly only (require_arguments_convert has made sure they can).
  template <class... Xs>
  static void encode_args(detail::Writer& w, Xs&&... xs) {
    if constexpr (arity == 0) {
      detail::encode_value(w, Args{});  // its one byte: an item is found by its bytes
    } else {
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        (detail::encode_value<std::tuple_element_t<I, Args>>(w, std::forward<Xs>(xs)), ...);
      }(std::index_sequence_for<Xs...>{});
    }
  }
  struct MapConvert {
    template <class X>
    void operator()(detail::Writer& w, X&& x) const {
      encode_args(w, std::forward<X>(x));
    }
  };
  struct StarConvert {
    template <class X>
    void operator()(detail::Writer& w, X&& x) const {
      std::apply([&w](auto&&... e) { encode_args(w, std::forward<decltype(e)>(e)...); }, std::forward<X>(x));
    }
  };

  // ---- compile-time checks of a call. require_*() static_asserts what is wrong, with
  // a message that says what to do; *_ok() is the same verdict as a plain constant,
  // on which the call compiles nothing more after an error (one message, not a page).

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
      ((void)detail::argument_check<I, From, std::tuple_element_t<I, Args>>{}, ...);
    }(std::index_sequence_for<From...>{});
  }

  template <class E>
  static consteval bool map_input_ok() {
    if constexpr (arity == 1) return arguments_convert<E>();
    else return false;
  }
  template <class E>
  static void require_map_input() {
    static_assert(arity == 1,
                  "mproc: map/imap/imap_unordered call F with one argument per input, but F takes another "
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
    return !detail::chunksize_misplaced<Options...>() && detail::map_options_fit<std::vector<result_type>, Options...>();
  }
  template <class... Options>
  static void require_map_options() {
    constexpr bool misplaced = detail::chunksize_misplaced<Options...>();
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
      return detail::callbacks_fit<result_type, std::tuple_element_t<arity + J, std::tuple<Xs...>>...>();
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

  /// Encodes items from [it, end) into bytes (and their offsets, for variable-size
  /// items): at most max items, and no more once max_bytes are filled. When reading
  /// or encoding an item throws, the exception leaves; or, given `failed`, it goes
  /// there, and the items before it are kept (none half encoded): the input has
  /// ended at that item, and `it` is not used again.
  template <class It, class Sent, class Convert>
  static std::size_t encode_items(It& it, const Sent& end, std::size_t max, Convert convert, Bytes& bytes,
                                  std::vector<std::size_t>& offsets, std::size_t max_bytes = SIZE_MAX,
                                  std::exception_ptr* failed = nullptr) {
    detail::Writer w(bytes);
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

  // ---- async options: [chunksize], [callback], [error_callback], already checked

  template <class T>
  struct AsyncOptions {
    std::size_t chunksize = 0;
    std::function<void(const T&)> callback;
    std::function<void(const Error&)> error_callback;
  };
  /// Callbacks in the forms callbacks_fit accepts: a lone one is the callback when it
  /// takes the result, else the error_callback.
  template <class T, class... Opts>
  static AsyncOptions<T> callback_options(Opts&&... opts) {
    AsyncOptions<T> o;
    if constexpr (sizeof...(Opts) == 2) {
      [&o](auto&& callback, auto&& error_callback) {
        o.callback = std::forward<decltype(callback)>(callback);
        o.error_callback = std::forward<decltype(error_callback)>(error_callback);
      }(std::forward<Opts>(opts)...);
    } else if constexpr (sizeof...(Opts) == 1) {
      [&o](auto&& callback) {
        if constexpr (detail::is_result_callback<T, decltype(callback)>) {
          o.callback = std::forward<decltype(callback)>(callback);
        } else {
          o.error_callback = std::forward<decltype(callback)>(callback);
        }
      }(std::forward<Opts>(opts)...);
    }
    return o;
  }
  template <class T>
  static AsyncOptions<T> map_options() {
    return {};
  }
  template <class T, class First, class... Rest>
  static AsyncOptions<T> map_options(First&& first, Rest&&... rest) {
    if constexpr (detail::is_chunksize_arg<First>) {
      AsyncOptions<T> o = callback_options<T>(std::forward<Rest>(rest)...);
      o.chunksize = static_cast<std::size_t>(first);
      return o;
    } else {
      return callback_options<T>(std::forward<First>(first), std::forward<Rest>(rest)...);
    }
  }

  template <class T>
  static std::shared_ptr<detail::ResultState<T>> make_state(AsyncOptions<T> options) {
    auto state = std::make_shared<detail::ResultState<T>>();
    state->set_callbacks(std::move(options.callback), std::move(options.error_callback));
    return state;
  }

  // ---- submission

  template <class R, class Convert, class... Options>
  AsyncResult<std::vector<result_type>> collect(R& inputs, Convert convert, Options&&... options) {
    auto opts = map_options<std::vector<result_type>>(std::forward<Options>(options)...);
    const std::size_t chunksize = opts.chunksize != 0 ? opts.chunksize : state().options.chunksize;
    auto result = make_state(std::move(opts));
    Bytes bytes;
    std::vector<std::size_t> offsets;
    if constexpr (std::ranges::sized_range<R>) {
      const auto n = static_cast<std::size_t>(std::ranges::size(inputs));
      if constexpr (item_size != 0) bytes.reserve(n * item_size);
      else offsets.reserve(n);
    }
    auto it = std::ranges::begin(inputs);
    const std::size_t count = encode_items(it, std::ranges::end(inputs), SIZE_MAX, convert, bytes, offsets);
    auto job = std::make_shared<detail::CollectJob<result_type>>(item_size, chunksize, count,
                                                                  state().options.progress, result);
    job->input.append(std::move(bytes), std::move(offsets), count);
    job->input_closed = true;
    job->expected_total = count;
    submit(std::move(job));
    return AsyncResult<std::vector<result_type>>(std::move(result));
  }

  /// apply_async; awaited: the caller waits for the result at once (apply), which
  /// lets the engine run the round trip on the caller's thread.
  template <class... Xs>
  AsyncResult<result_type> submit_apply(bool awaited, Xs&&... xs) {
    require_apply_arguments<Xs...>();
    if constexpr (apply_ok<Xs...>()) {
      auto all = std::forward_as_tuple(std::forward<Xs>(xs)...);
      auto state = [&]<std::size_t... J>(std::index_sequence<J...>) {
        return make_state(callback_options<result_type>(std::get<arity + J>(all)...));
      }(std::make_index_sequence<sizeof...(Xs) - arity>{});
      auto job = std::make_shared<detail::ApplyJob<result_type>>(item_size, state);
      Bytes bytes;
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        detail::Writer w(bytes);
        encode_args(w, std::get<I>(std::move(all))...);
      }(std::make_index_sequence<arity>{});
      job->input.append(std::move(bytes), {0}, 1);
      job->input_closed = true;
      job->expected_total = 1;
      submit(std::move(job), awaited);
      return AsyncResult<result_type>(std::move(state));
    } else {
      return {};  // not reached: a static_assert above has failed
    }
  }

  /// Queues a job whose input is complete. A job with no items finishes at once.
  /// awaited: its caller waits for it at once (see DispatchEngine::submit_awaited).
  void submit(std::shared_ptr<detail::Job> job, bool awaited = false) {
    State& s = submitter();
    if (s.core && awaited && job->input.size() != 0) {
      s.core->submit_awaited(std::move(job));
      return;
    }
    if (s.core) {
      std::lock_guard lock(s.core->mutex());
      if (job->input.size() != 0) {
        s.core->submit_locked(std::move(job));
        return;
      }
      s.core->check_open_locked();
    } else {
      check_open_here(s);
      run_inline(s, *job);
    }
    job->finish();
  }

  /// Serial mode: runs the job's undispatched items here, through the same chunk
  /// runner and outcome path as the workers.
  static void run_inline(State& s, detail::Job& job) {
    while (job.dispatched < job.input.size()) {
      const std::size_t first = job.dispatched;
      std::optional<std::size_t> remaining;
      if (job.expected_total) remaining = *job.expected_total - first;
      const std::size_t n = std::min(job.chunking.next(remaining, 1), job.input.contiguous_from(first));
      Bytes out;
      if constexpr (detail::has_signature<F>) {
        detail::run_chunk(s.fn, s.next_chunk_id++, job.input.bytes(first, n), out, nullptr, false);
      }
      const detail::ChunkOutcome outcome = detail::parse_chunk_outcome(out.span());
      job.chunking.record(outcome.header.count, outcome.header.elapsed_ns);
      job.dispatched += n;
      detail::deliver_chunk(job, first, n, outcome);
      job.settled += n;
      job.input.settle(first, n);
    }
  }

  /// Feeds an IMap from an input range: keeps a window of items submitted ahead of
  /// the consumer (pool), or runs one chunk at a time when asked (serial). It holds
  /// what it needs by shared ownership, so it may outlive the Pool: it then ends as
  /// a closed pool's stream does, with PoolClosed. An input that throws (reading an
  /// item, or converting or encoding it) ends there, as Python's imap does: the items
  /// read before it run, and the consumer gets its exception after their results.
  template <class R>
  class Stream final : public detail::StreamSource<result_type> {
   public:
    Stream(const std::shared_ptr<State>& state, R&& range, std::size_t chunksize, bool ordered)
        : state_(state),
          core_(state->core),
          range_(std::forward<R>(range)),
          job_(std::make_shared<detail::StreamJob<result_type>>(item_size, chunksize, ordered, size_hint(range_),
                                                                state->options.progress)) {
      job_->expected_total = size_hint(range_);
      try {
        it_.emplace(std::ranges::begin(range_));  // a generator's first item may throw here
      } catch (...) {
        input_error_ = std::current_exception();
        exhausted_ = true;
      }
      if (core_) {
        std::lock_guard lock(core_->mutex());
        core_->submit_locked(job_);
        if (exhausted_) {
          job_->input_closed = true;
          core_->job_changed_locked(job_);
        }
      } else {
        check_open_here(*state_);  // as submit_locked does for a pool of workers
      }
    }
    bool pump(std::size_t consumed) override {
      if (!core_) return pump_serial(consumed);
      refill(consumed);
      if (consumed < fed_) return true;
      if (cut_short_) throw PoolClosed(closed_while_reading);
      return !exhausted_;
    }
    std::exception_ptr input_error() const noexcept override { return input_error_; }
    void cancel() noexcept override {
      if (!core_) return;
      std::lock_guard lock(core_->mutex());
      job_->cancelled = true;
      job_->input_closed = true;
      core_->job_changed_locked(job_);
    }
    detail::StreamJob<result_type>& job() noexcept override { return *job_; }

   private:
    static constexpr const char* closed_while_reading =
        "mproc: the pool was closed while imap was still reading its input";
    static constexpr std::size_t max_ahead_bytes = detail::ChunkPolicy::max_stream_bytes;

    static std::optional<std::size_t> size_hint(const auto& range) {
      if constexpr (std::ranges::sized_range<decltype(range)>) {
        return static_cast<std::size_t>(std::ranges::size(range));
      } else {
        return std::nullopt;
      }
    }
    void refill(std::size_t consumed) {
      if (exhausted_) return;
      std::size_t window;
      {
        std::lock_guard lock(core_->mutex());
        window = job_->chunking.stream_window(core_->workers());
      }
      if (fed_ > 0) {
        // Big items, or big results waiting for a slow consumer: keep what is ahead of
        // the consumer near max_ahead_bytes, whichever way it is big.
        const std::size_t per_item = std::max(bytes_fed_ / fed_, job_->mean_result_bytes());
        const std::size_t by_bytes = max_ahead_bytes / std::max<std::size_t>(1, per_item);
        window = std::max(std::min(window, by_bytes), 2 * core_->workers());
      }
      const std::size_t ahead = fed_ - consumed;
      if (ahead > 0 && ahead * 2 > window) return;  // enough in flight
      Bytes bytes;
      std::vector<std::size_t> offsets;
      const std::size_t n = encode_items(*it_, std::ranges::end(range_), window - std::min(window, ahead), convert_,
                                         bytes, offsets, max_ahead_bytes, &input_error_);
      bytes_fed_ += bytes.size();
      exhausted_ = input_error_ || *it_ == std::ranges::end(range_);
      std::lock_guard lock(core_->mutex());
      if (job_->input_closed) {
        // close() ended the stream's input: what was submitted runs and is handed out,
        // then the stream ends with PoolClosed, as the rest never will run.
        exhausted_ = true;
        cut_short_ = n > 0;
        if (cut_short_) input_error_ = nullptr;  // the stream ends before the input's error
        return;
      }
      job_->input.append(std::move(bytes), std::move(offsets), n);
      fed_ += n;
      if (exhausted_) job_->input_closed = true;
      core_->job_changed_locked(job_);
    }
    bool pump_serial(std::size_t consumed) {
      if (consumed < fed_) return true;
      if (input_error_) return false;
      State& s = usable(state_);
      if (s.broken) std::rethrow_exception(s.broken);
      if (s.closed) throw PoolClosed(closed_while_reading);
      Bytes bytes;
      std::vector<std::size_t> offsets;
      const std::size_t want = job_->chunking.next(std::nullopt, 1);
      const std::size_t n = encode_items(*it_, std::ranges::end(range_), want, convert_, bytes, offsets, SIZE_MAX,
                                         &input_error_);
      if (n == 0) return false;
      job_->input.append(std::move(bytes), std::move(offsets), n);
      fed_ += n;
      run_inline(s, *job_);
      return true;
    }

    std::shared_ptr<State> state_;
    std::shared_ptr<detail::DispatchEngine> core_;
    std::conditional_t<std::is_lvalue_reference_v<R>, R, std::remove_cvref_t<R>> range_;
    std::optional<std::ranges::iterator_t<std::remove_reference_t<R>>> it_;  // none if begin() threw
    std::shared_ptr<detail::StreamJob<result_type>> job_;
    MapConvert convert_;
    std::size_t fed_ = 0;
    std::size_t bytes_fed_ = 0;
    std::exception_ptr input_error_;  // what the input threw where it ended
    bool exhausted_ = false;
    bool cut_short_ = false;  // the pool closed before the input was read to its end
  };

  template <class R>
  IMap<result_type> stream(R&& inputs, std::size_t chunksize, bool ordered) {
    using E = std::ranges::range_reference_t<R>;
    require_map_input<E>();
    if constexpr (map_input_ok<E>()) {
      const State& s = submitter();
      if (chunksize == 0) chunksize = s.options.chunksize;
      return IMap<result_type>(std::make_unique<Stream<R>>(state_, std::forward<R>(inputs), chunksize, ordered));
    } else {
      return IMap<result_type>(nullptr);  // not reached: a static_assert above has failed
    }
  }

  std::shared_ptr<State> state_;
};

template <class F>
Pool(F) -> Pool<F>;
template <class F>
Pool(F, PoolOptions) -> Pool<F>;

}  // namespace mproc
