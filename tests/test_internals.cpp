// Unit tests of the internals the process-level tests reach only by forking and
// killing: the chunk-size policy, the engine's probe and hand-out rules and its loss
// and retry accounting (an engine driven as a transport would: chunks cut, answered
// by the worker side's run_chunk, or lost with the worker that held them), the chunk
// outcome format (written by run_chunk, parsed and walked as the pool does), the
// worker loop over a fake transport, the segment allocator against a model of its
// blocks, and the shared ring's recovery after a writer or reader stopped between its
// steps. One process and no timers; only the ring's dead-holder cases fork, one child
// per case.

#define CATCH_CONFIG_ENABLE_PAIR_STRINGMAKER  // failures print the chunks cut and the results
#define CATCH_CONFIG_ENABLE_TUPLE_STRINGMAKER

#include "fault_support.hpp"
#include "picky_support.hpp"

#include <mproc/codec.hpp>
#include <mproc/detail/engine/dispatch_engine.hpp>
#include <mproc/detail/engine/job.hpp>
#include <mproc/detail/engine/outcome.hpp>
#include <mproc/detail/engine/scheduling.hpp>
#include <mproc/detail/engine/typed_jobs.hpp>
#include <mproc/detail/engine/worker.hpp>
#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/shm/crash_safety.hpp>
#include <mproc/detail/shm/segment.hpp>
#include <mproc/detail/shm/segment_allocator.hpp>
#include <mproc/detail/shm/shared_ring.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/errors.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using mproc::Bytes;
using mproc::ProtocolError;
using mproc::detail::ChunkPolicy;

// ================================================================== ChunkPolicy

/// A policy that measured `count` items taking `ns_each` nanoseconds each.
ChunkPolicy measured(std::int64_t ns_each, std::size_t count = 1000) {
  ChunkPolicy p;
  p.record(count, ns_each * static_cast<std::int64_t>(count));
  return p;
}

}  // namespace

TEST_CASE("ChunkPolicy: before any item is measured every chunk is a one-item probe") {
  ChunkPolicy p;
  CHECK_FALSE(p.item_seconds());
  for (const std::size_t workers : {1, 3, 64}) {
    for (const std::size_t left : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{1} << 40}) {
      CHECK(p.next(left, workers) == 1);
    }
    CHECK(p.next(std::nullopt, workers) == 1);
    CHECK(p.stream_window(workers) == ChunkPolicy::chunks_per_worker * workers);  // four one-item chunks each
  }
  p.record(0, 5'000'000);  // a chunk of no items measures nothing
  CHECK_FALSE(p.item_seconds());
  CHECK(p.next(1000, 2) == 1);
  ChunkPolicy q;
  q.record(10, -5);  // a clock that went back counts as no time: the 1 ns floor
  REQUIRE(q.item_seconds());
  CHECK(*q.item_seconds() == Approx(1e-9));
}

TEST_CASE("ChunkPolicy: an explicit chunksize is used as given, measured or not") {
  ChunkPolicy p(7);
  CHECK(p.fixed() == 7);
  CHECK(p.next(1, 4) == 7);  // the engine cuts at what is left (see the engine's test below)
  CHECK(p.next(1'000'000, 4) == 7);
  CHECK(p.next(std::nullopt, 4) == 7);
  CHECK(p.stream_window(2) == 7 * 2 * ChunkPolicy::chunks_per_worker);
  p.record(1000, 1000);  // nanosecond items
  CHECK(p.next(1'000'000, 4) == 7);
  // A stream still keeps ~10 ms of such items per worker ahead, up to the window's bound.
  CHECK(p.stream_window(2) == ChunkPolicy::max_stream_window);
}

