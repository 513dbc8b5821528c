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
#include <mproc/detail/jobs.hpp>
#include <mproc/detail/local_engine.hpp>
#include <mproc/detail/signature.hpp>
#include <mproc/detail/task.hpp>
#include <mproc/detail/worker.hpp>
#include <mproc/errors.hpp>
#include <mproc/imap.hpp>

#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
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
    check_map_input<std::ranges::range_reference_t<R>>();
    return collect(inputs, MapConvert{}, std::forward<Options>(options)...);
  }
  /// F(a, b, ...) for every tuple or pair (a, b, ...) of inputs, in input order.
  template <std::ranges::input_range R>
  std::vector<result_type> starmap(R&& inputs, std::size_t chunksize = 0) {
    return starmap_async(std::forward<R>(inputs), chunksize).get();
  }
  /// As starmap(), without blocking; trailing arguments as for map_async.
  template <std::ranges::input_range R, class... Options>
  AsyncResult<std::vector<result_type>> starmap_async(R&& inputs, Options&&... options) {
    check_starmap_input<std::ranges::range_reference_t<R>>();
    return collect(inputs, StarConvert{}, std::forward<Options>(options)...);
  }
  /// A lazy map: results in input order as they come. The input is read as the
  /// results are consumed, so it may be endless.
  template <std::ranges::input_range R>
  IMap<result_type> imap(R&& inputs, std::size_t chunksize = 0) {
    check_map_input<std::ranges::range_reference_t<R>>();
    return stream(std::forward<R>(inputs), chunksize, true);
  }
  /// As imap(), but results in the order they finish.
  template <std::ranges::input_range R>
  IMap<result_type> imap_unordered(R&& inputs, std::size_t chunksize = 0) {
    check_map_input<std::ranges::range_reference_t<R>>();
    return stream(std::forward<R>(inputs), chunksize, false);
  }

  // ------------------------------------------------------------------ apply family

  /// F(args...) in a worker; blocks for the result.
  template <class... Xs>
  result_type apply(Xs&&... args) {
    static_assert(sizeof...(Xs) == arity, "mproc: Pool::apply takes exactly F's arguments");
    return apply_async(std::forward<Xs>(args)...).get();
  }
  /// F(args...) in a worker, without blocking. After F's arguments, optionally a
  /// callback(const result_type&) and an error_callback(const Error&), run in the
  /// parent (on the pool's thread) when the result arrives.
  template <class... Xs>
  AsyncResult<result_type> apply_async(Xs&&... xs) {
    static_assert(sizeof...(Xs) >= arity && sizeof...(Xs) <= arity + 2,
                  "mproc: Pool::apply_async takes F's arguments, then optionally a callback and an "
                  "error_callback");
    auto all = std::forward_as_tuple(std::forward<Xs>(xs)...);
    auto options = [&]<std::size_t... J>(std::index_sequence<J...>) {
      return async_options<result_type>(std::get<arity + J>(all)...);
    }(std::make_index_sequence<sizeof...(Xs) - arity>{});
    auto state = make_state<result_type>(std::move(options));
    auto job = std::make_shared<detail::ApplyJob<result_type>>(item_size, state);
    Bytes bytes;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      static_assert(std::is_constructible_v<Args, decltype(std::get<I>(std::move(all)))...>,
                    "mproc: Pool::apply_async: the arguments do not convert to F's parameter types");
      detail::Writer w(bytes);
      encode_args(w, std::get<I>(std::move(all))...);
    }(std::make_index_sequence<arity>{});
    job->input.append(std::move(bytes), {0}, 1);
    job->input_closed = true;
    job->expected_total = 1;
    submit(std::move(job));
    return AsyncResult<result_type>(std::move(state));
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
  std::size_t processes() const { return state_->serial ? 1 : state_->options.processes; }
  /// Whether tasks run in the calling process (PoolOptions::serial or MPROC_SERIAL).
  bool serial() const { return state_->serial; }
  /// The pids of the current workers (changes when workers are replaced).
  std::vector<pid_t> worker_pids() const {
    const auto* local = dynamic_cast<const detail::LocalEngine*>(state_->core.get());
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
    pid_t owner = ::getpid();
    std::shared_ptr<detail::Engine> core;  // runs the tasks; null: they run here (serial)
    /// Non-empty: this process takes no tasks (an MPI serving rank); map, apply and
    /// the rest throw ValueError with this text.
    std::string refusal;
    std::uint64_t next_chunk_id = 1;  // serial mode
  };

  /// For pools over another transport: `setup(state)` runs once the pool holds F and
  /// its options (processes already defaulted), unless F was rejected; it sets
  /// state.core to the engine that runs the tasks, or leaves it null for serial mode.
  template <class Setup>
  Pool(F fn, PoolOptions options, Setup&& setup)
      : state_(std::make_unique<State>(std::move(fn), std::move(options))) {
    require_sendable<Args>();
    require_sendable<result_type>();
    State& s = *state_;
    if (s.options.processes == 0) s.options.processes = cpu_count();
    if constexpr (detail::has_signature<F>) std::forward<Setup>(setup)(s);
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

  static bool env_serial() {
    const char* v = std::getenv("MPROC_SERIAL");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }

  State& state() const {
    if (!state_) throw ValueError("mproc: this Pool was moved from");
    if (::getpid() != state_->owner) {
      throw ValueError("mproc: a Pool can only be used by the process that created it");
    }
    return *state_;
  }
  detail::Engine* live_core() const { return state().core.get(); }
  /// The state, for a call that submits tasks: refused where tasks are not taken.
  State& submitter() const {
    State& s = state();
    if (!s.refusal.empty()) throw ValueError(s.refusal);
    return s;
  }

  void shut_down() noexcept {
    if (!state_) return;
    if (::getpid() != state_->owner) {
      // A forked child must not touch the parent's workers or thread.
      (void)state_.release();
      return;
    }
    try {
      if (state_->core) {
        state_->core->close();
        state_->core->join();
      }
    } catch (...) {
    }
    state_.reset();
  }

  // ---- argument conversion

  /// Encodes F's arguments as the Args tuple would be encoded, without building it:
  /// an argument already of the parameter's type is encoded in place, not copied.
  template <class... Xs>
  static void encode_args(detail::Writer& w, Xs&&... xs) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (encode_arg<std::tuple_element_t<I, Args>>(w, std::forward<Xs>(xs)), ...);
    }(std::index_sequence_for<Xs...>{});
  }
  template <class A, class X>
  static void encode_arg(detail::Writer& w, X&& x) {
    if constexpr (std::is_same_v<std::remove_cvref_t<X>, A>) detail::encode_value(w, x);
    else detail::encode_value(w, A(std::forward<X>(x)));
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
  template <class E>
  static constexpr void check_map_input() {
    static_assert(arity == 1,
                  "mproc: map/imap/imap_unordered call F with one argument per input, but F takes another "
                  "number of arguments: use starmap with tuples, or apply/apply_async");
    if constexpr (arity == 1) {
      static_assert(std::is_constructible_v<Args, E>,
                    "mproc: the input elements do not convert to F's parameter type");
    }
  }
  template <class E>
  static constexpr void check_starmap_input() {
    using T = std::remove_cvref_t<E>;
    static_assert(requires { std::tuple_size<T>::value; },
                  "mproc: starmap needs inputs that are tuples, pairs or arrays of F's arguments");
    if constexpr (requires { std::tuple_size<T>::value; }) {
      static_assert(std::tuple_size_v<T> == arity,
                    "mproc: starmap: each input tuple must have as many elements as F has parameters");
    }
  }

  /// Encodes items from [it, end) into bytes (and their offsets, for variable-size
  /// items): at most max items, and no more once max_bytes are filled.
  template <class It, class Sent, class Convert>
  static std::size_t encode_items(It& it, const Sent& end, std::size_t max, Convert convert, Bytes& bytes,
                                  std::vector<std::size_t>& offsets, std::size_t max_bytes = SIZE_MAX) {
    detail::Writer w(bytes);
    std::size_t n = 0;
    for (; n < max && it != end && bytes.size() < max_bytes; ++it, ++n) {
      if constexpr (item_size == 0) offsets.push_back(bytes.size());
      convert(w, *it);
    }
    return n;
  }

  // ---- async options: [chunksize], [callback], [error_callback]

  template <class T>
  struct AsyncOptions {
    std::size_t chunksize = 0;
    std::function<void(const T&)> callback;
    std::function<void(const Error&)> error_callback;
  };
  template <class T, class... Rest>
  static AsyncOptions<T> async_options(Rest&&... rest) {
    AsyncOptions<T> o;
    int position = 0;
    (take_option<T>(o, position++, std::forward<Rest>(rest)), ...);
    return o;
  }
  template <class T, class A>
  static void take_option(AsyncOptions<T>& o, int position, A&& a) {
    using V = std::remove_cvref_t<A>;
    if constexpr (std::is_integral_v<V>) {
      if (position != 0) throw ValueError("mproc: chunksize must come before the callbacks");
      o.chunksize = static_cast<std::size_t>(a);
    } else {
      static_assert(std::is_invocable_v<A, const T&> || std::is_invocable_v<A, const Error&> ||
                        std::is_same_v<V, std::nullptr_t>,
                    "mproc: a callback must be callable with the result (const T&), an error_callback "
                    "with const mproc::Error&");
      if constexpr (std::is_invocable_v<A, const T&>) {
        if (!o.callback && !o.error_callback) {
          o.callback = std::forward<A>(a);
          return;
        }
      }
      if constexpr (std::is_invocable_v<A, const Error&>) {
        if (!o.error_callback) {
          o.error_callback = std::forward<A>(a);
          return;
        }
      }
      if constexpr (std::is_same_v<V, std::nullptr_t>) return;  // "no callback", as Python's None
      throw ValueError("mproc: too many or misplaced callbacks");
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
    auto opts = async_options<std::vector<result_type>>(std::forward<Options>(options)...);
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

  /// Queues a job whose input is complete. A job with no items finishes at once.
  void submit(std::shared_ptr<detail::Job> job) {
    State& s = submitter();
    if (s.core) {
      std::lock_guard lock(s.core->mutex());
      if (job->input.size() != 0) {
        s.core->submit_locked(std::move(job));
        return;
      }
      s.core->check_open_locked();
    } else {
      if (s.closed) throw PoolClosed("mproc: the pool is closed (close() or terminate() was called)");
      run_inline(*job);
    }
    job->finish();
  }

  /// Serial mode: runs the job's undispatched items here, through the same chunk
  /// runner and outcome path as the workers.
  void run_inline(detail::Job& job) {
    State& s = state();
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
      job.deliver(first, outcome);
      job.settled += n;
      job.input.settle(first, n);
    }
  }

  /// Feeds an IMap from an input range: keeps a window of items submitted ahead of
  /// the consumer (pool), or runs one chunk at a time when asked (serial).
  template <class R>
  class Stream final : public detail::StreamSource<result_type> {
   public:
    Stream(Pool& pool, R&& range, std::size_t chunksize, bool ordered)
        : pool_(&pool),
          core_(pool.submitter().core),
          range_(std::forward<R>(range)),
          it_(std::ranges::begin(range_)),
          job_(std::make_shared<detail::StreamJob<result_type>>(item_size, chunksize, ordered, size_hint(range_),
                                                                pool.state().options.progress)) {
      job_->expected_total = size_hint(range_);
      if (core_) {
        std::lock_guard lock(core_->mutex());
        core_->submit_locked(job_);
      }
    }
    bool pump(std::size_t consumed) override {
      if (!core_) return pump_serial(consumed);
      refill(consumed);
      return !(exhausted_ && consumed == fed_);
    }
    void cancel() noexcept override {
      if (!core_) return;
      std::lock_guard lock(core_->mutex());
      job_->cancelled = true;
      job_->input_closed = true;
      core_->job_changed_locked(job_);
    }
    detail::StreamJob<result_type>& job() noexcept override { return *job_; }

   private:
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
      if (fed_ > 0) {  // big items: keep what is ahead of the consumer near max_ahead_bytes
        const std::size_t by_bytes = max_ahead_bytes / std::max<std::size_t>(1, bytes_fed_ / fed_);
        window = std::max(std::min(window, by_bytes), 2 * core_->workers());
      }
      const std::size_t ahead = fed_ - consumed;
      if (ahead > 0 && ahead * 2 > window) return;  // enough in flight
      Bytes bytes;
      std::vector<std::size_t> offsets;
      const std::size_t n = encode_items(it_, std::ranges::end(range_), window - std::min(window, ahead), convert_,
                                         bytes, offsets, max_ahead_bytes);
      bytes_fed_ += bytes.size();
      exhausted_ = it_ == std::ranges::end(range_);
      std::lock_guard lock(core_->mutex());
      if (job_->input_closed) {
        // close() ended the stream's input: what was submitted runs, the rest never will.
        exhausted_ = true;
        if (consumed == fed_) {
          throw PoolClosed("mproc: the pool was closed while imap was still reading its input");
        }
        return;
      }
      job_->input.append(std::move(bytes), std::move(offsets), n);
      fed_ += n;
      if (exhausted_) job_->input_closed = true;
      core_->job_changed_locked(job_);
    }
    bool pump_serial(std::size_t consumed) {
      if (consumed < fed_) return true;
      if (pool_->state().closed) throw PoolClosed("mproc: the pool is closed");
      Bytes bytes;
      std::vector<std::size_t> offsets;
      const std::size_t want = job_->chunking.next(std::nullopt, 1);
      const std::size_t n = encode_items(it_, std::ranges::end(range_), want, convert_, bytes, offsets);
      if (n == 0) return false;
      job_->input.append(std::move(bytes), std::move(offsets), n);
      fed_ += n;
      pool_->run_inline(*job_);
      return true;
    }

    Pool* pool_;
    std::shared_ptr<detail::Engine> core_;
    std::conditional_t<std::is_lvalue_reference_v<R>, R, std::remove_cvref_t<R>> range_;
    std::ranges::iterator_t<std::remove_reference_t<R>> it_;
    std::shared_ptr<detail::StreamJob<result_type>> job_;
    static constexpr std::size_t max_ahead_bytes = std::size_t{64} << 20;
    MapConvert convert_;
    std::size_t fed_ = 0;
    std::size_t bytes_fed_ = 0;
    bool exhausted_ = false;
  };

  template <class R>
  IMap<result_type> stream(R&& inputs, std::size_t chunksize, bool ordered) {
    if (chunksize == 0) chunksize = state().options.chunksize;
    return IMap<result_type>(std::make_unique<Stream<R>>(*this, std::forward<R>(inputs), chunksize, ordered));
  }

  std::unique_ptr<State> state_;
};

template <class F>
Pool(F) -> Pool<F>;
template <class F>
Pool(F, PoolOptions) -> Pool<F>;

}  // namespace mproc
