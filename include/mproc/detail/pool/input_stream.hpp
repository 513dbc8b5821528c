#pragma once
// InputStream: what feeds Pool::imap and imap_unordered from the caller's input
// range. It reads and encodes the input on the consumer's thread, as far ahead as the
// engine asks (Engine::stream_room), and hands the items to the engine
// (append_input); the job's state is the engine's to lock.

#include <mproc/detail/engine/engine.hpp>
#include <mproc/detail/engine/scheduling.hpp>
#include <mproc/detail/engine/typed_jobs.hpp>
#include <mproc/detail/pool/item_encoding.hpp>
#include <mproc/errors.hpp>
#include <mproc/imap.hpp>

#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>
#include <vector>

namespace mproc::detail {

/// Feeds an IMap<Result> from a range R of single arguments of a pool of F(Args...).
/// It holds its engine by shared ownership, so it may outlive the Pool: it then ends
/// as a closed pool's stream does, with PoolClosed. An input that throws (reading an
/// item, or converting or encoding it) ends there, as Python's imap does: the items
/// read before it run, and the consumer gets its exception after their results.
template <class Result, class Args, class R>
class InputStream final : public StreamSource<Result> {
  using Encoding = ItemEncoding<Args>;

 public:
  /// Throws as Engine::submit does (a closed or broken pool).
  InputStream(std::shared_ptr<Engine> engine, R&& range, std::size_t chunksize, bool ordered, bool progress)
      : engine_(std::move(engine)),
        range_(std::forward<R>(range)),
        job_(
            std::make_shared<StreamJob<Result>>(Encoding::item_size, chunksize, ordered, size_hint(range_), progress)) {
    job_->expected_total = size_hint(range_);
    try {
      it_.emplace(std::ranges::begin(range_));  // a generator's first item may throw here
    } catch (...) {
      input_error_ = std::current_exception();
      exhausted_ = true;
    }
    engine_->open_stream(job_);
    if (exhausted_) (void)engine_->append_input(job_, {}, {}, 0, true);
  }

  bool pump(std::size_t consumed) override {
    if (!exhausted_) {
      const StreamFeed feed{fed_, bytes_fed_, consumed, job_->mean_result_bytes()};
      if (const std::size_t room = engine_->stream_room(*job_, feed); room > 0) feed_items(room);
    }
    if (consumed < fed_) return true;
    if (cut_short_) throw PoolClosed("mproc: the pool was closed while imap was still reading its input");
    return !exhausted_;
  }
  std::exception_ptr input_error() const noexcept override { return input_error_; }
  void cancel() noexcept override { engine_->cancel(job_); }
  StreamJob<Result>& job() noexcept override { return *job_; }

 private:
  static std::optional<std::size_t> size_hint(const auto& range) {
    if constexpr (std::ranges::sized_range<decltype(range)>) {
      return static_cast<std::size_t>(std::ranges::size(range));
    } else {
      return std::nullopt;
    }
  }

  /// Reads and encodes up to `room` items (and no more than about max_stream_bytes)
  /// and hands them to the engine.
  void feed_items(std::size_t room) {
    Bytes bytes;
    std::vector<std::size_t> offsets;
    const std::size_t n = Encoding::encode_items(*it_, std::ranges::end(range_), room, typename Encoding::MapConvert{},
                                                 bytes, offsets, ChunkPolicy::max_stream_bytes, &input_error_);
    bytes_fed_ += bytes.size();
    exhausted_ = input_error_ || *it_ == std::ranges::end(range_);
    if (!engine_->append_input(job_, std::move(bytes), std::move(offsets), n, exhausted_)) {
      // close() ended the stream's input: what was submitted runs and is handed out,
      // then the stream ends with PoolClosed, as the rest never will run.
      exhausted_ = true;
      cut_short_ = n > 0;
      if (cut_short_) input_error_ = nullptr;  // the stream ends before the input's error
      return;
    }
    fed_ += n;
  }

  std::shared_ptr<Engine> engine_;
  std::conditional_t<std::is_lvalue_reference_v<R>, R, std::remove_cvref_t<R>> range_;
  std::optional<std::ranges::iterator_t<std::remove_reference_t<R>>> it_;  // none if begin() threw
  std::shared_ptr<StreamJob<Result>> job_;
  std::size_t fed_ = 0;
  std::size_t bytes_fed_ = 0;
  std::exception_ptr input_error_;  // what the input threw where it ended
  bool exhausted_ = false;
  bool cut_short_ = false;  // the pool closed before the input was read to its end
};

}  // namespace mproc::detail
