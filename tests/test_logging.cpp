// Logging from many processes: whole lines, tagged with the process name, in the
// order each process logged them, through one listener; and the fallback without one.

#include <mproc/logging.hpp>
#include <mproc/process.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace {

/// Runs body with this process's stderr sent to a pipe; returns what it wrote.
template <class Body>
std::string capture_stderr(Body body) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(fds[1], STDERR_FILENO);
  ::close(fds[1]);
  body();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  return out;
}

}  // namespace

TEST_CASE("lines from many processes arrive whole, tagged, and in each process's order") {
  constexpr int procs = 4;
  constexpr int lines = 300;
  const std::string padding(3000, '.');  // long lines: bigger than an atomic pipe write
  std::vector<mproc::LogRecord> got;
  {
    mproc::LogListener listener([&got](const mproc::LogRecord& r) { got.push_back(r); });
    std::vector<mproc::Process> workers;
    for (int p = 0; p < procs; ++p) {
      workers.emplace_back(mproc::ProcessOptions{.name = "logger-" + std::to_string(p)}, [&padding] {
        for (int i = 0; i < lines; ++i) mproc::log("line ", i, " ", padding);
      });
    }
    for (auto& w : workers) w.start();
    mproc::log("from the parent");
    for (auto& w : workers) w.join();
  }  // the listener serves everything logged before it is destroyed
  REQUIRE(got.size() == procs * lines + 1);
  std::map<std::string, int> next;
  for (const auto& r : got) {
    if (r.process == "MainProcess") {
      CHECK(r.message == "from the parent");
      continue;
    }
    REQUIRE(r.process.rfind("logger-", 0) == 0);
    CHECK(r.message == "line " + std::to_string(next[r.process]) + " " + padding);
    ++next[r.process];
  }
  CHECK(next.size() == procs);
  for (const auto& [name, count] : next) CHECK(count == lines);
}

TEST_CASE("the default sink writes [name] message lines to stderr") {
  const std::string err = capture_stderr([] {
    mproc::LogListener listener;
    mproc::log("hello ", 42);
    mproc::Process p(mproc::ProcessOptions{.name = "child-x"}, [] { mproc::log("from the child"); });
    p.start();
    p.join();
  });
  CHECK(err == "[MainProcess] hello 42\n[child-x] from the child\n");
}

TEST_CASE("each line of a message with newlines is tagged") {
  const auto line = [](std::string message) { return mproc::format_log_line({"p-1", 1, std::move(message)}); };
  CHECK(line("one") == "[p-1] one\n");
  CHECK(line("one\ntwo") == "[p-1] one\n[p-1] two\n");
  CHECK(line("one\n\nthree\n") == "[p-1] one\n[p-1] \n[p-1] three\n");
  CHECK(line("") == "[p-1] \n");
}

TEST_CASE("a child that leaves with std::exit does not stop the static LogListener it inherited") {
  // In a process of its own, so that the static listener is not the test runner's.
  mproc::Process program([] {
    const mproc::Queue<std::string> printed;
    static mproc::LogListener listener([printed](const mproc::LogRecord& r) { printed.put(r.message); });
    mproc::Process child([] {
      mproc::log("from the child");
      std::exit(3);  // runs the destructors of statics, the inherited listener's too
    });
    child.start();
    child.join();
    mproc::log("from the parent, after the child");
    const bool ok = child.exitcode() == 3 && printed.get() == "from the child" &&
                    printed.get() == "from the parent, after the child";
    ::_exit(ok ? 0 : 1);
  });
  program.start();
  program.join();
  CHECK(program.exitcode() == 0);
}

TEST_CASE("without a listener, log writes each line straight to stderr") {
  const std::string err = capture_stderr([] {
    mproc::log("direct ", 1.5);
    mproc::Process p([] { mproc::log("direct from ", mproc::current_process().name()); });
    p.start();
    p.join();
  });
  CHECK_THAT(err, Catch::StartsWith("[MainProcess] direct 1.5\n"));
  CHECK_THAT(err, Catch::Contains("] direct from Process-"));
}

TEST_CASE("a LogQueue served by a logger process, stopped by stop()") {
  mproc::LogQueue logs;
  mproc::Queue<std::string> printed;
  mproc::Process logger(
      [logs, printed] { logs.serve([&](const mproc::LogRecord& r) { printed.put(mproc::format_log_line(r)); }); });
  logger.start();
  mproc::Process worker(mproc::ProcessOptions{.name = "worker"}, [logs] { logs.log("working on ", 3); });
  worker.start();
  worker.join();
  logs.log("all done");
  logs.stop();
  logger.join();
  CHECK(logger.exitcode() == 0);
  CHECK(printed.get() == "[worker] working on 3\n");
  CHECK(printed.get() == "[MainProcess] all done\n");
  CHECK(printed.empty());
}

TEST_CASE("listeners nest: the inner one is the destination while it lives") {
  std::vector<std::string> outer_lines, inner_lines;
  {
    mproc::LogListener outer([&](const mproc::LogRecord& r) { outer_lines.push_back(r.message); });
    mproc::log("a");
    {
      mproc::LogListener inner([&](const mproc::LogRecord& r) { inner_lines.push_back(r.message); });
      mproc::log("b");
    }
    mproc::log("c");
  }
  CHECK(outer_lines == std::vector<std::string>{"a", "c"});
  CHECK(inner_lines == std::vector<std::string>{"b"});
}
