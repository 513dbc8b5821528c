// Fork safety: forking a multithreaded process copies every lock some other thread
// holds at that instant, held for good in the child. A Pool made while other threads
// of the program are inside malloc, inside iostreams, or running another pool must
// still have working workers, and so must the replacements of workers that die.
// Replacements are forked by the pool's fork server (a single-threaded copy of the
// program made when the pool started), never by the program itself; that is what the
// last test pins down with a user mutex held at the moment of the replacement.

#include "reliability_support.hpp"

#include <mproc/mproc.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <future>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using mproc_test::iota_vector;

using namespace std::chrono_literals;

/// Sends this process's stdout to /dev/null while it lives (the iostream thread
/// writes a lot), and restores it after.
class QuietStdout {
 public:
  QuietStdout() : saved_(::dup(STDOUT_FILENO)) {
    std::cout.flush();
    std::fflush(stdout);
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    REQUIRE(null >= 0);
    ::dup2(null, STDOUT_FILENO);
    ::close(null);
  }
  QuietStdout(const QuietStdout&) = delete;
  QuietStdout& operator=(const QuietStdout&) = delete;
  ~QuietStdout() {
    std::cout.flush();
    std::fflush(stdout);
    ::dup2(saved_, STDOUT_FILENO);
    ::close(saved_);
  }

 private:
  int saved_;
};

