// When the program itself goes: a parent killed with SIGKILL in the middle of a map,
// Ctrl-C (SIGINT) to a running program (a test-made one whose Pool is busy, and the
// real example programs), and a pool whose fork server dies. Every process of the
// program's tree must be gone within a second, none left as a zombie, nothing left in
// /dev/shm.
//
// The test process is a child subreaper while it runs these programs, so the
// orphans of a killed program become its children: it sees each one end and reaps
// it itself, instead of leaving that to PID 1. Each program's tree also inherits the
// write end of a pipe: end-of-file on it means that every process holding it is gone,
// including any that a /proc snapshot could have missed.

#include "reliability_support.hpp"

#include <mproc/mproc.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using mproc_test::Gate;
using mproc_test::iota_vector;

/// The bound for "the whole tree is gone". Nothing in mproc waits on a timer
/// here (workers and the fork server die by PR_SET_PDEATHSIG, the kernel's doing), so
/// the real time is a few milliseconds.
constexpr auto promptly = 1s;

/// Reads exactly n bytes from fd (a report pipe), failing the test at the deadline.
void read_reports(int fd, std::size_t n) {
  std::string got;
  const auto deadline = Clock::now() + mproc_test::hang_limit;
  while (got.size() < n) {
    pollfd p{fd, POLLIN, 0};
    const auto left = deadline - Clock::now();
    REQUIRE(left > Clock::duration{});
    REQUIRE(mproc::detail::poll_fds(&p, 1, left) == 1);
    char buf[16];
    const ssize_t r = mproc::detail::read_some(fd, buf, std::min(sizeof buf, n - got.size()));
    REQUIRE(r > 0);
    got.append(buf, static_cast<std::size_t>(r));
  }
}

/// Forks a program that shares a Manager list, a Queue and a Value with a Pool of two
/// workers and calls map on it. Each task writes a byte to report_fd, then blocks for
/// good: once two bytes arrived, both workers are in the middle of the map.
mproc::detail::Child start_program_busy_in_map(int report_fd) {
  return mproc::detail::fork_child({}, [report_fd] {
    std::signal(SIGINT, SIG_DFL);  // the test runner's handlers are not the program's
    mproc::Manager manager;
    auto seen = manager.list<int>();
    mproc::Queue<int> queue;
    mproc::Value<int> count(0);
    mproc::Pool pool(
        [report_fd, seen, queue, count](int x) mutable {
          seen.append(x);
          queue.put(x);
          count.update([](int& c) { ++c; });
          (void)mproc::detail::write_all(report_fd, "r", 1);
          for (;;) ::pause();  // until the worker is killed
          return x;
        },
        {.processes = 2, .chunksize = 1});
    (void)pool.map(iota_vector(100));
    return 0;
  });
}

/// A program and its process tree, watched from the test (a child subreaper).
struct WatchedProgram {
  mproc::detail::Child program;
  mproc::detail::PipeEnds tree;  // every process of the program holds the write end
  mproc_test::ProcessWatch watch;

  /// Watches the program's current descendants; requires at least `expected`.
  void watch_tree(std::size_t expected) {
    for (pid_t pid : mproc_test::descendants(program.pid())) watch.add(pid);
    INFO("processes under the program: " << watch.size());
    REQUIRE(watch.size() >= expected);
  }

  /// Sends sig to the program and checks that it and every process of its tree end
  /// promptly, that each one is reaped (no zombie) and that nothing else is left.
  void kill_and_check(int sig) {
    const auto sent = Clock::now();
    program.kill(sig);
    const bool tree_ended = watch.wait_all_ended(sent + promptly);
    const bool eof = mproc_test::wait_eof(tree.read.get(), sent + promptly);
    const bool program_ended = program.wait(std::max(sent + promptly - Clock::now(), Clock::duration{})).has_value();
    const double took = std::chrono::duration<double>(Clock::now() - sent).count();
    std::printf("%s: the program and the %zu processes under it ended within %.1f ms\n", ::sigabbrev_np(sig),
                watch.size(), took * 1000);
    INFO("survivors: " << watch.survivors() << "; checked after " << took << " s");
    CHECK(program_ended);
    CHECK(tree_ended);
    CHECK(eof);
    if (!(tree_ended && eof && program_ended)) {  // clean up after the failure
      watch.kill_all();
      program.kill(SIGKILL);
      (void)watch.wait_all_ended(Clock::now() + mproc_test::hang_limit);
    }
    const auto status = program.wait();
    REQUIRE(status.has_value());
    CHECK(status->signal == sig);
    // Its orphans came to this process (the subreaper): reap them all, then none of
    // the tree may be left, not even as a zombie.
    CHECK(mproc_test::reap_all_children(Clock::now() + mproc_test::hang_limit));
    for (pid_t pid : watch.pids()) {
      INFO("process " << pid);
      CHECK_FALSE(mproc_test::proc_stat(pid).has_value());
    }
  }
};

/// Runs start_program_busy_in_map, waits until both its workers are in the middle of
/// the map, sends sig and checks the tree's end, and that /dev/shm is as it was.
void kill_program_busy_in_map(int sig) {
  mproc_test::Subreaper reaper;
  const auto shm_before = mproc_test::dev_shm();
  auto report = mproc::detail::make_pipe();
  WatchedProgram p{{}, mproc::detail::make_pipe(), {}};
  p.program = start_program_busy_in_map(report.write.get());
  report.write.reset();
  p.tree.write.reset();
  read_reports(report.read.get(), 2);  // both workers run a task of the map
  p.watch_tree(3);                     // the fork server and two workers
  p.kill_and_check(sig);
  CHECK(mproc_test::dev_shm() == shm_before);
}

