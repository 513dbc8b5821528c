// How mproc::mpi::Pool shares work between its serving ranks from one call to the
// next, as tests/test_pool_scheduling.cpp checks for the local pool: slow tasks right
// after a quick call are shared evenly. Runs under `mpirun -n 3` (2 serving ranks).
// Each task returns the world rank that ran it; the slow ones go through in lockstep
// (one per serving rank at a time), released by a thread of the master over
// MPI_COMM_WORLD, so an uneven split can only come from how the pool handed them out.

#include <mproc/mpi.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

// Started before the tests, finalized after them (so pools never outlive MPI).
mproc::mpi::Environment environment;

constexpr int quick = 0;
constexpr int slow = 1;
constexpr int tag_started = 101;  // serving rank -> master: a slow task waits
constexpr int tag_release = 102;  // master -> serving rank: let it go

int world_rank() { return mproc::detail::comm_rank(MPI_COMM_WORLD); }

/// The task: a slow one says it started and waits until the master's pacer lets it go.
int task(int kind) {
  if (kind == slow) {
    MPI_Send(nullptr, 0, MPI_BYTE, 0, tag_started, MPI_COMM_WORLD);
    MPI_Recv(nullptr, 0, MPI_BYTE, 0, tag_release, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  return world_rank();
}

/// On the master: lets `tasks` slow tasks through in lockstep, one per serving rank
/// at a time, once every serving rank waits or all the tasks left do; each waits at
/// least `pause` first, so the pool measures them as long tasks (over a millisecond).
/// A lone task waiting while others are still to come means one rank holds all that
/// is left: it goes through after lone_after, and from then on every task does.
/// Returns how many went through alone.
std::size_t pace(std::size_t tasks, std::size_t ranks) {
  constexpr auto pause = 5ms;
  constexpr auto lone_after = 5s;
  std::vector<int> waiting;
  std::size_t released = 0, lone = 0;
  auto last_start = std::chrono::steady_clock::now();
  while (released < tasks) {
    int found = 0;
    MPI_Status status;
    MPI_Iprobe(MPI_ANY_SOURCE, tag_started, MPI_COMM_WORLD, &found, &status);
    if (found != 0) {
      MPI_Recv(nullptr, 0, MPI_BYTE, status.MPI_SOURCE, tag_started, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      waiting.push_back(status.MPI_SOURCE);
      last_start = std::chrono::steady_clock::now();
    } else {
      std::this_thread::sleep_for(100us);  // a test's pacer: MPI has nothing to block on with a timeout
    }
    if (lone == 0 && !waiting.empty() && std::chrono::steady_clock::now() - last_start > lone_after) ++lone;
    if (waiting.empty() || (lone == 0 && waiting.size() < ranks && waiting.size() < tasks - released)) continue;
    std::this_thread::sleep_for(pause);
    for (int rank : waiting) MPI_Send(nullptr, 0, MPI_BYTE, rank, tag_release, MPI_COMM_WORLD);
    released += waiting.size();
    waiting.clear();
  }
  return lone;
}

/// Each of the two serving ranks ran at most half the tasks and one more (in
/// lockstep, one that held a chunk more at the end).
void check_even(const std::vector<int>& ranks, std::size_t lone) {
  std::map<int, std::size_t> count;
  for (int r : ranks) ++count[r];
  std::vector<std::size_t> shares;  // tasks per rank, as Catch prints a vector
  for (const auto& [rank, n] : count) shares.push_back(n);
  INFO("tasks that went through alone: " << lone);
  CAPTURE(shares);
  CHECK(count.size() == 2);
  for (const auto& [rank, n] : count) CHECK(n <= (ranks.size() + 1) / 2 + 1);
}

}  // namespace

TEST_CASE("after a quick apply, map(slow tasks, 1) is shared evenly by the serving ranks") {
  mproc::mpi::Pool pool(task);
  if (!pool.is_master()) return;
  REQUIRE(pool.processes() == 2);
  constexpr std::size_t n = 20;
  std::size_t lone = 0;
  std::thread pacer([&] { lone = pace(n, pool.processes()); });
  CHECK(pool.apply(quick) > 0);
  const auto ranks = pool.map(std::vector<int>(n, slow), 1);
  pacer.join();
  check_even(ranks, lone);
}

TEST_CASE("after a quick apply, apply_async of slow tasks is shared evenly by the serving ranks") {
  mproc::mpi::Pool pool(task);
  if (!pool.is_master()) return;
  constexpr std::size_t n = 20;
  std::size_t lone = 0;
  std::thread pacer([&] { lone = pace(n, pool.processes()); });
  CHECK(pool.apply(quick) > 0);
  std::vector<mproc::AsyncResult<int>> results;
  for (std::size_t i = 0; i < n; ++i) results.push_back(pool.apply_async(slow));
  std::vector<int> ranks;
  for (auto& r : results) ranks.push_back(r.get());
  pacer.join();
  check_even(ranks, lone);
}
