// mproc::Process: every way a child can end and its exitcode, join with a timeout,
// terminate and kill, names and current_process(), the destructor and exit-time
// rules, death with the parent, and no zombie or descriptor left behind. Children
// wait on Queues ("gates"), never on time.

#include "blocked_support.hpp"

#include <mproc/process.hpp>
#include <mproc/queue.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// Whether pid is no child of ours any more (reaped, so no zombie either).
bool reaped(pid_t pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG) == -1 && errno == ECHILD;
}

std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

/// fork() for a test's helper process, with the runner's output flushed first so
/// that the helper never writes it a second time.
pid_t fork_helper() {
  std::cout.flush();
  std::fflush(nullptr);
  return ::fork();
}

/// Blocks until process pid (any process, not only a child) has exited.
void wait_gone(pid_t pid) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    REQUIRE(errno == ESRCH);  // already gone
    return;
  }
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
  ::close(fd);
}

/// Everything the child wrote to stderr while running body() (in the child).
std::string child_stderr(const std::function<void()>& body, std::optional<int>& exitcode) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  mproc::Process p([&] {
    ::dup2(fds[1], STDERR_FILENO);
    body();
  });
  p.start();
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  p.join();
  exitcode = p.exitcode();
  return out;
}

}  // namespace

TEST_CASE("a target runs with its arguments in a child process") {
  mproc::Queue<std::pair<int, std::string>> out;
  mproc::Process p([out](int x, std::string tag) { out.put({x * x * x, tag + std::to_string(::getpid())}); }, 5,
                   std::string("pid "));
  CHECK(p.pid() == 0);
  p.start();
  const pid_t pid = p.pid();
  CHECK(pid > 0);
  CHECK(pid != ::getpid());
  const auto [cube, tag] = out.get();
  CHECK(cube == 125);
  CHECK(tag == "pid " + std::to_string(pid));
  p.join();
  CHECK(p.exitcode() == 0);
  CHECK(reaped(pid));
}

TEST_CASE("exitcode: nullopt while running, 0 on return, N after std::exit(N), 1 after an exception") {
  mproc::Queue<int> gate;
  mproc::Process waiting([gate] { gate.get(); });
  waiting.start();
  CHECK(waiting.exitcode() == std::nullopt);
  CHECK(waiting.is_alive());
  gate.put(0);
  waiting.join();
  CHECK(waiting.exitcode() == 0);
  CHECK_FALSE(waiting.is_alive());

  mproc::Process exits([] { std::exit(7); });
  exits.start();
  exits.join();
  CHECK(exits.exitcode() == 7);

  mproc::Process throws([] { throw std::runtime_error("boom"); });
  throws.start();
  throws.join();
  CHECK(throws.exitcode() == 1);

  mproc::Process throws_int([] { throw 42; });
  throws_int.start();
  throws_int.join();
  CHECK(throws_int.exitcode() == 1);
}

TEST_CASE("an uncaught exception prints its type, message and the process name to stderr") {
  std::optional<int> code;
  const std::string err = child_stderr([] { throw std::invalid_argument("bad input 42"); }, code);
  CHECK(code == 1);
  CHECK_THAT(err, Catch::Contains("std::invalid_argument") && Catch::Contains("bad input 42") &&
                      Catch::Contains("Process-"));
}

TEST_CASE("exitcode is -N after signal N: terminate, kill, abort") {
  mproc::Queue<int> never;
  mproc::Process t([never] { never.get(); });
  mproc::Process k([never] { never.get(); });
  mproc::Process a([] { std::abort(); });
  t.start();
  k.start();
  a.start();
  t.terminate();
  k.kill();
  t.join();
  k.join();
  a.join();
  CHECK(t.exitcode() == -SIGTERM);
  CHECK(k.exitcode() == -SIGKILL);
  CHECK(a.exitcode() == -SIGABRT);
  // Signalling an ended process is harmless.
  t.terminate();
  k.kill();
  CHECK(t.exitcode() == -SIGTERM);
}

TEST_CASE("join with a timeout returns false while the child runs, true once it ended") {
  mproc::Queue<int> gate;
  mproc::Process p([gate] { gate.get(); });
  p.start();
  CHECK_FALSE(p.join(20ms));
  CHECK_FALSE(p.join(0s));
  CHECK(p.is_alive());
  CHECK(p.exitcode() == std::nullopt);
  gate.put(1);
  CHECK(p.join(std::chrono::hours(1)));
  CHECK(p.exitcode() == 0);
  CHECK(p.join(0s));  // joining again is fine
  p.join();
}

