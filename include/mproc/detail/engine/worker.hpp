#pragma once
// The worker side of a pool: running a chunk of tasks (decode each argument tuple,
// call F, write the outcome: run_chunk) and the loop of every process that runs
// chunks for a pool (serve_chunks). The same run_chunk runs in a forked worker, in
// serial mode in the caller's own thread, and on MPI ranks, so all three give the
// same results and the same errors; the same loop runs in a forked worker and on an
// MPI rank, over the transport each has (local_worker.hpp, mpi/serve.hpp).

#include <mproc/async_result.hpp>  // None
#include <mproc/codec.hpp>
#include <mproc/detail/engine/outcome.hpp>
#include <mproc/detail/engine/signature.hpp>
#include <mproc/detail/engine/worker_slots.hpp>
#include <mproc/detail/os/deadline.hpp>  // monotonic_ns
#include <mproc/detail/os/resident_memory.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/detail/wire/type_name.hpp>
#include <mproc/errors.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>

namespace mproc::detail {

/// How F is called from decoded arguments: parameters declared as non-const lvalue
/// references get the decoded object itself, all others get it moved.
template <class Param, class Arg>
decltype(auto) pass_argument(Arg& arg) {
  if constexpr (std::is_lvalue_reference_v<Param> && !std::is_const_v<std::remove_reference_t<Param>>) {
    return (arg);
  } else {
    return std::move(arg);
  }
}

template <class F>
struct TaskTraits {
  using Sig = signature<std::remove_cvref_t<F>>;
  using Args = typename Sig::args;      // decoded argument tuple
  using Params = typename Sig::params;  // declared parameter types
  using RawResult = typename Sig::result;
  using Result = std::conditional_t<std::is_void_v<RawResult>, None, std::remove_cvref_t<RawResult>>;

  static Result call(F& fn, Args& args) {
    return [&]<std::size_t... I>(std::index_sequence<I...>) -> Result {
      if constexpr (std::is_void_v<RawResult>) {
        std::invoke(fn, pass_argument<std::tuple_element_t<I, Params>>(std::get<I>(args))...);
        return None{};
      } else {
        return std::invoke(fn, pass_argument<std::tuple_element_t<I, Params>>(std::get<I>(args))...);
      }
    }(std::make_index_sequence<std::tuple_size_v<Args>>{});
  }
};

/// Runs every item of a chunk (its encoded argument tuples, back to back) and
/// appends the outcome payload to out. slot, if given, is told which item runs.
/// memory, if given, is checked after each item: over the limit, the chunk stops
/// there (outcome_flag_stopped_early) unless that was its last item.
template <class F>
void run_chunk(F& fn, std::uint64_t chunk_id, std::span<const std::byte> items, Bytes& out, WorkerSlot* slot,
               bool timed, MemoryGuard* memory = nullptr) {
  using Traits = TaskTraits<F>;
  static_assert(min_encoded_size<typename Traits::Args>() > 0,
                "every item takes a byte at least, so a chunk's items are counted by their bytes");
  OutcomeWriter outcome(out);
  Reader in(items);
  Writer w(out);
  const std::int64_t start = monotonic_ns();
  std::uint32_t item = 0;
  std::uint32_t flags = 0;
  while (!in.at_end()) {
    if (slot != nullptr) slot->begin(chunk_id, item, timed);
    std::optional<typename Traits::Args> args;
    try {
      args.emplace(decode_value<typename Traits::Args>(in));
    } catch (...) {
      // Undecodable input: the items after it can't be found, so the chunk ends here
      // and the parent fails the ones it never got an outcome for.
      const ProtocolError error = decode_error("the task's arguments");
      outcome.fail(item++, ExceptionInfo{type_name<ProtocolError>(), error.what()});
      break;
    }
    const std::size_t before = out.size();
    try {
      encode_value(w, Traits::call(fn, *args));
    } catch (...) {
      out.resize(before);  // drop a partly encoded result
      outcome.fail(item, describe_current_exception());
    }
    ++item;
    if (memory != nullptr && memory->check()) {
      if (!in.at_end()) flags |= outcome_flag_stopped_early;
      break;
    }
  }
  if (slot != nullptr) slot->idle();
  outcome.finish(item, flags, monotonic_ns() - start);
}

/// A chunk as a transport received it: valid until the transport's next receive().
struct TaskView {
  std::uint64_t id;
  std::span<const std::byte> items;
};

/// The loop of a process that runs a pool's chunks: the initializer, then receive a
/// chunk, run it, send its outcome, until the pool says stop. A forked worker
/// (local_worker.hpp) and an MPI serving rank (mpi/serve.hpp) run it over their own
/// Transport, a template parameter (no virtual call per chunk), which provides:
///
///   bool send_ready()                  the initializer ran; false: the pool is gone
///   bool send_init_failed(payload)     the initializer threw (encode_initializer_failure);
///                                      true: stay to receive the pool's stop
///   std::optional<TaskView> receive()  the next chunk to run; nothing: stop serving
///   WorkerSlot* slot(), bool timed()   where the running item is posted (nullptr: nowhere)
///   MemoryGuard* memory()              the process's memory limit (nullptr: none)
///   bool send_result(const FrameHeader&, Bytes& frame)
///                                      frame: the header's room, then the outcome;
///                                      false: the pool is gone
///
/// Returns the process's exit code: 1 if the initializer threw, else 0.
template <class F, class Transport>
int serve_chunks(F& fn, const std::function<void()>& initializer, Transport& transport) {
  bool broken = false;  // the initializer threw: the pool runs nothing here
  if (initializer) {
    try {
      initializer();
    } catch (...) {
      broken = true;
      if (!transport.send_init_failed(encode_initializer_failure(describe_current_exception()).span())) return 1;
    }
  }
  if (!broken && !transport.send_ready()) return 0;

  Bytes frame;  // one result frame; kept to reuse its memory
  // Over the memory limit, a chunk ends early: the pool runs the rest elsewhere.
  MemoryGuard* const memory = transport.memory();
  while (const auto task = transport.receive()) {
    if (broken) throw ProtocolError("mproc: a task came to a worker whose initializer failed");
    frame.resize(frame_header_size);
    run_chunk(fn, task->id, task->items, frame, transport.slot(), transport.timed(), memory);
    FrameHeader h = make_frame_header(FrameKind::result, task->id, frame.size() - frame_header_size);
    const bool retiring = memory != nullptr && memory->over();
    if (retiring) h.flags |= frame_flag_retiring;
    // Sent before the next chunk starts, never held back behind it: the next task
    // may be long, or may even wait for this result.
    if (!transport.send_result(h, frame)) return 0;  // the pool is gone
    if (retiring) break;  // the pool runs what else it gave us elsewhere
  }
  return broken ? 1 : 0;
}

}  // namespace mproc::detail