#ifdef MPROC_EXAMPLES_DIR  // the examples are built

/// The full path of a built example program.
std::string example_path(const char* name) { return std::string(MPROC_EXAMPLES_DIR) + "/" + name; }

/// Runs an example program with stdout and stderr into out_fd and tree_fd open in it
/// (not close-on-exec), so that every process of its tree inherits it.
mproc::detail::Child run_example(const std::string& path, std::vector<std::string> args, int out_fd, int tree_fd) {
  args.insert(args.begin(), path);
  return mproc::detail::fork_child({}, [&] {
    std::signal(SIGINT, SIG_DFL);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(out_fd, STDERR_FILENO);
    ::fcntl(tree_fd, F_SETFD, 0);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(path.c_str(), argv.data());
    return 127;
  });
}

/// Starts an example, waits until its output contains `started` (its children are
/// up), sends SIGINT and checks that the whole tree ended promptly.
void interrupt_example(const char* name, std::vector<std::string> args, const std::string& started,
                       std::size_t min_processes) {
  mproc_test::Subreaper reaper;
  auto out = mproc::detail::make_pipe();
  WatchedProgram p{{}, mproc::detail::make_pipe(), {}};
  p.program = run_example(example_path(name), std::move(args), out.write.get(), p.tree.write.get());
  out.write.reset();
  p.tree.write.reset();
  const std::string text = mproc_test::read_until(out.read.get(), started, Clock::now() + mproc_test::hang_limit);
  INFO(name << " printed:\n" << text);
  REQUIRE(text.find(started) != std::string::npos);
  p.watch_tree(min_processes);
  p.kill_and_check(SIGINT);
}

#endif  // MPROC_EXAMPLES_DIR

}  // namespace

TEST_CASE("parent killed with SIGKILL in the middle of a map: its workers and fork server end at once") {
  kill_program_busy_in_map(SIGKILL);
}

TEST_CASE("Ctrl-C (SIGINT) to a program whose Pool is busy: it ends at once with its whole tree") {
  kill_program_busy_in_map(SIGINT);
}

#ifdef MPROC_EXAMPLES_DIR
TEST_CASE("Ctrl-C (SIGINT) to flagship_demo while its Pool starts: no process is left behind") {
  // Its output is flushed when the pool forks its fork server, right after the serial
  // run: Ctrl-C lands while the workers are being started or have just started.
  interrupt_example("flagship_demo", {"0.2"}, "serial:", 0);
}

TEST_CASE("Ctrl-C (SIGINT) to seed002_manager_workers_event with its worker Process busy: nothing is left behind") {
  // A "finished task" line comes from the worker Process: it runs, with five of its
  // six tasks of 0.2 s still to do.
  interrupt_example("seed002_manager_workers_event", {"--workers", "1"}, "finished task", 1);
}
#endif

TEST_CASE("a dead fork server breaks the pool: waiting tasks fail with mproc::Error and nothing hangs") {
  Gate gate;  // never opened: the tasks stay busy until their workers die
  mproc::Pool pool(
      [&gate](int x) {
        if (x >= 0) gate.wait();
        return x;
      },
      {.processes = 2});
  CHECK(pool.apply(-1) == -1);
  const auto workers = pool.worker_pids();
  REQUIRE(workers.size() == 2);
  const auto worker_stat = mproc_test::proc_stat(workers[0]);
  REQUIRE(worker_stat.has_value());
  const pid_t server = worker_stat->ppid;
  const auto server_stat = mproc_test::proc_stat(server);
  REQUIRE(server_stat.has_value());
  REQUIRE(server_stat->ppid == ::getpid());  // our child, reaped only by the pool: no recycled pid
  mproc_test::ProcessWatch watch;
  for (pid_t w : workers) REQUIRE(watch.add(w));

  auto pending = pool.map_async(iota_vector(10));
  REQUIRE(::kill(server, SIGKILL) == 0);
  try {
    (void)pending.get(mproc_test::hang_limit);
    FAIL("the map succeeded without a fork server");
  } catch (const mproc::TimeoutError&) {
    FAIL("the map hung after its fork server died");
  } catch (const mproc::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("fork server"));
  }
  CHECK_THROWS_AS(pool.apply(-1), mproc::Error);  // broken for good
  CHECK(watch.wait_all_ended(Clock::now() + mproc_test::hang_limit));  // the workers died with it
}

TEST_CASE("an initializer that crashes breaks the pool instead of forking workers forever") {
  mproc::Pool pool([](int x) { return x; },
                   {.processes = 2, .initializer = [] { mproc_test::die_by_signal(SIGSEGV); }});
  try {
    (void)pool.map_async(iota_vector(4)).get(mproc_test::hang_limit);
    FAIL("the map succeeded");
  } catch (const mproc::TimeoutError&) {
    FAIL("the map hung");
  } catch (const mproc::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("before they were ready") && Catch::Contains("SIGSEGV"));
  }
  CHECK_THROWS_AS(pool.apply(1), mproc::Error);
}
