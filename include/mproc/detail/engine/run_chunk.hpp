#pragma once
// Running a chunk of tasks: decode each argument tuple, call F, encode the outcome.
// The same code runs in a forked worker, in serial mode in the caller's own thread,
// and on MPI ranks, so all three give the same results and the same errors.
//
// A chunk's outcome payload:
//   [i64 elapsed_ns][u32 count][u32 error_count][u64 results_bytes][u32 flags][u32 0]
//   results: the encoded results of the items that succeeded, in item order
//   errors:  error_count x [u32 item][string type][string message], by item

#include <mproc/async_result.hpp>  // None
#include <mproc/codec.hpp>
#include <mproc/detail/os/deadline.hpp>  // monotonic_ns
#include <mproc/detail/os/resident_memory.hpp>
#include <mproc/detail/engine/signature.hpp>
#include <mproc/detail/wire/type_name.hpp>
#include <mproc/detail/engine/worker_slots.hpp>
#include <mproc/errors.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace mproc::detail {

/// What a failure to decode `what` is (call inside a catch block): a ProtocolError that
/// names it and what was thrown, whatever that was (a ProtocolError for bad bytes, a
/// user's load() that throws 42, bad_alloc for a size claimed by a user's decode).
inline ProtocolError decode_error(const std::string& what) {
  std::string thrown;
  try {
    throw;
  } catch (const ProtocolError& e) {
    thrown = e.what();
  } catch (...) {
    thrown = describe_current_exception().text();
  }
  return ProtocolError("mproc: cannot decode " + what + " (" + thrown + ")");
}

/// Outcome flag: the worker stopped the chunk after `count` items, over its memory
/// limit; the items after them never ran (and go back in the queue).
inline constexpr std::uint32_t outcome_flag_stopped_early = 0x1;

struct ChunkOutcomeHeader {
  std::int64_t elapsed_ns;
  std::uint32_t count;
  std::uint32_t error_count;
  std::uint64_t results_bytes;
  std::uint32_t flags;
  std::uint32_t reserved;
};

/// A parsed chunk outcome: which items failed and the encoded results of the rest.
struct ChunkOutcome {
  ChunkOutcomeHeader header{};
  std::span<const std::byte> results;
  std::vector<std::pair<std::uint32_t, ExceptionInfo>> errors;  // ascending item order

  bool stopped_early() const noexcept { return (header.flags & outcome_flag_stopped_early) != 0; }
};

inline ChunkOutcome parse_chunk_outcome(std::span<const std::byte> payload) {
  Reader r(payload);
  ChunkOutcome out;
  out.header = r.pod<ChunkOutcomeHeader>();
  const auto& h = out.header;
  if (h.error_count > h.count) throw ProtocolError("mproc: chunk outcome has more errors than items");
  if ((h.flags & ~outcome_flag_stopped_early) != 0 || h.reserved != 0) {
    throw ProtocolError("mproc: chunk outcome has unknown flags");
  }
  if (out.stopped_early() && h.count == 0) throw ProtocolError("mproc: chunk outcome stopped before any item");
  if (h.results_bytes > r.remaining()) throw ProtocolError("mproc: chunk outcome results overrun the frame");
  out.results = {r.take(static_cast<std::size_t>(h.results_bytes)), static_cast<std::size_t>(h.results_bytes)};
  // Each error takes at least 6 bytes (its item, two empty strings): a count the rest
  // cannot hold is rejected before anything is reserved for it.
  if (h.error_count > r.remaining() / 6) throw ProtocolError("mproc: chunk outcome errors overrun the frame");
  out.errors.reserve(h.error_count);
  for (std::uint32_t i = 0; i < h.error_count; ++i) {
    const auto item = r.pod<std::uint32_t>();
    if (item >= h.count || (!out.errors.empty() && item <= out.errors.back().first)) {
      throw ProtocolError("mproc: chunk outcome error list is out of order");
    }
    ExceptionInfo info{decode_value<std::string>(r), decode_value<std::string>(r)};
    out.errors.emplace_back(item, std::move(info));
  }
  if (!r.at_end()) throw ProtocolError("mproc: trailing bytes after a chunk outcome");
  return out;
}

/// Hands a chunk's outcome to the job that owns its `count` items from `first`. A
/// worker stops at the first argument tuple it cannot decode (the items after it
/// can't be found), so the items past the outcome's count fail with ProtocolError.
/// Every runner (workers, serial mode) delivers outcomes through here.
template <class Sink>
void deliver_chunk(Sink& job, std::size_t first, std::size_t count, const ChunkOutcome& outcome) {
  job.deliver(first, outcome);
  for (std::size_t i = outcome.header.count; i < count; ++i) {
    job.fail(first + i, std::make_exception_ptr(ProtocolError(
                            "mproc: a worker could not decode the arguments of task " + std::to_string(first + i))));
  }
}

/// The error that breaks a pool whose initializer threw `info`.
inline std::exception_ptr initializer_error(const ExceptionInfo& info) {
  return std::make_exception_ptr(
      RemoteError(info.type, "in the pool's initializer (the pool is broken): " + info.message));
}

/// The payload of an init_failed frame: what the initializer threw, as a worker
/// sends it, and the error it becomes in the pool.
inline Bytes encode_initializer_failure(const ExceptionInfo& info) {
  return encode(std::pair<std::string, std::string>(info.type, info.message));
}
inline std::exception_ptr initializer_error(std::span<const std::byte> payload) {
  auto [type, message] = decode<std::pair<std::string, std::string>>(payload);
  return initializer_error(ExceptionInfo{std::move(type), std::move(message)});
}

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
  const std::size_t header_at = out.size();
  out.extend(sizeof(ChunkOutcomeHeader));
  const std::size_t results_at = out.size();
  std::vector<std::pair<std::uint32_t, ExceptionInfo>> errors;
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
      errors.emplace_back(item++, ExceptionInfo{type_name<ProtocolError>(), error.what()});
      break;
    }
    const std::size_t before = out.size();
    try {
      encode_value(w, Traits::call(fn, *args));
    } catch (...) {
      out.resize(before);  // drop a partly encoded result
      errors.emplace_back(item, describe_current_exception());
    }
    ++item;
    if (memory != nullptr && memory->check()) {
      if (!in.at_end()) flags |= outcome_flag_stopped_early;
      break;
    }
  }
  if (slot != nullptr) slot->idle();
  ChunkOutcomeHeader h{monotonic_ns() - start, item, static_cast<std::uint32_t>(errors.size()),
                       out.size() - results_at, flags, 0};
  for (auto& [index, info] : errors) {
    w.pod(index);
    encode_value(w, info.type);
    encode_value(w, info.message);
  }
  std::memcpy(out.data() + header_at, &h, sizeof h);
}

}  // namespace mproc::detail
