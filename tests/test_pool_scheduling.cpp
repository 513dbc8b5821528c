// How the Pool shares work between its workers from one call to the next: what a call
// measured about its tasks stays with that call, so slow tasks right after a quick call
// are shared evenly. Each task returns the pid of the worker that ran it; the slow
// ones go through a gate in lockstep (one per worker at a time), so an uneven split
// can only come from how the pool handed them out, never from the machine's load.

#include "pool_test_support.hpp"

#include <mproc/mproc.hpp>

#include <catch2/catch.hpp>

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using mproc_test::Gate;

constexpr int quick = 0;
constexpr int slow = 1;
constexpr std::size_t workers = 2;

/// Lets the slow tasks through in lockstep, one per worker at a time. A slow task takes
/// a ticket (the order it started in), says it started (a byte on a pipe) and waits at
/// its ticket's gate; the pacer (a thread of the test) opens the gates of the waiting
/// tickets once every worker waits, or all the tasks left do. Each waits at least
/// `pause` first, so the pool measures them as long tasks (over a millisecond) however
/// fast the machine is. A lone task waiting while others are still to come means one
/// worker holds all that is left: it goes through after lone_after, and from then on
/// every task does (the split is already lost).
class Lockstep {
 public:
  static constexpr auto pause = 5ms;
  static constexpr auto lone_after = 5s;

  explicit Lockstep(std::size_t tasks)
      : tasks_(tasks), gates_(tasks), tickets_(1), started_(mproc::detail::make_pipe()) {}

  /// In a worker: one slow task's wait.
  void task() const {
    const auto ticket = static_cast<std::size_t>(tickets_[0].fetch_add(1));
    if (ticket >= tasks_) throw std::logic_error("more slow tasks than the lockstep was made for");
    const char c = 's';
    if (!mproc::detail::write_all(started_.write.get(), &c, 1)) throw mproc::OSError("write(started)", EPIPE);
    gates_[ticket].wait();
  }

  /// In the test: paces every task through; returns how many went through alone.
  std::size_t pace() const {
    std::size_t released = 0, waiting = 0, lone = 0;
    const auto deadline = std::chrono::steady_clock::now() + mproc_test::hang_limit;
    while (released < tasks_) {
      pollfd p{started_.read.get(), POLLIN, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(lone_after).count()));
      if (ready > 0) {
        char buf[16];
        const ssize_t n = ::read(started_.read.get(), buf, sizeof buf);
        if (n > 0) waiting += static_cast<std::size_t>(n);
      }
      if (std::chrono::steady_clock::now() > deadline) {
        open(released, tasks_);  // a hang: let everything through, the split check fails
        return tasks_;
      }
      const bool all_waiting = waiting == workers || waiting == tasks_ - released;
      if (ready == 0 && waiting > 0) ++lone;
      if (lone > 0) waiting = tasks_ - released;  // all at once: those still to come too
      else if (!all_waiting) continue;
      std::this_thread::sleep_for(pause);
      open(released, released + waiting);
      released += waiting;
      waiting = 0;
    }
    return lone;
  }

 private:
  void open(std::size_t from, std::size_t to) const {
    for (std::size_t t = from; t < to; ++t) gates_[t].open();
  }

  std::size_t tasks_;
  std::vector<Gate> gates_;  // one per ticket
  mproc_test::SharedCounters tickets_;
  mproc::detail::PipeEnds started_;
};

/// How many tasks each pid ran.
std::map<pid_t, std::size_t> tasks_per_worker(const std::vector<pid_t>& pids) {
  std::map<pid_t, std::size_t> count;
  for (pid_t p : pids) ++count[p];
  return count;
}

/// A pool of two workers whose tasks return their pid, slow ones paced by `lockstep`;
/// returns once both workers ran the initializer (they are about to be ready).
auto make_pool(const Lockstep& lockstep, const Gate& initialized) {
  mproc::Pool pool(
      [&lockstep](int kind) {
        if (kind == slow) lockstep.task();
        return ::getpid();
      },
      {.processes = workers, .initializer = [&initialized] { initialized.open(); }});
  return pool;
}

