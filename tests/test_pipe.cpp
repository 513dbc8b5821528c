// mproc::Pipe and Connection: duplex and one-way, EOFError once the other end is
// closed everywhere and drained, handing an end to a child, poll, 100 MiB messages,
// a vanished reader (EPIPE, not SIGPIPE) and no descriptor left behind.

#include "blocked_support.hpp"

#include <mproc/pipe.hpp>
#include <mproc/process.hpp>
#include <mproc/queue.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

std::size_t open_fd_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

}  // namespace

TEST_CASE("a duplex Pipe carries values both ways between processes") {
  auto [parent, child] = mproc::Pipe<std::vector<std::string>>();
  mproc::Process p(
      [](mproc::Connection<std::vector<std::string>> conn) {
        std::vector<std::string> got = conn.recv();
        got.push_back("back");
        conn.send(got);
        conn.send({"Hello", "World"});
      },
      std::move(child));
  p.start();
  parent.send({"there"});
  CHECK(parent.recv() == std::vector<std::string>{"there", "back"});
  CHECK(parent.recv() == std::vector<std::string>{"Hello", "World"});
  p.join();
  CHECK(p.exitcode() == 0);
}

TEST_CASE("a one-way Pipe: the first end receives, the second sends, in Python's order") {
  auto [r, w] = mproc::Pipe<int>(false);
  CHECK(r.readable());
  CHECK_FALSE(r.writable());
  CHECK(w.writable());
  CHECK_FALSE(w.readable());
  CHECK_THROWS_AS(r.send(1), mproc::ValueError);
  CHECK_THROWS_AS(w.recv(), mproc::ValueError);
  CHECK(w.fileno() == -1);
  mproc::Process p(
      [](mproc::Connection<int> out) {
        for (int i = 0; i < 1000; ++i) out.send(i);
      },
      std::move(w));
  p.start();
  for (int i = 0; i < 1000; ++i) CHECK(r.recv() == i);
  p.join();
}

TEST_CASE("recv throws EOFError once the other end is closed and everything was received") {
  auto [a, b] = mproc::Pipe<std::string>();
  b.send("one");
  b.send("two");
  b.close();
  CHECK(b.closed());
  CHECK(a.recv() == "one");
  CHECK(a.recv() == "two");
  CHECK_THROWS_AS(a.recv(), mproc::EOFError);
  CHECK_THROWS_AS(a.recv(), mproc::EOFError);
  CHECK_THROWS_AS(b.recv(), mproc::ValueError);  // a closed end
  CHECK_THROWS_AS(b.send("x"), mproc::ValueError);
}

TEST_CASE("an end handed to a child: the parent sees EOF when the child ends") {
  auto [parent, child] = mproc::Pipe<int>();
  mproc::Process p([](mproc::Connection<int> conn) { conn.send(1); }, std::move(child));
  CHECK(child.closed());  // moved into the Process
  p.start();
  CHECK(parent.recv() == 1);
  CHECK_THROWS_AS(parent.recv(), mproc::EOFError);  // hangs if anyone still held the child's end
  p.join();
}

TEST_CASE("an end handed to a child: the child sees EOF when the parent closes its end") {
  auto [parent, child] = mproc::Pipe<int>();
  mproc::Queue<int> total;
  mproc::Process p(
      [total](mproc::Connection<int> conn) {
        int sum = 0;
        try {
          for (;;) sum += conn.recv();
        } catch (const mproc::EOFError&) {
          total.put(sum);
        }
      },
      std::move(child));
  p.start();
  for (int i = 1; i <= 100; ++i) parent.send(i);
  parent.close();
  CHECK(total.get() == 5050);  // hangs if the child still held the parent's end
  p.join();
}

TEST_CASE("poll: false with nothing to read, true once a message or EOF is there") {
  auto [a, b] = mproc::Pipe<int>();
  CHECK_FALSE(a.poll());
  CHECK_FALSE(a.poll(10ms));
  mproc::Queue<int> gate;
  mproc::Process p(
      [gate](mproc::Connection<int> conn) {
        gate.get();
        conn.send(7);
      },
      std::move(b));
  p.start();
  CHECK_FALSE(a.poll());
  gate.put(0);
  CHECK(a.poll(std::chrono::hours(1)));
  CHECK(a.poll());
  CHECK(a.recv() == 7);
  p.join();
  CHECK(a.poll_forever());  // end of file
  CHECK_THROWS_AS(a.recv(), mproc::EOFError);
}

TEST_CASE("poll with a negative timeout does not wait, one too long for the clock waits until a message") {
  auto [a, b] = mproc::Pipe<int>();
  {
    // Were poll(-5ms) to wait, this message would end the wait and poll would say true.
    mproc_test::WhenBlocked send(mproc_test::poll_calls(), [&b = b] { b.send(1); });
    CHECK_FALSE(a.poll(-5ms));
  }
  if (!a.poll()) b.send(1);
  CHECK(a.recv() == 1);
  {
    mproc_test::WhenBlocked send(mproc_test::poll_calls(), [&b = b] { b.send(2); });
    CHECK(a.poll(std::chrono::seconds::max()));
  }
  CHECK(a.recv() == 2);
}

TEST_CASE("poll sees messages already buffered by an earlier recv") {
  auto [a, b] = mproc::Pipe<int>();
  b.send(1);
  b.send(2);  // both arrive in one read
  CHECK(a.recv() == 1);
  CHECK(a.poll());
  CHECK(a.recv() == 2);
  CHECK_FALSE(a.poll());
}

TEST_CASE("a 100 MiB message goes through a Pipe both ways") {
  std::vector<std::int64_t> big((std::size_t{100} << 20) / sizeof(std::int64_t));
  std::iota(big.begin(), big.end(), std::int64_t{7});
  auto [a, b] = mproc::Pipe<std::vector<std::int64_t>>();
  mproc::Process echo([](mproc::Connection<std::vector<std::int64_t>> conn) { conn.send(conn.recv()); }, std::move(b));
  echo.start();
  a.send(big);  // blocks until the child has read most of it, as in Python
  CHECK(a.recv() == big);
  echo.join();
  CHECK(echo.exitcode() == 0);
}

TEST_CASE("send to an end closed everywhere throws OSError instead of killing with SIGPIPE") {
  auto [a, b] = mproc::Pipe<int>();
  b.close();
  try {
    a.send(1);
    FAIL("send succeeded");
  } catch (const mproc::OSError& e) {
    CHECK(e.error_code() == EPIPE);
  }
  auto [r, w] = mproc::Pipe<int>(false);
  r.close();
  CHECK_THROWS_AS(w.send(1), mproc::OSError);
}

TEST_CASE("moving a Connection moves the end, and the moved-from one is closed") {
  auto [a, b] = mproc::Pipe<int>();
  mproc::Connection<int> c = std::move(a);
  CHECK(a.closed());
  CHECK_FALSE(c.closed());
  b.send(3);
  CHECK(c.recv() == 3);
  mproc::Connection<int> d;
  CHECK(d.closed());
  d = std::move(c);
  b.send(4);
  CHECK(d.recv() == 4);
}

TEST_CASE("no descriptor is left once both ends are gone, in parent or child") {
  const std::size_t before = open_fd_count();
  for (int i = 0; i < 10; ++i) {
    auto [a, b] = mproc::Pipe<int>(i % 2 == 0);
    mproc::Process p(
        [](mproc::Connection<int> conn) {
          if (conn.writable()) conn.send(1);
        },
        std::move(b));
    p.start();
    if (a.readable()) CHECK(a.recv() == 1);
    p.join();
  }
  CHECK(open_fd_count() == before);
}