/// Threads that keep taking the locks a fork can catch held: a std::mutex around a
/// malloc-heavy loop, std::cout (its stream and stdout's FILE lock), and another pool
/// running maps (its thread, its fork server, its mutex). They run until destroyed.
class LockStorm {
 public:
  LockStorm() {
    threads_.emplace_back([this] {
      std::vector<std::string> keep;
      for (std::size_t i = 0; !stop_.load(); ++i) {
        std::lock_guard lock(heap_mutex_);
        keep.emplace_back(64 + i % 4000, 'x');
        if (keep.size() > 256) keep.clear();
        malloc_rounds_.fetch_add(1, std::memory_order_relaxed);
      }
    });
    threads_.emplace_back([this] {
      for (long i = 0; !stop_.load(); ++i) {
        std::cout << "iostream thread line " << i << " " << 3.25 * static_cast<double>(i) << '\n';
        cout_rounds_.fetch_add(1, std::memory_order_relaxed);
      }
      std::cout.flush();
    });
    threads_.emplace_back([this] {
      mproc::Pool other([](int x) { return std::to_string(x) + std::string(static_cast<std::size_t>(x % 50), 'y'); },
                        {.processes = 1});
      const auto inputs = iota_vector(2000);
      while (!stop_.load()) {
        const auto out = other.map(inputs);
        if (out.size() != inputs.size() || out.back().rfind("1999", 0) != 0) other_failures_.fetch_add(1);
        other_rounds_.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  LockStorm(const LockStorm&) = delete;
  LockStorm& operator=(const LockStorm&) = delete;
  ~LockStorm() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }

  long malloc_rounds() const { return malloc_rounds_.load(); }
  long cout_rounds() const { return cout_rounds_.load(); }
  long other_rounds() const { return other_rounds_.load(); }
  long other_failures() const { return other_failures_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::mutex heap_mutex_;
  std::atomic<long> malloc_rounds_{0}, cout_rounds_{0}, other_rounds_{0}, other_failures_{0};
  std::vector<std::thread> threads_;
};

/// The task: mallocs, formats through iostreams, and kills its own worker the first
/// time it runs an id that is a multiple of 25, so that replacements are forked all
/// along. The pool's retries run those again.
struct BusyTask {
  const mproc_test::SharedCounters* attempts;
  std::string operator()(int x) const {
    if (x % 25 == 0 && (*attempts)[static_cast<std::size_t>(x)]++ == 0) mproc_test::die_by_signal(SIGKILL);
    std::ostringstream text;
    text << "item " << x << ':' << std::vector<double>(static_cast<std::size_t>(x % 100), 1.5).size();
    return text.str();
  }
};

std::string expected_for(int x) { return "item " + std::to_string(x) + ':' + std::to_string(x % 100); }

/// The user's mutex that F takes; another thread of the program holds it at the
/// moment a replacement worker is forked.
std::mutex user_mutex;

}  // namespace

// AddressSanitizer's allocator (g++ 12's libasan) does not guard its own locks across
// fork as glibc's malloc does: a child forked while another thread is inside it can
// block in it forever. The storm below is that on purpose, so it runs in the plain
// build only (hidden, "[.]", in a sanitizer build; the next test runs in both).
#if defined(__SANITIZE_ADDRESS__)
#define MPROC_STORM_TAGS "[.][asan-unsafe]"
#else
#define MPROC_STORM_TAGS ""
#endif

TEST_CASE("pools made, and workers replaced, while other threads hold malloc, iostream and pool locks",
          MPROC_STORM_TAGS) {
  constexpr int rounds = 12;
  constexpr int items = 300;
  bool all_done = true;
  std::string what_failed;  // reported after the storm, when stdout is back
  long malloc_rounds = 0, cout_rounds = 0, other_rounds = 0, other_failures = 0;
  {
    QuietStdout quiet;  // no CHECK inside: Catch reports on stdout
    LockStorm storm;
    for (int round = 0; round < rounds && all_done; ++round) {
      mproc_test::SharedCounters attempts(items);
      mproc::Pool pool(BusyTask{&attempts}, {.processes = 2, .chunksize = 4, .retries = 1});
      auto result = pool.map_async(iota_vector(items));
      if (!result.wait_for(mproc_test::hang_limit)) {
        all_done = false;  // deadlocked workers: the pool's destructor kills them
        what_failed = "round " + std::to_string(round) + ": the map did not finish";
        pool.terminate();
        break;
      }
      const auto out = result.get();
      for (int x = 0; x < items && all_done; ++x) {
        all_done = out[static_cast<std::size_t>(x)] == expected_for(x);
        if (!all_done) what_failed = "round " + std::to_string(round) + ": item " + std::to_string(x) + " gave '" +
                                     out[static_cast<std::size_t>(x)] + "'";
      }
    }
    malloc_rounds = storm.malloc_rounds();
    cout_rounds = storm.cout_rounds();
    other_rounds = storm.other_rounds();
    other_failures = storm.other_failures();
  }
  INFO(what_failed);
  CHECK(all_done);
  // The storm really ran alongside.
  CHECK(malloc_rounds > 0);
  CHECK(cout_rounds > 0);
  CHECK(other_rounds > 0);
  CHECK(other_failures == 0);
}

TEST_CASE("a replacement worker does not inherit a user mutex that another thread holds when it is forked") {
  mproc::Pool pool(
      [](int x) {
        std::lock_guard lock(user_mutex);
        if (x < 0) mproc_test::die_by_signal(SIGKILL);
        return x * 2;
      },
      {.processes = 1});
  REQUIRE(pool.apply(1) == 2);  // the worker is up (forked before the mutex was taken)

  std::promise<void> held, release;
  std::thread holder([&] {
    std::lock_guard lock(user_mutex);
    held.set_value();
    release.get_future().wait();
  });
  held.get_future().wait();
  // The worker dies and its replacement is forked while user_mutex is held here. A
  // child forked from this process now would find it locked forever.
  auto died = pool.apply_async(-1);
  CHECK_THROWS_AS(died.get(mproc_test::hang_limit), mproc::WorkerLost);
  auto after = pool.map_async(iota_vector(10));
  const bool done = after.wait_for(mproc_test::hang_limit);
  CHECK(done);
  release.set_value();
  holder.join();
  if (done) {
    std::vector<int> doubled;
    for (int x : iota_vector(10)) doubled.push_back(2 * x);
    CHECK(after.get() == doubled);
  }
}