/// The split check: each of the two workers ran at most half the tasks and one more
/// (in lockstep, one that held a chunk more at the end).
void check_even(const std::vector<pid_t>& pids, std::size_t lone) {
  const auto count = tasks_per_worker(pids);
  std::vector<std::size_t> shares;  // tasks per worker, as Catch prints a vector
  for (const auto& [pid, n] : count) shares.push_back(n);
  INFO("tasks that went through alone: " << lone);
  CAPTURE(shares);
  CHECK(count.size() == workers);
  for (const auto& [pid, n] : count) CHECK(n <= (pids.size() + 1) / 2 + 1);
}

}  // namespace

TEST_CASE("after a quick apply, map(slow tasks, 1) is shared evenly by the workers") {
  constexpr std::size_t n = 20;
  const Lockstep lockstep(n);
  const Gate initialized;  // opened by each worker's initializer (never waited on by a worker)
  auto pool = make_pool(lockstep, initialized);
  // Waiting for the initializers keeps a late worker from looking like a slow one.
  for (std::size_t i = 0; i < workers; ++i) initialized.wait();
  std::size_t lone = 0;
  std::thread pacer([&] { lone = lockstep.pace(); });
  CHECK(pool.apply(quick) > 0);
  const auto pids = pool.map(std::vector<int>(n, slow), 1);
  pacer.join();
  check_even(pids, lone);
}

TEST_CASE("after a quick apply, apply_async of slow tasks is shared evenly by the workers") {
  constexpr std::size_t n = 20;
  const Lockstep lockstep(n);
  const Gate initialized;
  auto pool = make_pool(lockstep, initialized);
  for (std::size_t i = 0; i < workers; ++i) initialized.wait();
  std::size_t lone = 0;
  std::thread pacer([&] { lone = lockstep.pace(); });
  CHECK(pool.apply(quick) > 0);
  std::vector<mproc::AsyncResult<pid_t>> results;
  for (std::size_t i = 0; i < n; ++i) results.push_back(pool.apply_async(slow));
  std::vector<pid_t> pids;
  for (auto& r : results) pids.push_back(r.get());
  pacer.join();
  check_even(pids, lone);
}

namespace {

/// The chunk sizes ChunkPolicy cuts n items into once it measured ns_per_item (the
/// engine cuts each chunk from what is left, at most what is left).
std::vector<std::size_t> automatic_chunks(std::size_t n, std::int64_t ns_per_item) {
  mproc::detail::ChunkPolicy policy;
  policy.record(1000, 1000 * ns_per_item);
  std::vector<std::size_t> sizes;
  for (std::size_t left = n; left > 0;) {
    sizes.push_back(std::min(policy.next(left, workers), left));
    left -= sizes.back();
  }
  return sizes;
}

}  // namespace

TEST_CASE("automatic chunking of nanosecond items does not cut the tail into tiny chunks") {
  // A chunk costs the pool tens of microseconds whatever it holds: 4 ns items never
  // travel in chunks of less than min_tail_chunk_seconds of work, but the last.
  const auto sizes = automatic_chunks(1'000'000, 4);
  const auto floor = static_cast<std::size_t>(mproc::detail::ChunkPolicy::min_tail_chunk_seconds / 4e-9);
  CAPTURE(sizes);
  CHECK(sizes.size() <= 40);
  for (std::size_t i = 0; i + 1 < sizes.size(); ++i) CHECK(sizes[i] >= floor);
  CHECK(sizes.front() <= 1'000'000 / (2 * workers));  // the head is still shared
}

TEST_CASE("automatic chunking of millisecond items still ends in one-item chunks") {
  const auto sizes = automatic_chunks(300, 1'000'000);
  CAPTURE(sizes);
  CHECK(sizes.back() == 1);
  CHECK(sizes[sizes.size() - 2] == 1);
  for (std::size_t s : sizes) CHECK(s <= 300 / (4 * workers) + 1);
}
