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
#include <mproc/detail/engine/engine.hpp>
#include <mproc/detail/engine/local_engine.hpp>
#include <mproc/detail/engine/local_worker.hpp>
#include <mproc/detail/engine/serial_engine.hpp>
#include <mproc/detail/engine/signature.hpp>
#include <mproc/detail/engine/typed_jobs.hpp>
#include <mproc/detail/engine/worker.hpp>
#include <mproc/detail/os/pid.hpp>
#include <mproc/detail/pool/call_checks.hpp>
#include <mproc/detail/pool/call_options.hpp>
#include <mproc/detail/pool/input_stream.hpp>
#include <mproc/detail/pool/item_encoding.hpp>
#include <mproc/errors.hpp>
#include <mproc/imap.hpp>

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <ranges>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace mproc {

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
  using Encoding = detail::ItemEncoding<Args>;

 public:
  /// What F returns (mproc::None when F returns void).
  using result_type = typename Traits::Result;

 private:
  using Checks = detail::CallChecks<Args, result_type>;

 public:
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
    Checks::template require_map_input<E>();
    Checks::template require_map_options<Options...>();
    if constexpr (Checks::template map_input_ok<E>() && Checks::template map_options_ok<Options...>()) {
      return collect(inputs, typename Encoding::MapConvert{}, std::forward<Options>(options)...);
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
    Checks::template require_starmap_input<E>();
    Checks::template require_map_options<Options...>();
    if constexpr (Checks::template starmap_input_ok<E>() && Checks::template map_options_ok<Options...>()) {
      return collect(inputs, typename Encoding::StarConvert{}, std::forward<Options>(options)...);
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
  void close() { engine().close(); }
  /// Waits for the workers to exit. Call close() or terminate() first.
  void join() { engine().join(); }
  /// Stops the workers at once (SIGKILL) and reaps them; tasks not finished fail
  /// with PoolClosed.
  void terminate() { engine().terminate(); }

  /// The number of worker processes (1 in serial mode).
  std::size_t processes() const { return engine().workers(); }
  /// Whether tasks run in the calling process (PoolOptions::serial or MPROC_SERIAL).
  bool serial() const { return state().serial; }
  /// The pids of the current workers (changes when workers are replaced); empty
  /// where the workers are not local processes (serial mode, a pool over MPI).
  std::vector<pid_t> worker_pids() const { return engine().worker_pids(); }

 protected:
  /// Everything a pool holds. Protected for pools over another transport
  /// (mproc::mpi::Pool), whose setup decides serial mode and makes the engine.
  struct State {
    State(F f, PoolOptions o) : fn(std::move(f)), options(std::move(o)), serial(options.serial || env_serial()) {}
    F fn;
    PoolOptions options;
    bool serial;
    pid_t owner = detail::current_pid();
    std::shared_ptr<detail::Engine> engine;  // runs the tasks
  };

  /// For pools over another transport: `setup(state)` runs once the pool holds F and
  /// its options (processes already defaulted), unless F was rejected, and returns
  /// the engine that runs the tasks, or null for serial mode (they run here).
  template <class Setup>
  Pool(F fn, PoolOptions options, Setup&& setup) : state_(std::make_shared<State>(std::move(fn), std::move(options))) {
    require_sendable<Args>();
    require_sendable<result_type>();
    State& s = *state_;
    if (s.options.processes == 0) s.options.processes = cpu_count();
    if constexpr (detail::has_signature<F>) {
      s.engine = std::forward<Setup>(setup)(s);
      if (!s.engine) s.engine = serial_engine(s);
    }
  }

 private:
  /// The local transport: forked workers, unless serial.
  static std::shared_ptr<detail::Engine> start_local(State& s) {
    if (s.serial) return nullptr;
    State* raw = &s;  // stable (the State is heap-allocated): the child uses it after the fork
    return std::make_shared<detail::LocalEngine>(detail::LocalConfig{
        s.options.processes, s.options.maxtasksperchild, s.options.task_timeout, s.options.retries,
        s.options.max_memory_per_child,
        [raw](const detail::WorkerEnv& env) { return detail::worker_main(raw->fn, raw->options.initializer, env); }});
  }
  /// Serial mode: the tasks run in this thread, through the worker's chunk runner.
  static std::shared_ptr<detail::Engine> serial_engine(State& s) {
    State* raw = &s;  // the engine lives in the State, or in a stream that holds it (stream())
    return std::make_shared<detail::SerialEngine>(
        [raw](std::uint64_t chunk_id, std::span<const std::byte> items, Bytes& out) {
          detail::run_chunk(raw->fn, chunk_id, items, out, nullptr, false);
        },
        s.options.initializer);
  }

  static bool env_serial() {
    const char* v = std::getenv("MPROC_SERIAL");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }

  /// The state, if this process may use it (the one that made the pool).
  State& state() const {
    if (!state_) throw ValueError("mproc: this Pool was moved from");
    if (detail::current_pid() != state_->owner) {
      throw ValueError("mproc: a Pool can only be used by the process that created it");
    }
    return *state_;
  }
  detail::Engine& engine() const { return *state().engine; }

  void shut_down() noexcept {
    if (!state_) return;
    if (::getpid() != state_->owner) {
      // A forked child must not touch the parent's workers or thread, nor run F's
      // destructor: its reference to the state is left behind, on purpose.
      (void)new std::shared_ptr<State>(std::move(state_));
      return;
    }
    try {
      state_->engine->close();  // a stream that outlives the pool then ends with PoolClosed
      state_->engine->join();
    } catch (...) {
    }
    state_.reset();
  }

  // ---- submission

  template <class R, class Convert, class... Options>
  AsyncResult<std::vector<result_type>> collect(R& inputs, Convert convert, Options&&... options) {
    auto opts = detail::map_options<std::vector<result_type>>(std::forward<Options>(options)...);
    const std::size_t chunksize = opts.chunksize != 0 ? opts.chunksize : state().options.chunksize;
    auto result = detail::make_result_state(std::move(opts));
    Bytes bytes;
    std::vector<std::size_t> offsets;
    if constexpr (std::ranges::sized_range<R>) {
      const auto n = static_cast<std::size_t>(std::ranges::size(inputs));
      if constexpr (Encoding::item_size != 0) bytes.reserve(n * Encoding::item_size);
      else offsets.reserve(n);
    }
    auto it = std::ranges::begin(inputs);
    const std::size_t count = Encoding::encode_items(it, std::ranges::end(inputs), SIZE_MAX, convert, bytes, offsets);
    auto job = std::make_shared<detail::CollectJob<result_type>>(Encoding::item_size, chunksize, count,
                                                                 state().options.progress, result);
    job->input.append(std::move(bytes), std::move(offsets), count);
    job->input_closed = true;
    job->expected_total = count;
    engine().submit(std::move(job), false);
    return AsyncResult<std::vector<result_type>>(std::move(result));
  }

  /// apply_async; awaited: the caller waits for the result at once (apply), which
  /// lets the engine run the round trip on the caller's thread.
  template <class... Xs>
  AsyncResult<result_type> submit_apply(bool awaited, Xs&&... xs) {
    Checks::template require_apply_arguments<Xs...>();
    if constexpr (Checks::template apply_ok<Xs...>()) {
      auto all = std::forward_as_tuple(std::forward<Xs>(xs)...);
      auto result = [&]<std::size_t... J>(std::index_sequence<J...>) {
        return detail::make_result_state(detail::callback_options<result_type>(std::get<arity + J>(all)...));
      }(std::make_index_sequence<sizeof...(Xs) - arity>{});
      auto job = std::make_shared<detail::ApplyJob<result_type>>(Encoding::item_size, result);
      Bytes bytes;
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        detail::Writer w(bytes);
        Encoding::encode_args(w, std::get<I>(std::move(all))...);
      }(std::make_index_sequence<arity>{});
      job->input.append(std::move(bytes), {0}, 1);
      job->input_closed = true;
      job->expected_total = 1;
      engine().submit(std::move(job), awaited);
      return AsyncResult<result_type>(std::move(result));
    } else {
      return {};  // not reached: a static_assert above has failed
    }
  }

  template <class R>
  IMap<result_type> stream(R&& inputs, std::size_t chunksize, bool ordered) {
    using E = std::ranges::range_reference_t<R>;
    Checks::template require_map_input<E>();
    if constexpr (Checks::template map_input_ok<E>()) {
      const State& s = state();
      if (chunksize == 0) chunksize = s.options.chunksize;
      // The stream shares ownership of the whole State (F, and the engine it points
      // to), so that it may outlive the pool.
      std::shared_ptr<detail::Engine> engine(state_, s.engine.get());
      return IMap<result_type>(std::make_unique<detail::InputStream<result_type, Args, R>>(
          std::move(engine), std::forward<R>(inputs), chunksize, ordered, s.options.progress));
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