TEST_CASE("ChunkPolicy: one item left, and more workers than items, make one-item chunks of slow items") {
  for (const std::int64_t ns : {std::int64_t{1'000'000}, std::int64_t{1'000'000'000}}) {  // 1 ms, 1 s
    INFO(ns << " ns per item");
    const ChunkPolicy p = measured(ns, 4);
    CHECK(p.next(1, 1) == 1);
    CHECK(p.next(1, 64) == 1);
    CHECK(p.next(3, 8) == 1);
    CHECK(p.next(0, 4) == 1);  // never zero, even asked about nothing
  }
  // One-second items never batch, whatever is left.
  CHECK(measured(1'000'000'000).next(1'000'000, 2) == 1);
  CHECK(measured(1'000'000'000).next(std::nullopt, 2) == 1);
}

TEST_CASE("ChunkPolicy: chunks shrink with what is left, to half a fair share, then to the tail's floor") {
  const ChunkPolicy p = measured(10'000);  // 10 us per item: 2 ms is ~200 items, 50 ms ~5000
  const std::size_t longest = p.next(std::nullopt, 4);
  CHECK(longest >= 4999);
  CHECK(longest <= 5000);
  CHECK(p.next(1'000'000, 4) == longest);  // plenty left: the longest chunk
  CHECK(p.next(40'000, 4) == 2500);        // a quarter of a fair share, between 2 ms and 50 ms
  // Under 2 ms a chunk, but no smaller than half a fair share (1000 / 4 / 2)...
  CHECK(p.next(1000, 4) == 125);
  // ...nor than the tail's floor (0.2 ms, ~20 items), whatever is left.
  const std::size_t floor = p.next(100, 4);
  CHECK(floor >= 20);
  CHECK(floor <= 21);
  CHECK(p.next(10, 4) == floor);
  CHECK(p.next(1, 4) == floor);
}

TEST_CASE("ChunkPolicy: the chunk size never grows as work runs out, and stays within its bounds") {
  for (const std::int64_t ns : {std::int64_t{1}, std::int64_t{300}, std::int64_t{10'000}, std::int64_t{1'000'000}}) {
    for (const std::size_t workers : {1, 2, 7}) {
      INFO(ns << " ns per item, " << workers << " workers");
      const ChunkPolicy p = measured(ns);
      std::size_t before = p.next(0, workers);
      bool monotonic = true, bounded = true;
      for (std::size_t left = 1; left <= 100'000; ++left) {
        const std::size_t n = p.next(left, workers);
        monotonic = monotonic && n >= before;
        bounded = bounded && n >= 1 && n <= ChunkPolicy::max_chunk_items;
        before = n;
      }
      CHECK(monotonic);
      CHECK(bounded);
    }
  }
}

TEST_CASE("ChunkPolicy: huge item counts give the largest chunk, and a bounded stream window") {
  const ChunkPolicy p = measured(1);  // nanosecond items: 50 ms is more than max_chunk_items
  for (const std::size_t workers : {1, 8, 1024}) {
    INFO(workers << " workers");
    CHECK(p.next(std::nullopt, workers) == ChunkPolicy::max_chunk_items);
    CHECK(p.next(std::size_t{1} << 40, workers) == ChunkPolicy::max_chunk_items);
    CHECK(p.next(SIZE_MAX / 2, workers) == ChunkPolicy::max_chunk_items);
    CHECK(p.next(SIZE_MAX - 8 * workers, workers) == ChunkPolicy::max_chunk_items);
    CHECK(p.stream_window(workers) == ChunkPolicy::max_stream_window);
  }
  // Measurements of very many items over very long times do not overflow the mean.
  ChunkPolicy q;
  for (int i = 0; i < 1000; ++i) q.record(std::size_t{1} << 40, INT64_MAX);
  REQUIRE(q.item_seconds());
  const double each = static_cast<double>(INT64_MAX) / static_cast<double>(std::size_t{1} << 40) * 1e-9;  // ~8.4 ms
  CHECK(*q.item_seconds() == Approx(each));
  CHECK(q.next(SIZE_MAX / 2, 4) == 5);  // 50 ms of such items
}

TEST_CASE("RecentItemTime follows a rise at once and a fall gradually, and ignores empty chunks") {
  mproc::detail::RecentItemTime t;
  CHECK_FALSE(t.item_seconds());
  t.record(0, 1'000'000);
  CHECK_FALSE(t.item_seconds());
  t.record(2, 2'000'000);  // 1 ms each
  CHECK(*t.item_seconds() == Approx(1e-3));
  t.record(1, 1'000);  // 1 us: a quarter of the way down
  CHECK(*t.item_seconds() == Approx(1e-3 + 0.25 * (1e-6 - 1e-3)));
  t.record(1, 10'000'000);  // 10 ms: at once
  CHECK(*t.item_seconds() == Approx(1e-2));
}

// ================================================================== DispatchEngine rules

namespace {

using mproc::detail::Chunk;
using mproc::detail::ChunkOutcome;
using mproc::detail::HeldChunks;
using mproc::detail::Job;

/// A job of int items that records what the engine hands it.
class RecordingJob : public Job {
 public:
  RecordingJob(std::size_t items, std::size_t chunksize) : Job(sizeof(int), chunksize) {
    Bytes bytes;
    for (std::size_t i = 0; i < items; ++i) mproc::encode_into(bytes, std::tuple<int>(static_cast<int>(i)));
    input.append(std::move(bytes), {}, items);
    expected_total = items;
    input_closed = true;
  }
  void deliver(std::size_t first, const ChunkOutcome& outcome) override {
    mproc::detail::for_each_outcome<int>(
        first, outcome,
        [&](std::size_t i, int v) {
          results[i] = v;
          ++outcomes[i];
        },
        [&](std::size_t i, std::exception_ptr e) { fail(i, e); });
  }
  void fail(std::size_t index, std::exception_ptr error) override {
    failed.push_back(index);
    errors[index] = error;
    ++outcomes[index];
  }
  void finish() override { finished = true; }
  void abandon(std::exception_ptr) override {}

  /// Whether every item got exactly one outcome, a result or an error.
  bool each_item_once() const {
    return outcomes.size() == input.size() &&
           std::all_of(outcomes.begin(), outcomes.end(), [](const auto& o) { return o.second == 1; });
  }

  std::map<std::size_t, int> results;
  std::vector<std::size_t> failed;  // in the order they failed
  std::map<std::size_t, std::exception_ptr> errors;
  std::map<std::size_t, int> outcomes;  // how many outcomes each item got
  bool finished = false;
};

/// The worker side's task: ten times its argument; a negative one throws.
int times_ten(int x) {
  if (x < 0) throw std::invalid_argument("negative " + std::to_string(x));
  return 10 * x;
}

/// A chunk as cut: first, count, attempts, orphaned.
using Cut = std::tuple<std::size_t, std::size_t, std::uint32_t, std::uint32_t>;

/// A worker as the engine sees it: the chunks it holds, in the order it got them.
struct FakeWorker {
  HeldChunks held;
  std::int64_t last_answer_ns = 0;
};

/// An engine with no transport and no thread: its rules, called as a transport would.
class BareEngine : public mproc::detail::DispatchEngine {
 public:
  using DispatchEngine::complete;
  using DispatchEngine::cut_chunk_locked;
  using DispatchEngine::Death;
  using DispatchEngine::DispatchEngine;
  using DispatchEngine::max_held_chunks;
  using DispatchEngine::wants_more_locked;

  std::shared_ptr<RecordingJob> submit(std::size_t items, std::size_t chunksize = 0) {
    auto job = std::make_shared<RecordingJob>(items, chunksize);
    submit(job);
    return job;
  }
  void submit(const std::shared_ptr<Job>& job) {
    std::lock_guard lock(mutex());
    submit_locked(job);
  }
  std::optional<Chunk> cut(std::size_t budget = SIZE_MAX) {
    std::lock_guard lock(mutex());
    return cut_chunk_locked(budget);
  }

  /// Hands worker w the next chunk; returns it (nothing if none waits).
  std::optional<Chunk> give(FakeWorker& w) {
    auto c = cut();
    if (c) w.held.push_back(*c);
    return c;
  }
  /// Worker w runs the chunk at its front (run_chunk, as a worker does, on the
  /// chunk's own argument bytes; memory: its limit) and its result frame arrives.
  void answer(FakeWorker& w, mproc::detail::MemoryGuard* memory = nullptr) {
    REQUIRE_FALSE(w.held.empty());
    const Chunk& c = w.held.front();
    Bytes payload;
    mproc::detail::run_chunk(times_ten, c.id, c.job->input.bytes(c.first, c.count), payload, nullptr, false, memory);
    const auto header = mproc::detail::make_frame_header(mproc::detail::FrameKind::result, c.id, payload.size());
    complete_front(w.held, w.last_answer_ns, mproc::detail::FrameView{header, payload.span()}, "a worker");
  }
  /// Worker w died (`death`) while running item `running->second` of the chunk with
  /// id `running->first`, or with no item running. The running item's error is the
  /// one the local engine gives (death_error), and the attempts it was asked about
  /// are recorded in `asked`.
  void kill(FakeWorker& w, const Death& death, std::optional<std::pair<std::uint64_t, std::size_t>> running) {
    std::optional<RunningItem> item;
    if (running) {
      item = RunningItem{running->first, running->second, [this, death](std::size_t index, std::uint32_t attempts) {
                           asked.emplace_back(index, attempts);
                           return death_error(index, attempts, death.what, death.signal, death.exit_code);
                         }};
    }
    lost(w.held, item, death);
  }
  /// Worker w answers for every chunk it holds.
  void answer_all(FakeWorker& w) {
    while (!w.held.empty()) answer(w);
  }
  /// Worker w left as it was told to, with what it held.
  void leave(FakeWorker& w) { lost(w.held, std::nullopt, std::nullopt); }

  /// Gives worker w the next chunks, until none is left or `n` were cut, and says
  /// what they were.
  std::vector<Cut> give_all(FakeWorker& w, std::size_t n = SIZE_MAX) {
    std::vector<Cut> out;
    while (out.size() < n) {
      const auto c = give(w);
      if (!c) break;
      out.emplace_back(c->first, c->count, c->attempts, c->orphaned);
    }
    return out;
  }
  /// Whether the job is finished, as the pool's thread would see it (then retired).
  bool retire(const std::shared_ptr<Job>& job) {
    std::lock_guard lock(mutex());
    return retire_awaited_locked(job);
  }
  bool has_queued_work() {
    std::lock_guard lock(mutex());
    return has_queued_work_locked();
  }

  std::vector<std::pair<std::size_t, std::uint32_t>> asked;  // (index, attempts) of each running item lost, in order

 protected:
  void start() override {}
  void hand_out_locked() override {}
  void wait_and_handle() override {}
  void stop(bool) override {}
  void wake() override {}
};

/// The outcome of chunk c as a worker makes it: every item's result is its index
/// times ten, and the chunk took ns_each nanoseconds an item.
struct WorkerOutcome {
  Bytes payload;
  ChunkOutcome parsed;
  WorkerOutcome(const Chunk& c, std::int64_t ns_each) {
    const mproc::detail::ChunkOutcomeHeader h{ns_each * static_cast<std::int64_t>(c.count),
                                              static_cast<std::uint32_t>(c.count),
                                              0,
                                              c.count * sizeof(int),
                                              0,
                                              0};
    payload.append(&h, sizeof h);
    for (std::size_t i = 0; i < c.count; ++i) mproc::encode_into(payload, static_cast<int>(10 * (c.first + i)));
    parsed = mproc::detail::parse_chunk_outcome(payload.span());
  }
};

Chunk held_chunk(const std::shared_ptr<Job>& job, double predicted_seconds) {
  return Chunk{0, job, 0, 1, 0, 0, predicted_seconds};
}

}  // namespace

TEST_CASE(
    "DispatchEngine: a call not measured yet goes out as one-item probes, one per worker, then in measured chunks") {
  BareEngine engine(3, 0);
  const auto job = engine.submit(100);
  std::vector<Chunk> probes;
  while (auto c = engine.cut()) probes.push_back(*c);
  REQUIRE(probes.size() == 3);  // one per worker, however many items wait
  for (std::size_t i = 0; i < probes.size(); ++i) {
    CHECK(probes[i].first == i);
    CHECK(probes[i].count == 1);
    CHECK(probes[i].predicted_seconds < 0);  // nothing known
  }
  CHECK(job->in_flight == 3);

  const WorkerOutcome first(probes[0], 10'000);  // 10 us an item
  engine.complete(probes[0], first.parsed);
  CHECK(job->results == std::map<std::size_t, int>{{0, 0}});
  CHECK(job->in_flight == 2);
  const auto next = engine.cut();
  REQUIRE(next);
  CHECK(next->first == 3);
  CHECK(next->count == job->chunking.next(97, 3));  // the policy's size, from the job's own measurement
  CHECK(next->count > 1);
  CHECK(next->predicted_seconds == Approx(1e-5 * static_cast<double>(next->count)));

  // Cut and answer everything: each item is delivered once and the job settles.
  std::vector<Chunk> out{probes[1], probes[2], *next};
  while (!out.empty()) {
    const Chunk c = out.back();
    out.pop_back();
    engine.complete(c, WorkerOutcome(c, 10'000).parsed);
    while (auto more = engine.cut()) {
      CHECK(more->count <= 100 - more->first);  // never past the job's end
      out.push_back(*more);
    }
  }
  CHECK(job->results.size() == 100);
  CHECK(job->results[99] == 990);
  CHECK(job->failed.empty());
  CHECK(job->settled == 100);
  CHECK(job->in_flight == 0);
}

TEST_CASE("DispatchEngine: an explicit chunksize needs no probes, and the last chunk holds what is left") {
  BareEngine engine(2, 0);
  const auto job = engine.submit(10, 4);
  std::vector<std::size_t> sizes;
  while (auto c = engine.cut()) sizes.push_back(c->count);
  CHECK(sizes == std::vector<std::size_t>{4, 4, 2});  // more chunks than workers, at once
  CHECK(job->in_flight == 3);

  const auto small = engine.submit(5, 4);
  const auto c = engine.cut(3);  // a worker with room for three items only
  REQUIRE(c);
  CHECK(c->job == small);
  CHECK(c->count == 3);
}

TEST_CASE("DispatchEngine: a measured job's chunks never run past its end, and an empty job gives none") {
  BareEngine engine(4, 0);
  (void)engine.submit(0);
  CHECK_FALSE(engine.cut());

  const auto job = engine.submit(2);
  auto probe = engine.cut();
  REQUIRE(probe);
  engine.complete(*probe, WorkerOutcome(*probe, 1).parsed);  // 1 ns an item: the policy wants huge chunks
  REQUIRE(job->chunking.next(1, 4) > 1);
  const auto last = engine.cut();
  REQUIRE(last);
  CHECK(last->first == 1);
  CHECK(last->count == 1);
  CHECK_FALSE(engine.cut());
}

TEST_CASE("DispatchEngine: a worker gets another chunk only while what it holds is known to be short") {
  BareEngine engine(2, 0);
  const auto unmeasured = engine.submit(10);
  const auto measured_job = engine.submit(10);
  measured_job->chunking.record(10, 10'000);  // 1 us an item
  const std::int64_t now = 0;  // the engine's current pass began at 0 (it never ran one)

  HeldChunks held;
  CHECK(engine.wants_more_locked(held, now));  // holds nothing
  held.push_back(held_chunk(unmeasured, -1));
  CHECK_FALSE(engine.wants_more_locked(held, now));  // a probe: nothing behind it
  held.clear();
  held.push_back(held_chunk(measured_job, -1));
  CHECK(engine.wants_more_locked(held, now));  // cut before, but its job is measured now
  held.clear();
  held.push_back(held_chunk(unmeasured, 0.5));
  CHECK(engine.wants_more_locked(held, now));  // a second chunk, to start right after the first

  // Beyond two: only while everything held is predicted, together under max_held_seconds...
  held.clear();
  held.push_back(held_chunk(measured_job, 0.0001));
  held.push_back(held_chunk(measured_job, 0.0001));
  CHECK(engine.wants_more_locked(held, now));
  held.push_back(held_chunk(measured_job, -1));
  CHECK_FALSE(engine.wants_more_locked(held, now));  // one chunk of unknown length
  held.clear();
  held.push_back(held_chunk(measured_job, 0.0006));
  held.push_back(held_chunk(measured_job, 0.0006));
  CHECK_FALSE(engine.wants_more_locked(held, now));  // 1.2 ms held
  // ...and the worker answered within that time before this pass.
  held.clear();
  held.push_back(held_chunk(measured_job, 0.0001));
  held.push_back(held_chunk(measured_job, 0.0001));
  CHECK(engine.wants_more_locked(held, now - 999'000));
  CHECK_FALSE(engine.wants_more_locked(held, now - 1'000'000));
  // ...and never more than max_held_chunks, however tiny.
  held.clear();
  for (std::size_t i = 0; i + 1 < BareEngine::max_held_chunks; ++i) held.push_back(held_chunk(measured_job, 1e-9));
  CHECK(engine.wants_more_locked(held, now));
  held.push_back(held_chunk(measured_job, 1e-9));
  CHECK_FALSE(engine.wants_more_locked(held, now));
  // What a chunk taken back or answered predicted leaves the total.
  held.clear();
  held.push_back(held_chunk(measured_job, 0.0009));
  held.push_back(held_chunk(measured_job, 0.0009));
  held.push_back(held_chunk(measured_job, 0.00005));
  CHECK_FALSE(engine.wants_more_locked(held, now));
  held.pop_front();
  CHECK(held.take_back().predicted_seconds == 0.00005);
  held.push_back(held_chunk(measured_job, 0.00005));
  CHECK(engine.wants_more_locked(held, now));  // 0.95 ms
}

// ================================================================== DispatchEngine loss and retry accounting

namespace {

const BareEngine::Death sigkill{"worker process 12 was killed by signal 9 (SIGKILL)", SIGKILL, std::nullopt};
const BareEngine::Death exit3{"worker process 13 exited with status 3", std::nullopt, 3};

/// The error e holds, if it is an E.
template <class E>
std::optional<E> error_as(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const E& x) {
    return x;
  } catch (...) {
  }
  return std::nullopt;
}

/// The results times_ten gives for items that are their own index.
std::map<std::size_t, int> times_ten_of(std::vector<std::size_t> items) {
  std::map<std::size_t, int> out;
  for (const std::size_t i : items) out[i] = 10 * static_cast<int>(i);
  return out;
}

/// Every item of the job has its one outcome (a result for those in `succeeded`, an
/// error for the others) and the job is finished; the pool would now retire it.
void check_finished(BareEngine& engine, const std::shared_ptr<RecordingJob>& job,
                    const std::vector<std::size_t>& succeeded) {
  CHECK(job->results == times_ten_of(succeeded));
  CHECK(job->each_item_once());
  CHECK(job->in_flight == 0);
  CHECK(engine.retire(job));
}

using Asked = std::vector<std::pair<std::size_t, std::uint32_t>>;

}  // namespace

TEST_CASE("DispatchEngine: a worker killed running an item fails that item alone with WorkerLost; the items before "
          "and after it in its chunk, and its other chunks, run again ahead of newer work") {
  BareEngine engine(2, 0);
  const auto job = engine.submit(10, 4);
  FakeWorker a, b;
  const auto first = engine.give(a);  // items 0-3
  REQUIRE(first);
  REQUIRE(engine.give(a));  // 4-7, not started
  REQUIRE(engine.give(b));  // 8-9
  const auto later = engine.submit(3, 3);
  engine.kill(a, sigkill, {{first->id, 2}});
  CHECK(a.held.empty());
  CHECK(engine.asked == Asked{{2, 0}});
  REQUIRE(job->failed == std::vector<std::size_t>{2});
  const auto lost = error_as<mproc::WorkerLost>(job->errors[2]);
  REQUIRE(lost);
  CHECK(std::string(lost->what()) == "mproc: worker process 12 was killed by signal 9 (SIGKILL) while running task 2");
  CHECK(lost->signal() == SIGKILL);
  CHECK_FALSE(lost->exit_code());
  CHECK(job->results.empty());
  CHECK(job->settled == 1);
  CHECK(job->in_flight == 1);  // b's chunk

  FakeWorker c;
  CHECK(engine.give_all(c) == std::vector<Cut>{{0, 2, 0, 0}, {3, 1, 0, 0}, {4, 4, 0, 0}, {0, 3, 0, 0}});
  CHECK(c.held.back().job == later);
  engine.answer_all(c);
  CHECK_FALSE(engine.retire(job));  // b's items are still out
  engine.answer(b);
  CHECK(job->failed == std::vector<std::size_t>{2});
  CHECK(job->settled == 10);
  check_finished(engine, job, {0, 1, 3, 4, 5, 6, 7, 8, 9});
  check_finished(engine, later, {0, 1, 2});
  CHECK_FALSE(engine.has_queued_work());
}

TEST_CASE("DispatchEngine: with retries a killed item runs again, each item counting its own deaths; once they are "
          "spent it fails with WorkerLost naming the attempt") {
  BareEngine engine(1, 2);
  const auto job = engine.submit(6, 3);
  FakeWorker w;
  const auto chunk = engine.give(w);  // 0-2
  REQUIRE(chunk);
  engine.kill(w, exit3, {{chunk->id, 1}});
  CHECK(job->failed.empty());
  CHECK(engine.give_all(w) == std::vector<Cut>{{0, 1, 0, 0}, {1, 1, 1, 0}, {2, 1, 0, 0}, {3, 3, 0, 0}});

  engine.answer(w);  // item 0
  engine.kill(w, exit3, {{w.held.front().id, 0}});  // item 1, its second death
  CHECK(engine.give_all(w) == std::vector<Cut>{{1, 1, 2, 0}, {2, 1, 0, 0}, {3, 3, 0, 0}});
  // A death in another chunk, behind two done but not reported: only item 4 is charged.
  engine.kill(w, sigkill, {{w.held.back().id, 1}});
  CHECK(engine.give_all(w) == std::vector<Cut>{{1, 1, 2, 0}, {2, 1, 0, 0}, {3, 1, 0, 0}, {4, 1, 1, 0}, {5, 1, 0, 0}});
  CHECK(job->failed.empty());

  engine.kill(w, exit3, {{w.held.front().id, 0}});  // item 1's third death: retries = 2 are spent
  CHECK(engine.asked == Asked{{1, 0}, {1, 1}, {4, 0}, {1, 2}});
  REQUIRE(job->failed == std::vector<std::size_t>{1});
  const auto lost = error_as<mproc::WorkerLost>(job->errors[1]);
  REQUIRE(lost);
  CHECK(std::string(lost->what()) == "mproc: worker process 13 exited with status 3 while running task 1 (attempt 3)");
  CHECK(lost->exit_code() == 3);
  CHECK_FALSE(lost->signal());
  CHECK(engine.give_all(w) == std::vector<Cut>{{2, 1, 0, 0}, {3, 1, 0, 0}, {4, 1, 1, 0}, {5, 1, 0, 0}});
  engine.answer_all(w);
  check_finished(engine, job, {0, 2, 3, 4, 5});
}

TEST_CASE("DispatchEngine: a killed worker's chunks of several jobs, done but not yet reported or not started, go "
          "back in the order it held them, uncharged") {
  BareEngine engine(2, 1);
  const auto a = engine.submit(4, 2);
  const auto b = engine.submit(4, 2);
  FakeWorker w, other;
  REQUIRE(engine.give(w));  // a 0-1: ran, its outcome never came
  REQUIRE(engine.give(other));  // a 2-3
  const auto running = engine.give(w);  // b 0-1
  REQUIRE(running);
  REQUIRE(engine.give(w));  // b 2-3, not started
  engine.kill(w, sigkill, {{running->id, 1}});
  CHECK(a->failed.empty());
  CHECK(b->failed.empty());
  CHECK(a->in_flight == 1);
  CHECK(b->in_flight == 0);
  CHECK(engine.give_all(other) == std::vector<Cut>{{0, 2, 0, 0}, {0, 1, 0, 0}, {1, 1, 1, 0}, {2, 2, 0, 0}});
  std::vector<const Job*> jobs;
  for (const Chunk& c : other.held) jobs.push_back(c.job.get());
  CHECK(jobs == std::vector<const Job*>{a.get(), a.get(), b.get(), b.get(), b.get()});
  engine.answer_all(other);
  check_finished(engine, a, {0, 1, 2, 3});
  check_finished(engine, b, {0, 1, 2, 3});
}

TEST_CASE("DispatchEngine: a death with no item running charges the first chunk held, item by item; an item charged "
          "again fails with WorkerLost, and neither a death that blames an item nor a worker leaving as told "
          "charges the others") {
  BareEngine engine(1, 0);
  const auto job = engine.submit(8, 4);
  FakeWorker w;
  CHECK(engine.give_all(w).size() == 2);  // 0-3, 4-7
  engine.kill(w, sigkill, std::nullopt);
  CHECK(job->failed.empty());
  CHECK(job->in_flight == 0);
  CHECK(engine.asked.empty());
  CHECK(engine.give_all(w) == std::vector<Cut>{{0, 1, 0, 1}, {1, 1, 0, 1}, {2, 1, 0, 1}, {3, 1, 0, 1}, {4, 4, 0, 0}});

  engine.kill(w, sigkill, std::nullopt);  // item 0 at the front again: the second such death in a row
  REQUIRE(job->failed == std::vector<std::size_t>{0});
  const auto lost = error_as<mproc::WorkerLost>(job->errors[0]);
  REQUIRE(lost);
  CHECK(std::string(lost->what()) ==
        "mproc: worker process 12 was killed by signal 9 (SIGKILL) holding task 0 with no task running (after "
        "running it, before its result came?), 2 times in a row; the task fails");
  CHECK(lost->signal() == SIGKILL);
  CHECK(engine.give_all(w) == std::vector<Cut>{{1, 1, 0, 1}, {2, 1, 0, 1}, {3, 1, 0, 1}, {4, 4, 0, 0}});

  engine.kill(w, sigkill, {{w.held.back().id, 0}});  // item 4 is blamed: 1-3 stay charged once
  CHECK(job->failed == std::vector<std::size_t>{0, 4});
  CHECK(engine.give_all(w) == std::vector<Cut>{{1, 1, 0, 1}, {2, 1, 0, 1}, {3, 1, 0, 1}, {5, 3, 0, 0}});
  engine.leave(w);
  CHECK(engine.give_all(w) == std::vector<Cut>{{1, 1, 0, 1}, {2, 1, 0, 1}, {3, 1, 0, 1}, {5, 3, 0, 0}});
  engine.answer_all(w);
  CHECK(job->failed == std::vector<std::size_t>{0, 4});
  check_finished(engine, job, {1, 2, 3, 5, 6, 7});
}

TEST_CASE("DispatchEngine: with retries, an item survives that many more deaths with no item running before it fails") {
  BareEngine engine(1, 1);
  const auto job = engine.submit(2, 2);
  FakeWorker w;
  REQUIRE(engine.give(w));
  engine.kill(w, exit3, std::nullopt);
  CHECK(engine.give_all(w) == std::vector<Cut>{{0, 1, 0, 1}, {1, 1, 0, 1}});
  engine.kill(w, exit3, std::nullopt);
  CHECK(job->failed.empty());
  CHECK(engine.give_all(w) == std::vector<Cut>{{0, 1, 0, 2}, {1, 1, 0, 1}});
  engine.kill(w, exit3, std::nullopt);
  REQUIRE(job->failed == std::vector<std::size_t>{0});
  const auto lost = error_as<mproc::WorkerLost>(job->errors[0]);
  REQUIRE(lost);
  CHECK_THAT(lost->what(),
             Catch::Contains("exited with status 3 holding task 0") && Catch::Contains("3 times in a row"));
  CHECK(lost->exit_code() == 3);
  CHECK(engine.give_all(w) == std::vector<Cut>{{1, 1, 0, 1}});
  engine.answer(w);
  check_finished(engine, job, {1});
}

TEST_CASE("DispatchEngine: a chunk stopped early by the memory limit delivers what ran and puts the rest back first") {
  BareEngine engine(1, 0);
  const auto job = engine.submit(4, 4);
  FakeWorker w;
  REQUIRE(engine.give(w));
  const auto later = engine.submit(1, 1);
  mproc::detail::MemoryGuard over(1);  // one byte: over after the first item
  engine.answer(w, &over);
  CHECK(job->results == times_ten_of({0}));
  CHECK(job->settled == 1);
  CHECK(job->in_flight == 0);
  CHECK(engine.give_all(w) == std::vector<Cut>{{1, 3, 0, 0}, {0, 1, 0, 0}});
  CHECK(w.held.back().job == later);
  engine.answer_all(w);
  check_finished(engine, job, {0, 1, 2, 3});
  check_finished(engine, later, {0});
}

TEST_CASE("DispatchEngine: a map whose workers die finishes once, when every item has its outcome: its results in "
          "input order, or its first failure in input order, whichever came first") {
  using State = mproc::detail::ResultState<std::vector<int>>;
  const auto map_job = [](const std::vector<int>& values, std::size_t chunksize) {
    auto state = std::make_shared<State>();
    auto job = std::make_shared<mproc::detail::CollectJob<int>>(mproc::detail::fixed_encoded_size<std::tuple<int>>(),
                                                                chunksize, values.size(), false, state);
    Bytes bytes;
    for (const int v : values) mproc::encode_into(bytes, std::tuple<int>(v));
    job->input.append(std::move(bytes), {}, values.size());
    job->expected_total = values.size();
    job->input_closed = true;
    return std::pair{job, state};
  };
  BareEngine engine(2, 0);
  const auto [bad, bad_result] = map_job({0, 1, 2, 3, 4, 5, -6, 7}, 4);
  const auto [good, good_result] = map_job({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 3);
  engine.submit(bad);
  engine.submit(good);
  FakeWorker w1, w2, w3;
  const auto killed = engine.give(w1);  // bad 0-3
  REQUIRE(killed);
  CHECK(engine.give_all(w2).size() == 5);  // bad 4-7, then good's four chunks

  engine.answer(w2);  // bad 4-7: task 6 threw, the first failure to arrive
  engine.kill(w1, sigkill, {{killed->id, 1}});  // task 1: an earlier one in input order
  engine.kill(w2, exit3, std::nullopt);  // good's chunks: the first charged, all run again
  CHECK_FALSE(engine.retire(bad));
  CHECK_FALSE(engine.retire(good));
  CHECK(engine.give_all(w3).size() == 3 + 3 + 2);  // good 0, 1, 2 one by one, 3-5, 6-8, 9; bad 0, 2-3
  engine.answer_all(w3);

  REQUIRE(engine.retire(good));
  CHECK_FALSE(engine.retire(good));  // retired once
  good->finish();
  REQUIRE(good_result->ready());
  CHECK(good_result->value() == std::vector<int>{0, 10, 20, 30, 40, 50, 60, 70, 80, 90});

  REQUIRE(engine.retire(bad));
  bad->finish();
  REQUIRE(bad_result->ready());
  CHECK_THROWS_WITH(bad_result->value(), Catch::Contains("while running task 1"));
  CHECK_THROWS_AS(bad_result->value(), mproc::WorkerLost);
}

TEST_CASE("DispatchEngine: what a killed worker held of a cancelled job is dropped, not run again, and what it "
          "answered for it is not delivered") {
  BareEngine engine(1, 1);
  const auto job = engine.submit(8, 2);
  FakeWorker w;
  CHECK(engine.give_all(w, 3).size() == 3);  // 0-1, 2-3, 4-5
  const auto other = engine.submit(2, 2);
  engine.cancel(job);
  engine.answer(w);  // 0-1 ran, but nobody wants them now
  CHECK(job->outcomes.empty());
  CHECK(job->in_flight == 2);
  engine.kill(w, sigkill, {{w.held.front().id, 1}});  // task 3: to run again, had its job not left
  CHECK(job->in_flight == 0);
  CHECK(engine.give_all(w) == std::vector<Cut>{{0, 2, 0, 0}});  // only the other job's
  CHECK(w.held.front().job == other);
  engine.answer(w);
  CHECK(job->outcomes.empty());
  CHECK_FALSE(engine.has_queued_work());
  check_finished(engine, other, {0, 1});
}

// ================================================================== chunk outcomes

namespace {

/// What for_each_outcome reported: a value or an error message per item index.
template <class R>
struct Walked {
  std::map<std::size_t, R> values;
  std::map<std::size_t, std::string> errors;
  std::size_t calls = 0;
};

template <class R>
Walked<R> walk(std::size_t first, const ChunkOutcome& outcome) {
  Walked<R> w;
  mproc::detail::for_each_outcome<R>(
      first, outcome,
      [&](std::size_t i, R&& v) {
        ++w.calls;
        w.values.emplace(i, std::move(v));
      },
      [&](std::size_t i, std::exception_ptr e) {
        ++w.calls;
        try {
          std::rethrow_exception(e);
        } catch (const ProtocolError& p) {
          w.errors[i] = std::string("ProtocolError: ") + p.what();
        } catch (const mproc::RemoteError& r) {
          w.errors[i] = r.type_name() + ": " + r.message();
        }
      });
  return w;
}

/// An outcome payload built field by field, to corrupt.
Bytes outcome_bytes(mproc::detail::ChunkOutcomeHeader h, const Bytes& results,
                    const std::vector<std::pair<std::uint32_t, std::string>>& errors) {
  Bytes out;
  mproc::detail::Writer w(out);
  w.pod(h);
  w.raw(results.data(), results.size());
  for (const auto& [item, message] : errors) {
    w.pod(item);
    mproc::detail::encode_value(w, std::string("E"));
    mproc::detail::encode_value(w, message);
  }
  return out;
}

/// run_chunk's outcome for items 0..9 of F(int) -> string, every third one throwing.
Bytes sample_outcome() {
  auto f = [](int x) -> std::string {
    if (x % 3 == 1) throw std::invalid_argument("bad " + std::to_string(x));
    return std::string(static_cast<std::size_t>(x), 'a');
  };
  Bytes items;
  for (int i = 0; i < 10; ++i) mproc::encode_into(items, std::tuple<int>(i));
  Bytes out;
  mproc::detail::run_chunk(f, 7, items.span(), out, nullptr, false);
  return out;
}

struct RecordingSink {
  std::vector<std::pair<std::size_t, std::uint32_t>> delivered;  // first, count
  std::vector<std::size_t> failed;
  void deliver(std::size_t first, const ChunkOutcome& o) { delivered.emplace_back(first, o.header.count); }
  void fail(std::size_t index, std::exception_ptr e) {
    CHECK_THROWS_AS(std::rethrow_exception(e), ProtocolError);
    failed.push_back(index);
  }
};

}  // namespace

TEST_CASE("A chunk outcome goes from run_chunk through parsing to each item, results and errors in item order") {
  const Bytes payload = sample_outcome();
  const ChunkOutcome o = mproc::detail::parse_chunk_outcome(payload.span());
  CHECK(o.header.count == 10);
  CHECK(o.header.error_count == 3);
  CHECK(o.header.elapsed_ns >= 0);
  CHECK_FALSE(o.stopped_early());
  REQUIRE(o.errors.size() == 3);
  CHECK(o.errors[0].first == 1);
  CHECK(o.errors[2].first == 7);

  const auto w = walk<std::string>(100, o);
  CHECK(w.calls == 10);  // exactly one outcome per item
  CHECK(w.values.size() == 7);
  CHECK(w.values.at(100).empty());
  CHECK(w.values.at(109) == std::string(9, 'a'));
  CHECK(w.errors == std::map<std::size_t, std::string>{{101, "std::invalid_argument: bad 1"},
                                                       {104, "std::invalid_argument: bad 4"},
                                                       {107, "std::invalid_argument: bad 7"}});
}

TEST_CASE("A chunk whose third argument tuple does not decode ends there, and the items after it fail") {
  auto f = [](const std::string& s) { return s.size(); };
  Bytes items;
  mproc::encode_into(items, std::tuple<std::string>("a"));
  mproc::encode_into(items, std::tuple<std::string>("bb"));
  const Bytes cut = mproc::encode(std::tuple<std::string>("a string cut short"));
  items.append(cut.data(), cut.size() - 5);
  Bytes out;
  mproc::detail::run_chunk(f, 1, items.span(), out, nullptr, false);
  const ChunkOutcome o = mproc::detail::parse_chunk_outcome(out.span());
  CHECK(o.header.count == 3);
  REQUIRE(o.errors.size() == 1);
  CHECK(o.errors[0].first == 2);
  CHECK(o.errors[0].second.type == "mproc::ProtocolError");
  const auto w = walk<std::size_t>(0, o);
  CHECK(w.values == std::map<std::size_t, std::size_t>{{0, 1}, {1, 2}});

  // The chunk held five items: the two never reached fail with ProtocolError.
  RecordingSink sink;
  mproc::detail::deliver_chunk(sink, 20, 5, o);
  CHECK(sink.delivered == std::vector<std::pair<std::size_t, std::uint32_t>>{{20, 3}});
  CHECK(sink.failed == std::vector<std::size_t>{23, 24});
}

TEST_CASE("Every truncation of a chunk outcome is a ProtocolError") {
  auto identity = [](int x) { return x; };
  Bytes without_errors;
  mproc::detail::run_chunk(identity, 1, mproc::encode(std::tuple<int>(5)).span(), without_errors, nullptr, false);
  const Bytes with_errors = sample_outcome();
  for (const Bytes* outcome : std::vector<const Bytes*>{&with_errors, &without_errors}) {
    const Bytes& payload = *outcome;
    REQUIRE_NOTHROW(mproc::detail::parse_chunk_outcome(payload.span()));
    for (std::size_t n = 0; n < payload.size(); ++n) {
      INFO("the first " << n << " of " << payload.size() << " bytes");
      CHECK_THROWS_AS(mproc::detail::parse_chunk_outcome(payload.span().first(n)), ProtocolError);
    }
  }
}

TEST_CASE("A chunk outcome with a bad field, a bad error list or trailing bytes is a ProtocolError") {
  using Header = mproc::detail::ChunkOutcomeHeader;
  const Bytes results = mproc::encode(std::tuple<int, int>(1, 2));  // items 0 and 2
  const Header good{5, 3, 1, results.size(), 0, 0};
  const auto parses = [](const Bytes& b) { return mproc::detail::parse_chunk_outcome(b.span()); };
  REQUIRE(parses(outcome_bytes(good, results, {{1, "x"}})).errors.size() == 1);

  Header h = good;
  h.flags = 2;  // unknown
  CHECK_THROWS_AS(parses(outcome_bytes(h, results, {{1, "x"}})), ProtocolError);
  h = good;
  h.reserved = 1;
  CHECK_THROWS_AS(parses(outcome_bytes(h, results, {{1, "x"}})), ProtocolError);
  h = good;
  h.error_count = 4;  // more errors than items
  CHECK_THROWS_AS(parses(outcome_bytes(h, results, {{0, "a"}, {1, "b"}, {2, "c"}, {3, "d"}})), ProtocolError);
  h = good;
  h.results_bytes = results.size() + 100;  // past the payload
  CHECK_THROWS_AS(parses(outcome_bytes(h, results, {{1, "x"}})), ProtocolError);
  h = good;
  h.results_bytes = UINT64_MAX;
  CHECK_THROWS_AS(parses(outcome_bytes(h, results, {{1, "x"}})), ProtocolError);
  CHECK_THROWS_AS(parses(outcome_bytes(good, results, {{3, "x"}})), ProtocolError);  // item past the count
  h = good;
  h.error_count = 2;
  CHECK_THROWS_AS(parses(outcome_bytes(h, results, {{1, "x"}, {1, "y"}})), ProtocolError);  // twice
  CHECK_THROWS_AS(parses(outcome_bytes(h, results, {{2, "x"}, {1, "y"}})), ProtocolError);  // out of order
  Bytes trailing = outcome_bytes(good, results, {{1, "x"}});
  const std::byte extra{0};
  trailing.append(&extra, 1);
  CHECK_THROWS_AS(parses(trailing), ProtocolError);

  // Stopped early: only after at least one item.
  h = good;
  h.flags = mproc::detail::outcome_flag_stopped_early;
  CHECK(parses(outcome_bytes(h, results, {{1, "x"}})).stopped_early());
  const Header none_run{0, 0, 0, 0, mproc::detail::outcome_flag_stopped_early, 0};
  CHECK_THROWS_AS(parses(outcome_bytes(none_run, {}, {})), ProtocolError);
}

TEST_CASE("A result that does not decode fails its item; the ones after it decode if its end is known") {
  using Header = mproc::detail::ChunkOutcomeHeader;
  SECTION("fixed-size results cut short: the item without its bytes fails") {
    const Bytes results = mproc::encode(std::tuple<int, int>(10, 11));
    const Bytes payload = outcome_bytes(Header{0, 3, 0, results.size(), 0, 0}, results, {});
    const auto w = walk<int>(0, mproc::detail::parse_chunk_outcome(payload.span()));
    CHECK(w.calls == 3);
    CHECK(w.values == std::map<std::size_t, int>{{0, 10}, {1, 11}});
    REQUIRE(w.errors.count(2) == 1);
    CHECK_THAT(w.errors.at(2), Catch::StartsWith("ProtocolError") && Catch::Contains("result of task 2"));
  }
  SECTION("cereal results carry their length: the ones after a bad one still decode") {
    Bytes results;
    for (const int v : {1, -2, 3}) mproc::encode_into(results, mproc_test::CerealPicky{v});
    const Bytes payload = outcome_bytes(Header{0, 4, 1, results.size(), 0, 0}, results, {{2, "boom"}});
    const auto w = walk<mproc_test::CerealPicky>(50, mproc::detail::parse_chunk_outcome(payload.span()));
    CHECK(w.calls == 4);
    REQUIRE(w.values.size() == 2);
    CHECK(w.values.at(50).value == 1);
    CHECK(w.values.at(53).value == 3);
    CHECK_THAT(w.errors.at(51), Catch::StartsWith("ProtocolError") && Catch::Contains("negative"));
    CHECK(w.errors.at(52) == "E: boom");
  }
  SECTION("results whose end is not known: the ones after a bad one fail too") {
    Bytes results;
    mproc::encode_into(results, std::string("x"));
    mproc::detail::Writer w(results);
    w.varint(1000);  // a string of 1000 bytes, with 2 there
    w.raw("ab", 2);
    const Bytes payload = outcome_bytes(Header{0, 4, 0, results.size(), 0, 0}, results, {});
    const auto walked = walk<std::string>(0, mproc::detail::parse_chunk_outcome(payload.span()));
    CHECK(walked.calls == 4);
    CHECK(walked.values == std::map<std::size_t, std::string>{{0, "x"}});
    CHECK_THAT(walked.errors.at(1), Catch::Contains("cannot decode the result of task 1"));
    CHECK_THAT(walked.errors.at(2), Catch::Contains("came after task 1's"));
    CHECK_THAT(walked.errors.at(3), Catch::Contains("came after task 1's"));
  }
}

namespace {

/// serve_chunks' transport for a test: the chunks to hand out, and what the loop sent.
struct FakeTransport {
  std::deque<Bytes> tasks;  // each one chunk's encoded argument tuples
  bool stay_after_init_failure = false;
  bool ready = false;
  std::optional<Bytes> init_failed;
  std::vector<std::pair<mproc::detail::FrameHeader, Bytes>> results;  // header, outcome
  mproc::detail::WorkerSlot running_slot;
  std::uint64_t next_id = 40;
  Bytes current;

  bool send_ready() { return ready = true; }
  bool send_init_failed(std::span<const std::byte> payload) {
    init_failed.emplace();
    init_failed->append(payload.data(), payload.size());
    return stay_after_init_failure;
  }
  std::optional<mproc::detail::TaskView> receive() {
    if (tasks.empty()) return std::nullopt;
    current = std::move(tasks.front());
    tasks.pop_front();
    return mproc::detail::TaskView{next_id++, current.span()};
  }
  mproc::detail::WorkerSlot* slot() { return &running_slot; }
  bool timed() const { return false; }
  mproc::detail::MemoryGuard* memory() const { return nullptr; }
  bool send_result(const mproc::detail::FrameHeader& h, Bytes& frame) {
    REQUIRE(frame.size() >= mproc::detail::frame_header_size);
    Bytes outcome;
    outcome.append(frame.data() + mproc::detail::frame_header_size, frame.size() - mproc::detail::frame_header_size);
    results.emplace_back(h, std::move(outcome));
    return true;
  }
};

Bytes int_items(std::initializer_list<int> xs) {
  Bytes items;
  for (const int x : xs) mproc::encode_into(items, std::tuple<int>(x));
  return items;
}

}  // namespace

TEST_CASE("The worker loop answers each chunk it receives with one result frame, in order, then stops") {
  auto f = [](int x) {
    if (x < 0) throw std::invalid_argument("negative");
    return x * 10;
  };
  FakeTransport t;
  t.tasks.push_back(int_items({1, 2, 3}));
  t.tasks.push_back(int_items({-1, 5}));
  CHECK(mproc::detail::serve_chunks(f, {}, t) == 0);
  CHECK(t.ready);
  CHECK_FALSE(t.init_failed);
  REQUIRE(t.results.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& [h, payload] = t.results[i];
    CHECK(h.kind == mproc::detail::FrameKind::result);
    CHECK(h.id == 40 + i);
    CHECK(h.size == payload.size());
    CHECK(h.flags == 0);
  }
  const auto first = walk<int>(0, mproc::detail::parse_chunk_outcome(t.results[0].second.span()));
  CHECK(first.values == std::map<std::size_t, int>{{0, 10}, {1, 20}, {2, 30}});
  const auto second = walk<int>(3, mproc::detail::parse_chunk_outcome(t.results[1].second.span()));
  CHECK(second.values == std::map<std::size_t, int>{{4, 50}});
  CHECK(second.errors == std::map<std::size_t, std::string>{{3, "std::invalid_argument: negative"}});
  CHECK(t.running_slot.running.load() == 0);  // no item posted as running once the chunk ended
}

TEST_CASE("A worker whose initializer threw says so, runs nothing, and exits with 1") {
  auto f = [](int x) { return x; };
  const std::function<void()> initializer = [] { throw std::runtime_error("no model"); };
  FakeTransport t;
  t.tasks.push_back(int_items({1}));
  CHECK(mproc::detail::serve_chunks(f, initializer, t) == 1);  // a local worker leaves at once
  CHECK_FALSE(t.ready);
  CHECK(t.results.empty());
  REQUIRE(t.init_failed);
  const auto error = mproc::detail::initializer_error(t.init_failed->span());
  CHECK_THROWS_AS(std::rethrow_exception(error), mproc::RemoteError);
  CHECK_THROWS_WITH(std::rethrow_exception(error), Catch::Contains("no model"));

  FakeTransport staying;  // an MPI rank stays to answer the master's stop...
  staying.stay_after_init_failure = true;
  CHECK(mproc::detail::serve_chunks(f, initializer, staying) == 1);
  staying.tasks.push_back(int_items({1}));  // ...and a task instead is a protocol error
  CHECK_THROWS_AS(mproc::detail::serve_chunks(f, initializer, staying), ProtocolError);
  CHECK(staying.results.empty());
}

TEST_CASE("A frame whose payload is in a lane has no payload bytes in the stream") {
  using mproc::detail::FrameKind;
  const auto lane =
      mproc::detail::make_frame_header(FrameKind::result, 1, std::uint64_t{1} << 30, mproc::detail::frame_flag_in_lane);
  const auto next = mproc::detail::make_frame_header(FrameKind::result, 2, 3);
  mproc::detail::FrameAssembler in;
  auto space = in.prepare(2 * sizeof lane + 3);
  std::memcpy(space.data(), &lane, sizeof lane);
  std::memcpy(space.data() + sizeof lane, &next, sizeof next);
  std::memcpy(space.data() + 2 * sizeof lane, "abc", 3);
  in.commit(2 * sizeof lane + 3);
  const auto a = in.next();
  REQUIRE(a);
  CHECK(a->header.id == 1);
  CHECK(a->header.size == std::uint64_t{1} << 30);  // its length, for the lane's reader
  CHECK(a->payload.empty());
  const auto b = in.next();
  REQUIRE(b);
  CHECK(b->header.id == 2);
  CHECK(std::string(reinterpret_cast<const char*>(b->payload.data()), b->payload.size()) == "abc");
  CHECK_FALSE(in.next());
  CHECK(in.unread() == 0);
}

// ================================================================== SegmentAllocator

TEST_CASE("SegmentAllocator: a seeded run of allocate, extend and deallocate keeps blocks intact and apart, "
          "and reuses what was freed") {
  using mproc::detail::SegmentAllocator;
  constexpr std::size_t reserve = std::size_t{1} << 20;
  constexpr std::uint64_t live_cap = 128 << 10;  // far less than the segment: room comes from reuse
  auto seg = mproc::detail::Segment::create(mproc::detail::SegmentKind::manager, 64 << 10, reserve);
  SegmentAllocator::format(*seg);
  SegmentAllocator alloc(*seg);
  const auto* state = seg->at<mproc::detail::AllocatorState>(mproc::detail::allocator_offset);

  struct Block {
    std::uint64_t offset;
    std::uint64_t size;
    unsigned char fill;
  };
  std::vector<Block> live;
  std::uint64_t live_total = 0;
  std::uint64_t ever_allocated = 0;
  std::size_t extended = 0, refused = 0;
  const auto bytes_of = [&](const Block& b) { return seg->at<unsigned char>(b.offset); };
  const auto intact = [&](const Block& b, std::uint64_t n) {
    return std::all_of(bytes_of(b), bytes_of(b) + n, [&](unsigned char c) { return c == b.fill; });
  };
  // Every live block holds its bytes, lies in the heap, and leaves room for the next one's header.
  const auto check_all = [&] {
    std::vector<Block> sorted = live;
    std::sort(sorted.begin(), sorted.end(), [](const Block& a, const Block& b) { return a.offset < b.offset; });
    bool ok = true;
    for (std::size_t i = 0; i < sorted.size(); ++i) {
      const Block& b = sorted[i];
      ok = ok && intact(b, b.size) && alloc.plausible(b.offset, b.size) && b.offset + b.size <= state->top;
      if (i + 1 < sorted.size())
        ok = ok && b.offset + b.size + sizeof(mproc::detail::BlockHeader) <= sorted[i + 1].offset;
    }
    return ok && alloc.live_bytes() >= live_total;
  };

  // A freed block goes to the next request of its size.
  const std::uint64_t first = alloc.allocate(200, "a");
  alloc.deallocate(first);
  CHECK(alloc.allocate(200, "again") == first);
  alloc.deallocate(first);

  std::mt19937_64 rng(14);
  const auto below = [&](std::uint64_t n) { return rng() % n; };
  for (int step = 0; step < 20000; ++step) {
    const std::uint64_t op = below(10);
    if (live.empty() || (op < 4 && live_total < live_cap)) {
      const std::uint64_t size = 1 + below(op == 0 ? 8192 : 256);
      const std::uint64_t offset = alloc.allocate(size, "a test block");  // SharedMemoryFull fails the test
      REQUIRE(offset % 16 == 0);
      REQUIRE(offset >= mproc::detail::heap_begin + sizeof(mproc::detail::BlockHeader));
      live.push_back({offset, size, static_cast<unsigned char>(step)});
      std::memset(bytes_of(live.back()), live.back().fill, size);
      live_total += size;
      ever_allocated += size;
    } else if (op < 7) {
      const std::size_t i = below(live.size());
      REQUIRE(intact(live[i], live[i].size));
      alloc.deallocate(live[i].offset);
      CHECK_FALSE(alloc.plausible(live[i].offset, 1));
      live_total -= live[i].size;
      live[i] = live.back();
      live.pop_back();
    } else {
      Block& b = live[below(live.size())];
      const std::uint64_t size = b.size + 1 + below(op == 9 ? 4096 : 64);
      if (alloc.extend(b.offset, size)) {
        REQUIRE(intact(b, b.size));  // what it held stays
        std::memset(bytes_of(b) + b.size, b.fill, size - b.size);
        live_total += size - b.size;
        ever_allocated += size - b.size;
        b.size = size;
        ++extended;
      } else {
        ++refused;
      }
    }
    if (step % 64 == 0) REQUIRE(check_all());
  }
  CHECK(check_all());
  CHECK(ever_allocated > 4 * reserve);  // only reuse made room for all of it
  CHECK(extended > 100);  // both outcomes of extend were exercised
  CHECK(refused > 100);

  // Once everything is freed, the free neighbours merge into blocks as big as the heap allows.
  for (const Block& b : live) alloc.deallocate(b.offset);
  CHECK(alloc.live_bytes() == 0);
  const std::uint64_t big = alloc.allocate(256 << 10, "a big block");
  CHECK(big + (256 << 10) <= reserve);
  const std::uint64_t big2 = alloc.allocate(256 << 10, "another");
  CHECK(std::max(big, big2) >= std::min(big, big2) + (256 << 10) + sizeof(mproc::detail::BlockHeader));
}

// ================================================================== Deadline

TEST_CASE("Deadline: forever, no wait and an instant are three different waits") {
  using mproc::detail::Deadline;
  using std::chrono::steady_clock;
  CHECK(Deadline::forever().is_forever());
  CHECK_FALSE(Deadline::forever().is_no_wait());
  CHECK(Deadline::no_wait().is_no_wait());
  CHECK_FALSE(Deadline::no_wait().is_forever());
  CHECK(Deadline::no_wait().left() == steady_clock::duration::zero());
  // A zero timeout still looks once (an instant, now); it is not no_wait.
  const auto before = steady_clock::now();
  const Deadline now = Deadline::after(std::chrono::seconds(0));
  CHECK_FALSE(now.is_no_wait());
  CHECK_FALSE(now.is_forever());
  CHECK(before <= now.when());
  CHECK(now.left() == steady_clock::duration::zero());
  // monotonic_ns() and steady_clock count the same instants; INT64_MAX is forever.
  CHECK(Deadline::at_ns(INT64_MAX).is_forever());
  const std::int64_t ns = mproc::detail::monotonic_ns();
  CHECK(Deadline::at_ns(ns).when().time_since_epoch() == std::chrono::nanoseconds(ns));
  // A deadline on another clock is the same time away on the monotonic one.
  const Deadline hour = Deadline::until(std::chrono::system_clock::now() + std::chrono::hours(1));
  CHECK(hour.left() > std::chrono::minutes(59));
  CHECK(hour.left() <= std::chrono::hours(1));
  CHECK(Deadline::until(steady_clock::time_point::max()).is_forever());
  CHECK(Deadline::at(steady_clock::time_point::max()).is_forever());
}

// ================================================================== SharedRing

namespace {

using mproc::detail::Deadline;
using mproc::detail::SharedRing;

/// Runs an action at a named fault point of the ring, in this process, while the
/// operation that reached it is half done. Restores the hook on exit.
class Interleave {
 public:
  Interleave(const char* point, std::function<void()> action) {
    point_ = point;
    action_ = std::move(action);
    runs_ = 0;
    mproc::detail::fault_hook.store(&reached);
  }
  ~Interleave() {
    mproc::detail::fault_hook.store(nullptr);
    action_ = nullptr;
  }
  Interleave(const Interleave&) = delete;
  Interleave& operator=(const Interleave&) = delete;
  /// How many times the action ran (once at most).
  static int runs() { return runs_; }

 private:
  static void reached(const char* where) {
    if (std::strcmp(where, point_) != 0 || !action_) return;
    auto action = std::move(action_);  // once: the action may reach the point again
    action_ = nullptr;
    ++runs_;
    action();
  }
  static inline const char* point_ = nullptr;
  static inline std::function<void()> action_;
  static inline int runs_ = 0;
};

Bytes item(std::int64_t v) { return mproc::encode(v); }

bool put(SharedRing& ring, std::int64_t v) { return ring.put(item(v).span(), Deadline::no_wait()); }

/// The next item, or nothing if the ring has none now.
std::optional<std::int64_t> get(SharedRing& ring) {
  std::optional<std::int64_t> out;
  (void)ring.get(Deadline::no_wait(), [&](std::span<const std::byte> p) { out = mproc::decode<std::int64_t>(p); });
  return out;
}

/// Takes everything the ring holds, in order.
std::vector<std::int64_t> drain(SharedRing& ring) {
  std::vector<std::int64_t> out;
  while (auto v = get(ring)) out.push_back(*v);
  return out;
}

/// A ring found empty takes two items from `v` on, counts them, and gives them back in order.
void check_round_trip(SharedRing& ring, std::int64_t v) {
  REQUIRE(put(ring, v));
  REQUIRE(put(ring, v + 1));
  CHECK(ring.size() == 2);
  CHECK(drain(ring) == std::vector<std::int64_t>{v, v + 1});
  CHECK(ring.size() == 0);
}

using mproc_test::die_at;

}  // namespace

TEST_CASE("SharedRing: an item is invisible until published, and a reader taking it before it is counted "
          "leaves size() at zero, not wrapped") {
  SharedRing ring(0, 64 << 10);
  REQUIRE(put(ring, 1));
  {
    std::optional<std::int64_t> seen;
    std::size_t size_then = 99;
    const Interleave at("ring.publish", [&] {
      size_then = ring.size();
      seen = get(ring);  // takes the item before, never the one half put
    });
    REQUIRE(put(ring, 2));
    CHECK(Interleave::runs() == 1);
    CHECK(size_then == 1);
    CHECK(seen == 1);
  }
  CHECK(ring.size() == 1);
  {
    std::optional<std::int64_t> seen;
    std::size_t size_then = 99;
    const Interleave at("ring.published", [&] {
      seen = get(ring);  // item 2, then item 3: shown, not yet counted
      seen = get(ring);
      size_then = ring.size();
    });
    REQUIRE(put(ring, 3));
    CHECK(Interleave::runs() == 1);
    CHECK(seen == 3);
    CHECK(size_then == 0);  // two taken, one counted in: the difference reads as 0
  }
  CHECK(ring.size() == 0);
  CHECK_FALSE(get(ring));
  check_round_trip(ring, 4);
}

TEST_CASE("SharedRing: a put between a get's count and its move past the item leaves both items, in order") {
  SharedRing ring(0, 64 << 10);
  REQUIRE(put(ring, 1));
  REQUIRE(put(ring, 2));
  std::size_t size_then = 99;
  bool put_then = false;
  const Interleave at("ring.counted", [&] {
    size_then = ring.size();  // item 1 counted out, still in the ring
    put_then = put(ring, 3);
  });
  CHECK(get(ring) == 1);
  CHECK(Interleave::runs() == 1);
  CHECK(size_then == 1);
  CHECK(put_then);
  CHECK(ring.size() == 2);
  CHECK(drain(ring) == std::vector<std::int64_t>{2, 3});
  CHECK(ring.size() == 0);
}

TEST_CASE("SharedRing: a giant item withdrawn when its put's time ran out leaves the ring empty and usable") {
  SharedRing ring(0, 4096);  // one page: the item streams through it
  const std::vector<std::byte> giant(3 * 4096, std::byte{7});
  const Deadline expired = Deadline::at(std::chrono::steady_clock::now() - std::chrono::seconds(1));
  CHECK_FALSE(ring.put(giant, expired));  // the first piece went in; nobody took it
  CHECK(ring.size() == 0);
  CHECK_FALSE(get(ring));
  check_round_trip(ring, 1);
}

TEST_CASE("SharedRing: after a writer or reader dies between its steps, size(), order and the next put and get "
          "are right") {
  SharedRing ring(0, 64 << 10);
  REQUIRE(put(ring, 1));
  REQUIRE(put(ring, 2));
  SECTION("a writer, before its item shows: the item is gone") {
    die_at("ring.publish", [&] { put(ring, 99); });
    CHECK(ring.size() == 2);
    REQUIRE(put(ring, 3));  // takes the lock over, writes where the dead item was
    CHECK(ring.size() == 3);
    CHECK(drain(ring) == std::vector<std::int64_t>{1, 2, 3});
  }
  SECTION("a writer, after its item shows, before it counts it: the next writer counts it") {
    die_at("ring.published", [&] { put(ring, 99); });
    REQUIRE(put(ring, 3));
    CHECK(ring.size() == 4);
    CHECK(drain(ring) == std::vector<std::int64_t>{1, 2, 99, 3});
  }
  SECTION("a reader, after it counts the item, before it moves past it: the next reader gets the item") {
    die_at("ring.counted", [&] { (void)get(ring); });
    CHECK(get(ring) == 1);
    CHECK(ring.size() == 1);
    REQUIRE(put(ring, 3));
    CHECK(ring.size() == 2);
    CHECK(drain(ring) == std::vector<std::int64_t>{2, 3});
  }
  SECTION("a writer of an item bigger than the ring, before its first piece shows") {
    CHECK(drain(ring) == std::vector<std::int64_t>{1, 2});  // a giant item streams through an empty ring only
    const std::vector<std::byte> giant(std::size_t{1} << 20, std::byte{7});
    die_at("ring.publish", [&] { (void)ring.put(giant, Deadline::forever()); });
    CHECK(ring.size() == 0);
    CHECK_FALSE(get(ring));
    REQUIRE(put(ring, 3));  // without waiting: no reader needed to clear the dead item
    CHECK(drain(ring) == std::vector<std::int64_t>{3});
  }
  CHECK(ring.size() == 0);
  REQUIRE(put(ring, 4));
  CHECK(ring.size() == 1);
  CHECK(get(ring) == 4);
}
