// When the program itself goes: a parent killed with SIGKILL in the middle of a map,
// Ctrl-C (SIGINT) to a running program (a test-made one whose Pool is busy, and the
// real example programs), and a pool whose fork server dies. Every process of the
// program's tree must be gone within a second, none left as a zombie, nothing left in
// /dev/shm. Then a program that ignores SIGCHLD, and a fork server that dies under a
// worker it just forked, or gets stuck.
//
// The test process is a child subreaper while it runs these programs, so the
// orphans of a killed program become its children: it sees each one end and reaps
// it itself, instead of leaving that to PID 1. Each program's tree also inherits the
// write end of a pipe: end-of-file on it means that every process holding it is gone,
// including any that a /proc snapshot could have missed.

#include "reliability_support.hpp"  // first: it configures Catch2

#include <mproc/mproc.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
    REQUIRE(mproc::detail::poll_until(&p, 1, mproc::detail::Deadline::at(deadline)) == 1);
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
    const bool program_ended = program.wait(mproc::detail::Deadline::at(sent + promptly)).has_value();
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

/// Starts an example, waits until its output contains `started` and, if busy_workers
/// is not 0, until that many of its pool's workers run; sends SIGINT and checks that
/// the whole tree ended promptly.
void interrupt_example(const char* name, std::vector<std::string> args, const std::string& started,
                       std::size_t min_processes, std::size_t busy_workers = 0) {
  mproc_test::Subreaper reaper;
  auto out = mproc::detail::make_pipe();
  WatchedProgram p{{}, mproc::detail::make_pipe(), {}};
  p.program = run_example(example_path(name), std::move(args), out.write.get(), p.tree.write.get());
  out.write.reset();
  p.tree.write.reset();
  const std::string text = mproc_test::read_until(out.read.get(), started, Clock::now() + mproc_test::hang_limit);
  INFO(name << " printed:\n" << text);
  REQUIRE(text.find(started) != std::string::npos);
  if (busy_workers > 0) {
    REQUIRE(mproc_test::wait_for_busy_workers(p.program.pid(), busy_workers, Clock::now() + mproc_test::hang_limit));
  }
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
TEST_CASE("Ctrl-C (SIGINT) to flagship_demo while its Pool is busy: no process is left behind") {
  // "serial:" comes right before the pool starts; Ctrl-C waits until (up to) two of
  // its workers run the map, under the fork server.
  const std::size_t workers = std::min<std::size_t>(2, mproc::cpu_count());
  interrupt_example("flagship_demo", {"0.2"}, "serial:", 1 + workers, workers);
}

TEST_CASE("Ctrl-C (SIGINT) to workers_with_stop_event with its worker Process busy: nothing is left behind") {
  // A "finished task" line comes from the worker Process: it runs, with five of its
  // six tasks of 0.2 s still to do.
  interrupt_example("workers_with_stop_event", {"--workers", "1"}, "finished task", 1);
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

namespace {

/// The error that a pool whose workers never become ready gives a map: the test
/// fails if the map succeeds or hangs.
template <class P>
std::string error_of_map(P& pool) {
  try {
    (void)pool.map_async(iota_vector(4)).get(mproc_test::hang_limit);
    FAIL("the map succeeded");
  } catch (const mproc::TimeoutError&) {
    FAIL("the map hung");
  } catch (const mproc::Error& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("an initializer that crashes breaks the pool instead of forking workers forever") {
  mproc::Pool pool([](int x) { return x; },
                   {.processes = 2, .initializer = [] { mproc_test::die_by_signal(SIGSEGV); }});
  CHECK_THAT(error_of_map(pool), Catch::Contains("before they were ready") && Catch::Contains("SIGSEGV"));
  CHECK_THROWS_AS(pool.apply(1), mproc::Error);
}

TEST_CASE("an initializer that exits breaks the pool, and the error says it exited in the initializer") {
  mproc::Pool pool([](int x) { return x; }, {.processes = 1, .initializer = [] { std::exit(3); }});
  CHECK_THAT(error_of_map(pool), Catch::Contains("in the pool's initializer") && Catch::Contains("exited with code 3"));
}

TEST_CASE("fresh workers killed from outside three times in a row are replaced, and the map completes") {
  // An operator or the OOM killer, not the initializer: each worker is killed while
  // it waits in its initializer, before it is ready.
  const auto started = mproc::detail::make_pipe();
  const int started_fd = started.write.get();
  Gate go;
  mproc::Pool pool([](int x) { return 2 * x; }, {.processes = 1, .initializer = [started_fd, &go] {
                                                   std::signal(SIGTERM, SIG_DFL);  // not the test runner's handler
                                                   const pid_t self = ::getpid();
                                                   (void)mproc::detail::write_all(started_fd, &self, sizeof self);
                                                   go.wait();
                                                 }});
  mproc_test::GateWatchdog watchdog(go);
  const auto next_worker = [&] {
    pid_t pid = 0;
    pollfd p{started.read.get(), POLLIN, 0};
    REQUIRE(mproc::detail::poll_until(&p, 1, mproc::detail::Deadline::after(mproc_test::hang_limit)) == 1);
    REQUIRE(::read(started.read.get(), &pid, sizeof pid) == sizeof pid);
    return pid;
  };
  for (int sig : {SIGKILL, SIGTERM, SIGKILL}) REQUIRE(::kill(next_worker(), sig) == 0);
  const pid_t survivor = next_worker();
  go.open(1);
  auto result = pool.map_async(iota_vector(20));
  try {
    const auto out = result.get(mproc_test::hang_limit);
    CHECK(out.back() == 38);
  } catch (const mproc::Error& e) {
    FAIL("the map failed: " << e.what());
  }
  CHECK_FALSE(watchdog.stop());
  CHECK(pool.worker_pids() == std::vector<pid_t>{survivor});
}

TEST_CASE("workers killed from outside before they are ready, again and again, break the pool in the end") {
  // An initializer killed each time (by the OOM killer, say) would fork forever:
  // after 10 in a row, with pauses between them, the pool breaks and says so.
  mproc::Pool pool([](int x) { return x; },
                   {.processes = 1, .initializer = [] { mproc_test::die_by_signal(SIGKILL); }});
  CHECK_THAT(error_of_map(pool), Catch::Contains("10 worker processes in a row were killed before they were ready") &&
                                     Catch::Contains("SIGKILL"));
}

TEST_CASE("task_timeout: chunks handed to a worker that never starts them (SIGSTOP) run elsewhere") {
  const auto busy = mproc::detail::make_pipe();
  const int busy_fd = busy.write.get();
  Gate gate;
  mproc::Pool pool(
      [busy_fd, &gate](int x) {
        if (x < 0) {  // says which worker runs it, and holds that worker
          const pid_t self = ::getpid();
          (void)mproc::detail::write_all(busy_fd, &self, sizeof self);
          gate.wait();
        }
        return 2 * x;
      },
      {.processes = 2, .task_timeout = std::chrono::seconds(1)});
  mproc_test::GateWatchdog watchdog(gate);
  // Each worker blocks on the first of these it gets: the first two reports come from
  // both workers, which are then ready.
  auto warm_up = pool.map_async(std::vector<int>{-1, -2, -3, -4}, 1);
  pid_t pids[2] = {0, 0};
  for (pid_t& pid : pids) {
    pollfd p{busy.read.get(), POLLIN, 0};
    REQUIRE(mproc::detail::poll_until(&p, 1, mproc::detail::Deadline::after(mproc_test::hang_limit)) == 1);
    REQUIRE(::read(busy.read.get(), &pid, sizeof pid) == sizeof pid);
  }
  REQUIRE(pids[0] != pids[1]);
  gate.open(4);
  CHECK(warm_up.get().size() == 4);
  CHECK_FALSE(watchdog.stop());
  // Both idle now; one never runs again, though it is handed chunks.
  const pid_t stopped = pids[0];
  REQUIRE(::kill(stopped, SIGSTOP) == 0);
  auto result = pool.map_async(iota_vector(50), 1);
  try {
    const auto out = result.get(mproc_test::hang_limit);
    REQUIRE(out.size() == 50);
    for (int i = 0; i < 50; ++i) CHECK(out[static_cast<std::size_t>(i)] == 2 * i);
  } catch (const mproc::TimeoutError&) {
    ::kill(stopped, SIGCONT);
    pool.terminate();
    FAIL("the map hung on the stopped worker's chunks");
  }
  const auto now = pool.worker_pids();
  CHECK(std::find(now.begin(), now.end(), stopped) == now.end());  // killed and replaced
}

// ---------------------------------------------------------------------------
// A program that ignores SIGCHLD (common in servers: the kernel then reaps their
// children itself, and discards how each one ended).

namespace {

/// Ignores SIGCHLD while it lives.
class IgnoredSigchld {
 public:
  IgnoredSigchld() {
    struct sigaction ignore{};
    ignore.sa_handler = SIG_IGN;
    REQUIRE(::sigaction(SIGCHLD, &ignore, &saved_) == 0);
  }
  IgnoredSigchld(const IgnoredSigchld&) = delete;
  IgnoredSigchld& operator=(const IgnoredSigchld&) = delete;
  ~IgnoredSigchld() { ::sigaction(SIGCHLD, &saved_, nullptr); }

 private:
  struct sigaction saved_{};
};

/// Whether this process ignores SIGCHLD.
bool sigchld_ignored() {
  struct sigaction now{};
  ::sigaction(SIGCHLD, nullptr, &now);
  return now.sa_handler == SIG_IGN;
}

}  // namespace

TEST_CASE("a program that ignores SIGCHLD: a dead worker's WorkerLost still says how it died") {
  IgnoredSigchld ignored;
  mproc::Pool pool(
      [](int x) {
        if (x == 1) mproc_test::die_by_signal(SIGKILL);
        return sigchld_ignored() ? 1 : 0;
      },
      {.processes = 1});
  CHECK(pool.apply(0) == 1);  // the workers keep the program's own setting
  try {
    (void)pool.apply_async(1).get(mproc_test::hang_limit);
    FAIL("the task succeeded");
  } catch (const mproc::WorkerLost& e) {
    CHECK(e.signal() == SIGKILL);
    CHECK_FALSE(e.exit_code().has_value());
    CHECK_THAT(e.what(), Catch::Contains("SIGKILL"));
  }
  CHECK(pool.apply(0) == 1);
}

TEST_CASE("a program that ignores SIGCHLD: a Process is seen to end, and its discarded exit code is not made up") {
  IgnoredSigchld ignored;
  mproc::Process clean([] {});
  mproc::Process killed([] { mproc_test::die_by_signal(SIGKILL); });
  for (mproc::Process* p : {&clean, &killed}) {
    p->start();
    p->join();
    CHECK_FALSE(p->is_alive());
    CHECK_FALSE(p->exitcode().has_value());  // as Python's exitcode stays None; never 0
  }
}

// ---------------------------------------------------------------------------
// The fork server itself: dead before a worker it forked could tie its fate to it,
// and stuck.

namespace {

pid_t test_pid = 0;
/// Armed (in memory shared with the children) while a test below wants it.
std::atomic<int>* kill_server_at_fork = nullptr;
std::atomic<int>* stall_server_forks = nullptr;
int stall_report_fd = -1;

/// pthread_atfork child handler, in a worker just forked by a fork server (its
/// parent is not the test): kill the server and wait until it is gone, all before
/// the worker's own code runs.
void kill_server_before_worker_starts() {
  if (kill_server_at_fork == nullptr || kill_server_at_fork->load() == 0 || ::getppid() == test_pid) return;
  const int server = static_cast<int>(::syscall(SYS_pidfd_open, ::getppid(), 0));
  (void)::syscall(SYS_pidfd_send_signal, server, SIGKILL, nullptr, 0);
  pollfd p{server, POLLIN, 0};
  (void)::poll(&p, 1, -1);  // gone, and this worker handed to another parent
  ::close(server);
}

/// pthread_atfork prepare handler, in a fork server (a process other than the test)
/// about to fork a worker: say so, then hang there for good.
void stall_fork_server() {
  if (stall_server_forks == nullptr || stall_server_forks->load() == 0 || ::getpid() == test_pid) return;
  (void)!::write(stall_report_fd, "s", 1);
  for (;;) ::pause();
}

void install_fork_hooks() {
  test_pid = ::getpid();
  static const bool installed = (::pthread_atfork(stall_fork_server, nullptr, kill_server_before_worker_starts), true);
  (void)installed;
}

/// A pool of one worker that retires after two tasks, whose fork server hangs when
/// asked for the replacement; returns once it hangs there.
struct StuckServerPool {
  mproc_test::SharedCounters armed{1};
  mproc::detail::PipeEnds report = mproc::detail::make_pipe();
  bool hooked = hook(armed, report);  // before the pool: its fork server gets a copy of the hook's globals
  mproc::Pool<int (*)(int)> pool{+[](int x) { return x; }, {.processes = 1, .maxtasksperchild = 2}};

  static bool hook(const mproc_test::SharedCounters& armed, const mproc::detail::PipeEnds& report) {
    install_fork_hooks();
    stall_server_forks = &armed[0];
    stall_report_fd = report.write.get();
    return true;
  }
  StuckServerPool() {
    REQUIRE(pool.apply(0) == 0);
    armed[0] = 1;
    REQUIRE(pool.apply(1) == 1);  // its last task: the pool then asks for a replacement
    read_reports(report.read.get(), 1);
  }
  StuckServerPool(const StuckServerPool&) = delete;
  StuckServerPool& operator=(const StuckServerPool&) = delete;
  ~StuckServerPool() {
    armed[0] = 0;
    stall_server_forks = nullptr;
  }
};

}  // namespace

TEST_CASE("a worker whose fork server died before it started leaves at once (it checks the server's pid, not "
          "its parent's)") {
  install_fork_hooks();
  mproc_test::SharedCounters seen(2);  // [0] arms the hook; [1] what the worker found: 1 its parent gone, 2 not
  auto report = mproc::detail::make_pipe();
  kill_server_at_fork = &seen[0];
  seen[0] = 1;
  {
    mproc::detail::ForkServer server([&](std::size_t, int, int, pid_t parent) {
      seen[1] = ::getppid() != parent ? 1 : 2;
      (void)mproc::detail::write_all(report.write.get(), "w", 1);
      return 0;
    });
    const mproc::detail::Fd never(::eventfd(0, EFD_CLOEXEC));
    try {
      (void)server.spawn(0, never.get(), [] { return false; });  // answered, or not: the server is killed
    } catch (const mproc::Error&) {
    }
    report.write.reset();  // the worker has its own copy
    // Before the server's end: told to quit in time, it would kill the worker first.
    read_reports(report.read.get(), 1);
  }
  seen[0] = 0;
  kill_server_at_fork = nullptr;
  CHECK(seen[1] == 1);
}

TEST_CASE("a fork server that stops answering breaks the pool with an error instead of hanging it") {
  StuckServerPool stuck;
  auto pending = stuck.pool.apply_async(2);
  try {
    (void)pending.get(mproc_test::hang_limit);  // longer than the spawn deadline
    FAIL("the task ran without a worker");
  } catch (const mproc::TimeoutError&) {
    FAIL("the pool hung on its stuck fork server");
  } catch (const mproc::Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("fork server did not start a worker"));
  }
  CHECK_THROWS_AS(stuck.pool.apply(3), mproc::Error);  // broken for good
}

TEST_CASE("an outcome read in the same pass as its worker's exit is delivered before the replacement starts") {
  // One worker that retires after three tasks; the last two are handed to it at once
  // (once the first, a probe of their series, has answered: they wait for its
  // initializer meanwhile). The second task's callback holds the pool's thread until
  // the worker has sent the third outcome and exited, so the pool reads that outcome
  // and the exit together; then the replacement's fork hangs in the server.
  mproc_test::SharedCounters armed(1);
  const auto report = mproc::detail::make_pipe();
  StuckServerPool::hook(armed, report);
  const auto started = mproc::detail::make_pipe();
  const Gate go;
  const int started_fd = started.write.get();
  mproc::Pool pool(+[](int x) { return x == 0 ? static_cast<int>(::getpid()) : x; },
                   {.processes = 1, .maxtasksperchild = 3, .initializer = [&] {
                      (void)mproc::detail::write_all(started_fd, "i", 1);
                      go.wait();
                    }});
  read_reports(started.read.get(), 1);  // forked: the next fork is the replacement's
  armed[0] = 1;
  auto probe = pool.apply_async(5);
  auto first = pool.apply_async(0, [](const int& worker) {
    // Until it has exited and its server reaped it (a zombie still takes signal 0).
    const auto deadline = Clock::now() + mproc_test::hang_limit;
    while (::kill(worker, 0) == 0 && Clock::now() < deadline) ::usleep(1000);
  });
  auto second = pool.apply_async(1);
  go.open();
  // Well inside the spawn deadline: the outcome does not wait for the replacement.
  CHECK(second.get(mproc::detail::ForkServer::spawn_deadline / 2) == 1);
  CHECK(first.successful());
  CHECK(probe.get() == 5);
  read_reports(report.read.get(), 1);  // the replacement's fork did hang
  armed[0] = 0;
  stall_server_forks = nullptr;
  pool.terminate();
}

TEST_CASE("terminate() returns while the pool's fork server is stuck starting a worker") {
  StuckServerPool stuck;
  auto pending = stuck.pool.apply_async(2);
  stuck.pool.terminate();  // a hang here is the failure (the test's timeout)
  CHECK_THROWS_AS(pending.get(), mproc::PoolClosed);
}

TEST_CASE("terminate() while the fork server is stuck starting the first of two workers starts no other") {
  // Stopped on the first worker, the pool must not go on to ask for the second and
  // wait out the spawn deadline for it (its tasks would then fail with Error).
  mproc_test::SharedCounters armed(1);
  const auto report = mproc::detail::make_pipe();
  StuckServerPool::hook(armed, report);
  armed[0] = 1;
  {
    mproc::Pool<int (*)(int)> pool{+[](int x) { return x; }, {.processes = 2}};
    read_reports(report.read.get(), 1);  // the server hangs forking the first worker
    auto pending = pool.apply_async(2);
    pool.terminate();
    CHECK_THROWS_AS(pending.get(), mproc::PoolClosed);
  }
  armed[0] = 0;
  stall_server_forks = nullptr;
}