TEST_CASE("join with a timeout too long for the clock waits until the process ends") {
  // The child ends only once this thread is waiting inside join.
  const auto joined_when_released = [](auto timeout) {
    mproc::Queue<int> gate;
    mproc::Process p([gate] { gate.get(); });
    p.start();
    bool joined = false;
    {
      mproc_test::WhenBlocked release(mproc_test::poll_calls(), [&] { gate.put(1); });
      joined = p.join(timeout);
    }
    if (!joined) gate.put(1);
    p.join();
    return joined;
  };
  CHECK(joined_when_released(std::chrono::seconds::max()));
  CHECK(joined_when_released(std::chrono::hours(3'000'000)));

  mproc::Queue<int> gate;
  mproc::Process p([gate] { gate.get(); });
  p.start();
  CHECK_FALSE(p.join(-1s));  // a negative timeout does not wait
  gate.put(1);
  p.join();
}

TEST_CASE("misuse is a ValueError: start twice, join/terminate/kill before start, close while running") {
  mproc::Queue<int> gate;
  mproc::Process p([gate] { gate.get(); });
  CHECK_THROWS_AS(p.join(), mproc::ValueError);
  CHECK_THROWS_AS(p.join(1s), mproc::ValueError);
  CHECK_THROWS_AS(p.terminate(), mproc::ValueError);
  CHECK_THROWS_AS(p.kill(), mproc::ValueError);
  CHECK_FALSE(p.is_alive());
  CHECK(p.exitcode() == std::nullopt);
  p.start();
  CHECK_THROWS_AS(p.start(), mproc::ValueError);
  CHECK_THROWS_AS(p.daemon(true), mproc::ValueError);
  CHECK_THROWS_AS(p.close(), mproc::ValueError);
  gate.put(1);
  p.join();
  p.close();
  CHECK_THROWS_AS(p.join(), mproc::ValueError);
  CHECK_THROWS_AS(p.start(), mproc::ValueError);
  CHECK_THROWS_AS(p.exitcode(), mproc::ValueError);
}

TEST_CASE("names: Process-N by default, or the given name, and current_process() in parent and child") {
  CHECK(mproc::current_process().name() == "MainProcess");
  CHECK(mproc::current_process().pid() == ::getpid());
  CHECK_FALSE(mproc::current_process().daemon());

  mproc::Queue<std::string> out;
  const auto report = [out] {
    const auto& self = mproc::current_process();
    out.put(self.name() + "," + std::to_string(self.pid()) + "," + (self.daemon() ? "daemon" : "normal"));
  };
  mproc::Process a(report);
  mproc::Process b(report);
  mproc::Process c(mproc::ProcessOptions{.name = "worker-1", .daemon = true}, report);
  REQUIRE(a.name().rfind("Process-", 0) == 0);
  const int n = std::stoi(a.name().substr(8));
  CHECK(b.name() == "Process-" + std::to_string(n + 1));
  CHECK(c.name() == "worker-1");
  CHECK(c.daemon());
  for (mproc::Process* p : {&a, &b, &c}) {
    p->start();
    CHECK(out.get() == p->name() + "," + std::to_string(p->pid()) + "," + (p->daemon() ? "daemon" : "normal"));
    p->join();
  }
}

TEST_CASE("a child's own children are named after it, Process-N:1") {
  mproc::Queue<std::string> out;
  mproc::Process parent([out] {
    mproc::Process grandchild([out] { out.put(mproc::current_process().name()); });
    grandchild.start();
    grandchild.join();
  });
  parent.start();
  CHECK(out.get() == parent.name() + ":1");
  parent.join();
  CHECK(parent.exitcode() == 0);
}

namespace {
struct Squarer : mproc::Process {
  Squarer(mproc::Queue<int> out, int x) : Process(mproc::ProcessOptions{.name = "squarer"}), out_(out), x_(x) {}
  void run() override { out_.put(x_ * x_); }
  mproc::Queue<int> out_;
  int x_;
};
}  // namespace

