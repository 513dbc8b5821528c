#pragma once
// The chunk outcome: what a worker answers for a chunk of items, as bytes. Written in
// the worker (OutcomeWriter, used by run_chunk in worker.hpp), read in the pool: a
// result frame's payload is parsed (parse_chunk_outcome), handed to the job that owns
// the items (deliver_chunk), and the job walks it item by item (for_each_outcome).
//
// A chunk's outcome payload:
//   [i64 elapsed_ns][u32 count][u32 error_count][u64 results_bytes][u32 flags][u32 0]
//   results: the encoded results of the items that succeeded, in item order
//   errors:  error_count x [u32 item][string type][string message], by item
//
// Also here: the payload of an init_failed frame (what the pool's initializer threw).

#include <mproc/codec.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/detail/wire/type_name.hpp>
#include <mproc/errors.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <string>
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

// ---------------------------------------------------------------- worker side: writing

/// Writes one outcome at the end of `out`: made before the first item runs (it keeps
/// room for the header), then each result is encoded onto `out` as its item finishes,
/// each failure is noted with fail(), and finish() appends the errors and the header.
class OutcomeWriter {
 public:
  explicit OutcomeWriter(Bytes& out) : out_(out), header_at_(out.size()) {
    out.extend(sizeof(ChunkOutcomeHeader));
    results_at_ = out.size();
  }
  OutcomeWriter(const OutcomeWriter&) = delete;
  OutcomeWriter& operator=(const OutcomeWriter&) = delete;

  /// Item `item` failed (items in ascending order, each once).
  void fail(std::uint32_t item, ExceptionInfo info) { errors_.emplace_back(item, std::move(info)); }

  /// The first `count` items have their outcome; `flags`: outcome_flag_*.
  void finish(std::uint32_t count, std::uint32_t flags, std::int64_t elapsed_ns) {
    const ChunkOutcomeHeader h{elapsed_ns, count, static_cast<std::uint32_t>(errors_.size()), out_.size() - results_at_,
                               flags,      0};
    Writer w(out_);
    for (auto& [index, info] : errors_) {
      w.pod(index);
      encode_value(w, info.type);
      encode_value(w, info.message);
    }
    std::memcpy(out_.data() + header_at_, &h, sizeof h);
  }

 private:
  Bytes& out_;
  std::size_t header_at_;
  std::size_t results_at_;
  std::vector<std::pair<std::uint32_t, ExceptionInfo>> errors_;
};

// ------------------------------------------------------------------ pool side: reading

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

/// Where the encoded result of type R that starts at `start` ends, if that can be told
/// without decoding it: fixed-size results, and cereal types (their length comes first).
template <class R>
std::optional<std::size_t> result_end(std::span<const std::byte> results, std::size_t start) {
  if constexpr (fixed_encoded_size<R>() != 0) {
    if (results.size() - start >= fixed_encoded_size<R>()) return start + fixed_encoded_size<R>();
  } else if constexpr (kind_of<R>() == Kind::cereal) {
    std::uint64_t length = 0;
    if (results.size() - start < sizeof length) return std::nullopt;
    std::memcpy(&length, results.data() + start, sizeof length);
    if (results.size() - start - sizeof length >= length) return start + sizeof length + length;
  }
  return std::nullopt;
}

/// Walks a chunk outcome for the job it was delivered to: on_value(index, R&&) for each
/// result, on_error(index, exception_ptr) for each failure, in item order; `first` is
/// the chunk's first index. Never throws for bad bytes: a result that does not decode,
/// whatever its decoding throws, fails its item with ProtocolError. The results after
/// it are found if its end is known without decoding it (result_end); if not, they
/// fail too.
template <class R, class OnValue, class OnError>
void for_each_outcome(std::size_t first, const ChunkOutcome& outcome, OnValue&& on_value, OnError&& on_error) {
  Reader results(outcome.results);
  std::size_t offset = 0;  // where `results` starts in outcome.results
  auto error = outcome.errors.begin();
  std::optional<std::size_t> lost_after;  // the undecodable result the rest can't be found after
  for (std::uint32_t i = 0; i < outcome.header.count; ++i) {
    const std::size_t index = first + i;
    if (error != outcome.errors.end() && error->first == i) {
      on_error(index, std::make_exception_ptr(RemoteError(error->second.type, error->second.message)));
      ++error;
      continue;
    }
    if (lost_after) {
      on_error(index,
               std::make_exception_ptr(ProtocolError("mproc: the result of task " + std::to_string(index) +
                                                     " cannot be found: it came after task " +
                                                     std::to_string(*lost_after) + "'s, which could not be decoded")));
      continue;
    }
    const std::size_t start = offset + results.position();
    try {
      on_value(index, decode_value<R>(results));
      continue;
    } catch (...) {
      on_error(index, std::make_exception_ptr(decode_error("the result of task " + std::to_string(index))));
    }
    if (const auto end = result_end<R>(outcome.results, start)) {
      offset = *end;
      results = Reader(outcome.results.subspan(offset));
    } else {
      lost_after = index;
    }
  }
}

// ------------------------------------------------------------ the initializer's failure

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

}  // namespace mproc::detail
