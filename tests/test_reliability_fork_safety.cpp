// Fork safety: forking a multithreaded process copies every lock some other thread
// holds at that instant, held for good in the child. A Pool made while other threads
// of the program are inside malloc, inside iostreams, or running another pool must
// still have working workers, and so must the replacements of workers that die.
// Replacements are forked by the pool's fork server (a single-threaded copy of the
// program made when the pool started), never by the program itself; that is what the
// last test pins down with a user mutex held at the moment of the replacement.

#include "reliability_support.hpp"  // first: it configures Catch2

#include <mproc/mproc.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
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
        if (!all_done)
          what_failed = "round " + std::to_string(round) + ": item " + std::to_string(x) + " gave '" +
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

// ---------------------------------------------------------------------------
// A pool's descriptors are its own: no other process may hold a copy. A worker
// leaves when its task pipe says so, and a copy of that pipe held elsewhere would
// hide the end of file; another pool's fork server would keep it for its lifetime.

namespace {

/// The descriptors open in this process now.
std::set<int> open_fds() {
  std::set<int> fds;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    fds.insert(std::stoi(entry.path().filename().string()));
  }
  return fds;
}

/// In a child forked by mproc: how many of its descriptors the program did not have
/// before any pool existed (those are copies of a pool's own, caught unmarked).
int descriptors_beyond(const std::set<int>& before) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 100;
  int extra = 0;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const int fd = std::atoi(e->d_name);
    if (fd != ::dirfd(dir) && before.count(fd) == 0) {
      ++extra;
      char link[256] = {};
      (void)!::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), link, sizeof link - 1);
      std::fprintf(stderr, "child %d holds a copy of descriptor %d (%s)\n", static_cast<int>(::getpid()), fd, link);
    }
  }
  ::closedir(dir);
  return std::min(extra, 100);
}

using IntPool = mproc::Pool<int (*)(int)>;
int plus_one(int x) { return x + 1; }
/// The name of the worker running the task, "ForkPoolWorker-<n>": unlike a pid,
/// never the same for two workers of a pool.
std::string worker_name(int) { return mproc::current_process().name(); }
using NamePool = mproc::Pool<std::string (*)(int)>;

}  // namespace

// (Forks from a thread while others allocate, so not in a sanitizer build: see above.)
TEST_CASE("no fork copies a pool's descriptors: another thread makes pools and forks while a pool replaces "
          "a worker per task, which never stalls",
          MPROC_STORM_TAGS) {
  // Pool A forks a worker for every task, so its thread is forever receiving fresh
  // descriptors from its fork server; thread B meanwhile makes pools (kept until the
  // end: a copy caught by one of their fork servers would stay for the whole test)
  // and forks children that count the descriptors they got beyond the program's own.
  constexpr int tasks = 1500;
  const std::set<int> before = open_fds();
  std::atomic<bool> done{false};
  std::atomic<int> children{0}, children_with_copies{0}, pools_made{0};
  std::thread other([&] {
    std::vector<std::unique_ptr<IntPool>> pools;
    while (!done.load()) {
      if (pools.size() < 8) {
        pools.push_back(std::make_unique<IntPool>(plus_one, mproc::PoolOptions{.processes = 1}));
        pools_made.fetch_add(1);
      }
      auto child = mproc::detail::fork_child({}, [&] { return descriptors_beyond(before); });
      const auto status = child.wait();
      children.fetch_add(1);
      if (!status || status->exit_code != 0) children_with_copies.fetch_add(1);
    }
    for (auto& p : pools) CHECK(p->apply(1) == 2);  // they worked all along
  });

  std::set<std::string> workers;
  bool finished = true;
  {
    NamePool a(worker_name, {.processes = 1, .maxtasksperchild = 1});
    for (int i = 0; i < tasks && finished; ++i) {
      auto r = a.apply_async(i);
      finished = r.wait_for(mproc_test::hang_limit);  // a stalled replacement never gets here
      if (finished) workers.insert(r.get());
    }
    done = true;
    if (!finished) a.terminate();
  }
  other.join();
  INFO(children.load() << " children forked by the other thread, " << pools_made.load() << " pools made there");
  CHECK(finished);
  CHECK(workers.size() == static_cast<std::size_t>(tasks));  // one worker per task
  CHECK(children_with_copies.load() == 0);
  CHECK(children.load() > tasks / 10);  // the other thread really forked alongside
}

TEST_CASE("a process forked outside mproc that holds copies of a pool's pipes does not stall its retiring workers") {
  // A plain fork() (the program's own, not mproc's) copies every descriptor, the
  // pool's included. Its copy of a worker's task pipe keeps that pipe's end of file
  // away for as long as it lives; the worker still leaves when told to.
  NamePool pool(worker_name, {.processes = 1, .maxtasksperchild = 2});
  std::set<std::string> workers{pool.apply(0)};  // its worker is up, with one task to go
  auto hold = mproc::detail::make_pipe();
  const pid_t holder = ::fork();
  REQUIRE(holder >= 0);
  if (holder == 0) {  // holds everything it inherited until the test closes `hold`
    hold.write.reset();
    char c;
    (void)!::read(hold.read.get(), &c, 1);
    ::_exit(0);
  }
  mproc::detail::Child holding(holder, mproc::detail::Fd(static_cast<int>(::syscall(SYS_pidfd_open, holder, 0))));
  hold.read.reset();
  bool finished = true;
  for (int i = 1; i <= 5 && finished; ++i) {  // the first worker retires after task 1
    auto r = pool.apply_async(i);
    finished = r.wait_for(mproc_test::hang_limit);
    if (finished) workers.insert(r.get());
  }
  CHECK(finished);
  CHECK(workers.size() == 3);  // two tasks each
  hold.write.reset();  // the holder leaves
  CHECK(holding.wait(mproc::detail::Deadline::after(mproc_test::hang_limit)).has_value());
  if (!finished) pool.terminate();
}

TEST_CASE("descriptors of any number can be private: those from 65536 up are closed in children too") {
  using mproc::detail::PrivateFds;
  for (int fd : {70000, (1 << 20) + 3, (1 << 30) + 65}) {
    INFO("descriptor " << fd);
    CHECK_FALSE(PrivateFds::contains(fd));
    PrivateFds::add(fd);
    CHECK(PrivateFds::contains(fd));
    CHECK_FALSE(PrivateFds::contains(fd + 1));
    PrivateFds::remove(fd);
    CHECK_FALSE(PrivateFds::contains(fd));
  }
  // A real one, where the descriptor limit allows it (raising the soft limit up to
  // the hard one needs no privilege).
  rlimit limit{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
  constexpr int high = 70000;
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max <= static_cast<rlim_t>(high)) {
    WARN("the hard descriptor limit (" << limit.rlim_max << ") is below " << high << ": only the bitset is checked");
    return;
  }
  const rlimit raised{static_cast<rlim_t>(high) + 1, limit.rlim_max};
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &raised) == 0);
  {
    auto pipe = mproc::detail::make_pipe();
    REQUIRE(::dup3(pipe.write.get(), high, O_CLOEXEC) == high);
    mproc::detail::Fd fd = mproc::detail::Fd(high).make_private();
    auto child = mproc::detail::fork_child({}, [] { return ::fcntl(high, F_GETFD) == -1 && errno == EBADF ? 0 : 1; });
    const auto status = child.wait();
    REQUIRE(status.has_value());
    CHECK(status->exit_code == 0);
  }
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &limit) == 0);
}