TEST_CASE("a subclass overrides run()") {
  mproc::Queue<int> out;
  Squarer s(out, 9);
  s.start();
  CHECK(out.get() == 81);
  s.join();
  CHECK(s.exitcode() == 0);
  CHECK(s.name() == "squarer");
}

TEST_CASE("run() called directly runs the target in this process") {
  int calls = 0;
  mproc::Process p([&calls](int k) { calls += k; }, 3);
  p.run();
  CHECK(calls == 3);
}

TEST_CASE("move-only arguments are moved into the child") {
  mproc::Queue<int> out;
  mproc::Process p([out](std::unique_ptr<int> v) { out.put(*v); }, std::make_unique<int>(11));
  p.start();
  CHECK(out.get() == 11);
  p.join();
}

TEST_CASE("Processes move, running, into a growing vector and are still joined and reaped") {
  mproc::Queue<int> gate;
  std::vector<mproc::Process> procs;
  std::vector<pid_t> pids;
  for (int i = 0; i < 8; ++i) {
    procs.emplace_back([gate, i] {
      gate.get();
      std::exit(i);
    });
    procs.back().start();  // later emplace_backs move the running ones
    pids.push_back(procs.back().pid());
  }
  for (int i = 0; i < 8; ++i) gate.put(0);
  for (int i = 0; i < 8; ++i) {
    procs[static_cast<std::size_t>(i)].join();
    CHECK(procs[static_cast<std::size_t>(i)].exitcode() == i);
    CHECK(procs[static_cast<std::size_t>(i)].pid() == pids[static_cast<std::size_t>(i)]);
    CHECK(reaped(pids[static_cast<std::size_t>(i)]));
  }
}

TEST_CASE("the destructor joins a non-daemon: it finishes its work") {
  mproc::Queue<int> gate;
  mproc::Queue<int> out;
  pid_t pid = 0;
  {
    mproc::Process p([gate, out] {
      gate.get();
      out.put(42);
    });
    p.start();
    pid = p.pid();
    gate.put(0);
  }
  CHECK(reaped(pid));
  CHECK(out.get_nowait() == 42);
}

TEST_CASE("the destructor terminates a daemon, and a non-daemon during unwinding") {
  mproc::Queue<int> never;
  pid_t daemon_pid = 0;
  {
    mproc::Process d(mproc::ProcessOptions{.daemon = true}, [never] { never.get(); });
    d.start();
    daemon_pid = d.pid();
  }
  CHECK(reaped(daemon_pid));

  pid_t pid = 0;
  try {
    mproc::Process p([never] { never.get(); });
    p.start();
    pid = p.pid();
    throw std::runtime_error("the parent failed");
  } catch (const std::runtime_error&) {
  }
  CHECK(reaped(pid));
}

TEST_CASE("a daemon ignoring SIGTERM is killed after the grace period") {
  mproc::Queue<int> ready;
  mproc::Queue<int> never;
  pid_t pid = 0;
  {
    mproc::Process d(mproc::ProcessOptions{.daemon = true}, [ready, never] {
      std::signal(SIGTERM, SIG_IGN);
      ready.put(1);
      never.get();
    });
    d.start();
    pid = d.pid();
    ready.get();
  }
  CHECK(reaped(pid));
}

TEST_CASE("at normal exit, daemons are terminated and other children joined") {
  mproc::Queue<std::string> events;
  mproc::Queue<int> gate;
  mproc::Queue<int> both_running;
  int sigterm_pipe[2];
  REQUIRE(::pipe(sigterm_pipe) == 0);
  const pid_t helper = fork_helper();
  REQUIRE(helper >= 0);
  if (helper == 0) {
    // A program that starts two children and calls std::exit with both running.
    mproc::Process daemon(mproc::ProcessOptions{.daemon = true}, [events, gate, fd = sigterm_pipe[1]] {
      static int sigterm_fd = fd;
      // Only async-signal-safe calls in the handler: SIGTERM may come while this
      // process is still inside events.put() below, holding the queue's lock.
      std::signal(SIGTERM, [](int) {
        const char byte = 'T';
        (void)!::write(sigterm_fd, &byte, 1);
        ::_exit(0);
      });
      events.put("daemon running");
      gate.get();  // never opened for it
    });
    mproc::Process worker([events, gate] {
      events.put("worker running");
      gate.get();
      events.put("worker finished");
    });
    daemon.start();
    worker.start();
    both_running.get();
    std::exit(0);  // locals are not destroyed: the exit handler must finish them
  }
  std::multiset<std::string> first{events.get(), events.get()};
  CHECK(first == std::multiset<std::string>{"daemon running", "worker running"});
  both_running.put(1);
  char byte = 0;
  CHECK(::read(sigterm_pipe[0], &byte, 1) == 1);  // the daemon got SIGTERM: terminated first, as in Python
  ::close(sigterm_pipe[0]);
  ::close(sigterm_pipe[1]);
  gate.put(1);  // let the worker finish: it is being joined
  CHECK(events.get() == "worker finished");
  int status = 0;
  REQUIRE(::waitpid(helper, &status, 0) == helper);
  CHECK(WIFEXITED(status));
}

