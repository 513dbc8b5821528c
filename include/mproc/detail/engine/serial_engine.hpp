#pragma once
// SerialEngine: runs every task in the calling thread (PoolOptions::serial, or
// MPROC_SERIAL), through the same chunk runner and outcome path as a worker, so
// results and errors are the ones a pool of workers gives. For stepping through F in
// a debugger. One thread only, so no lock.

#include <mproc/detail/engine/engine.hpp>
#include <mproc/detail/engine/outcome.hpp>
#include <mproc/detail/engine/worker.hpp>  // run_chunk
#include <mproc/detail/wire/type_name.hpp>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <span>
#include <utility>

namespace mproc::detail {

class SerialEngine final : public Engine {
 public:
  /// Runs a chunk's encoded items and appends its outcome to `out` (run_chunk on F).
  using ChunkRunner = std::function<void(std::uint64_t chunk_id, std::span<const std::byte> items, Bytes& out)>;

  /// Runs the initializer once, here, as each worker would. If it throws, the pool
  /// is broken as a pool of workers would be: every call fails with the same
  /// RemoteError.
  SerialEngine(ChunkRunner run, const std::function<void()>& initializer) : run_(std::move(run)) {
    if (!initializer) return;
    try {
      initializer();
    } catch (...) {
      broken_ = initializer_error(describe_current_exception());
    }
  }

  std::size_t workers() const noexcept override { return 1; }

  void submit(std::shared_ptr<Job> job, bool /*awaited*/) override {
    check_open();
    run_input(*job);
    job->finish();
  }

  void open_stream(std::shared_ptr<Job> /*job*/) override { check_open(); }
  /// One chunk at a time, once the consumer has taken every result so far.
  std::size_t stream_room(const Job& job, const StreamFeed& feed) override {
    return feed.consumed < feed.fed ? 0 : job.chunking.next(std::nullopt, 1);
  }
  bool append_input(const std::shared_ptr<Job>& job, Bytes bytes, std::vector<std::size_t> offsets, std::size_t n,
                    bool last) override {
    if (closed_) return false;
    job->input.append(std::move(bytes), std::move(offsets), n);
    if (last) job->input_closed = true;
    run_input(*job);
    return true;
  }
  void cancel(const std::shared_ptr<Job>& job) noexcept override { job->cancelled = true; }

  void close() override { closed_ = true; }
  void join() override {
    if (!closed_) throw_join_while_open();
  }
  void terminate() override { closed_ = true; }

 private:
  /// Throws what a pool of workers would throw at a submission.
  void check_open() const {
    if (broken_) std::rethrow_exception(broken_);
    if (closed_) throw_closed();
  }

  /// Runs the job's items not run yet, a chunk at a time (sized as for one worker).
  void run_input(Job& job) {
    while (job.dispatched < job.input.size()) {
      const std::size_t first = job.dispatched;
      std::optional<std::size_t> remaining;
      if (job.expected_total) remaining = *job.expected_total - first;
      const std::size_t n = std::min(job.chunking.next(remaining, 1), job.input.contiguous_from(first));
      Bytes out;
      run_(next_chunk_id_++, job.input.bytes(first, n), out);
      const ChunkOutcome outcome = parse_chunk_outcome(out.span());
      job.chunking.record(outcome.header.count, outcome.header.elapsed_ns);
      job.dispatched += n;
      deliver_chunk(job, first, n, outcome);
      job.settled += n;
      job.input.settle(first, n);
    }
  }

  ChunkRunner run_;
  std::exception_ptr broken_;  // the initializer's error, for every call
  bool closed_ = false;
  std::uint64_t next_chunk_id_ = 1;
};

}  // namespace mproc::detail