TEST_CASE("children die with a parent that is killed (PR_SET_PDEATHSIG)") {
  mproc::Queue<pid_t> pids;
  const pid_t helper = fork_helper();
  REQUIRE(helper >= 0);
  if (helper == 0) {
    mproc::Queue<int> never;
    mproc::Process child([never] { never.get(); });
    child.start();
    pids.put(child.pid());
    never.get();
    ::_exit(0);
  }
  const pid_t grandchild = pids.get();
  ::kill(helper, SIGKILL);
  REQUIRE(::waitpid(helper, nullptr, 0) == helper);
  wait_gone(grandchild);  // hangs (and times out) if the grandchild survived
}

TEST_CASE("no zombie and no descriptor left after start and join") {
  const std::size_t before = open_fd_count();
  std::vector<pid_t> pids;
  for (int i = 0; i < 20; ++i) {
    mproc::Process p([] {});
    p.start();
    pids.push_back(p.pid());
    p.join();
  }
  for (pid_t pid : pids) CHECK(reaped(pid));
  CHECK(open_fd_count() == before);
}

TEST_CASE("sentinel becomes readable when the process ends") {
  mproc::Queue<int> gate;
  mproc::Process p([gate] { gate.get(); });
  p.start();
  pollfd fd{p.sentinel(), POLLIN, 0};
  CHECK(::poll(&fd, 1, 0) == 0);
  gate.put(1);
  CHECK(::poll(&fd, 1, -1) == 1);
  p.join();
}

TEST_CASE("the sentinel stays open, the same descriptor, after join() and is_alive() until close() or destruction") {
  // Python's sentinel stays valid until close(): a program polls a saved one after
  // joining. Its fdinfo names the child, so a descriptor closed and reused since
  // cannot pass for it.
  const auto names_child = [](int fd, pid_t pid) {
    std::ifstream info("/proc/self/fdinfo/" + std::to_string(fd));
    for (std::string line; std::getline(info, line);) {
      if (line.rfind("Pid:", 0) == 0) return std::stoi(line.substr(4)) == pid;
    }
    return false;
  };
  mproc::Queue<int> gate;
  mproc::Process joined([gate] { gate.get(); });
  CHECK(joined.sentinel() == -1);  // not started
  joined.start();
  const int sentinel = joined.sentinel();
  REQUIRE(names_child(sentinel, joined.pid()));
  gate.put(1);
  joined.join();
  CHECK(joined.sentinel() == sentinel);
  pollfd fd{sentinel, POLLIN, 0};
  CHECK(::poll(&fd, 1, 0) == 1);
  CHECK(::fcntl(sentinel, F_GETFD) != -1);
  {
    mproc::Process polled([] {});
    polled.start();
    const int other = polled.sentinel();
    pollfd ended{other, POLLIN, 0};
    REQUIRE(::poll(&ended, 1, -1) == 1);
    CHECK_FALSE(polled.is_alive());  // reaps it
    CHECK(polled.exitcode() == 0);
    CHECK(polled.sentinel() == other);
    CHECK(::fcntl(other, F_GETFD) != -1);
    // The destructor closes it.
  }
  joined.close();
  CHECK(::fcntl(sentinel, F_GETFD) == -1);  // closed by close()
  CHECK_THROWS_AS(joined.sentinel(), mproc::ValueError);
  CHECK(joined.pid() != 0);
  const auto open_after = open_fd_count();
  {
    mproc::Process p([] {});
    p.start();
    p.join();
  }
  CHECK(open_fd_count() == open_after);
}
