// Value<T> and Array<T> across processes: seed 001's race, atomic updates, values
// larger than an atomic, arrays big and small, handles sent to a Pool started before
// them, handles whose owner is gone, and nothing left behind afterwards.

#include "shared_state_support.hpp"  // first: it configures Catch2

#include <mproc/codec.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/manager.hpp>
#include <mproc/pool.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

#include <catch2/catch.hpp>

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace {

using namespace std::chrono_literals;
using mproc_test::exit_code;
using mproc_test::spawn;

TEST_CASE("seed 001: two processes add and subtract 10 fifty times each and with the lock the result is 1000") {
  mproc::Value<int> x(1000);
  mproc::Lock lock;
  auto add = spawn([&] {
    for (int i = 0; i < 50; ++i) {
      std::lock_guard guard(lock);
      x.value() += 10;
    }
    return 0;
  });
  auto sub = spawn([&] {
    for (int i = 0; i < 50; ++i) {
      std::lock_guard guard(lock);
      x.value() -= 10;
    }
    return 0;
  });
  CHECK(exit_code(add) == 0);
  CHECK(exit_code(sub) == 0);
  CHECK(x.load() == 1000);
}

TEST_CASE("Value::update is one atomic read-modify-write across processes") {
  mproc::Value<long> counter(0);
  constexpr int per_child = 20000;
  std::vector<mproc::detail::Child> children;
  for (int c = 0; c < 2; ++c) {
    children.push_back(spawn([&] {
      for (int i = 0; i < per_child; ++i) counter.update([](long& v) { ++v; });
      return 0;
    }));
  }
  for (int i = 0; i < per_child; ++i) {
    std::lock_guard guard(counter.get_lock());  // Python's `with x.get_lock(): x.value += 1`
    counter.value() += 1;
  }
  for (auto& c : children) CHECK(exit_code(c) == 0);
  CHECK(counter.load() == 3 * per_child);
}

TEST_CASE("Value: load, store, value(), and store/update inside a held get_lock()") {
  mproc::Value<double> v;
  CHECK(v.load() == 0.0);
  v.store(2.5);
  CHECK(v.value() == 2.5);
  CHECK(v.update([](double& d) { d *= 2; }) == 5.0);
  {
    std::lock_guard guard(v.get_lock());
    v.store(v.load() + 1);  // uses the caller's hold instead of deadlocking
    CHECK(v.update([](double& d) { d += 1; }) == 7.0);
  }
  auto child = spawn([&] {
    v.store(-1);
    return 0;
  });
  CHECK(exit_code(child) == 0);
  CHECK(v.load() == -1.0);
  mproc::Value<int> copy = mproc::Value<int>(3);
  mproc::Value<int> alias = copy;  // a handle: the same shared int
  alias.store(4);
  CHECK(copy.load() == 4);
}

struct Triple {
  std::int64_t a, b, sum;  // sum == a + b whenever the lock is free
};

TEST_CASE("Value of a struct larger than an atomic: load() never sees half an update") {
  mproc::Value<Triple> t(Triple{0, 0, 0});
  static_assert(!std::atomic_ref<Triple>::is_always_lock_free);
  auto writer = spawn([&] {
    for (std::int64_t i = 1; i <= 20000; ++i) t.store(Triple{i, 2 * i, 3 * i});
    return 0;
  });
  bool consistent = true;
  for (int i = 0; i < 20000; ++i) {  // reads racing the writer's stores
    const Triple seen = t.load();
    consistent = consistent && seen.a + seen.b == seen.sum;
  }
  CHECK(exit_code(writer) == 0);
  CHECK(consistent);
  CHECK(t.load().sum == 60000);
}

TEST_CASE("Values made with one Lock share it") {
  mproc::Lock lock;
  mproc::Value<int> a(1, lock), b(2, lock);
  CHECK(a.get_lock() == lock);
  CHECK(b.get_lock() == lock);
  std::lock_guard guard(lock);
  auto child = spawn([&] { return b.get_lock().try_lock() ? 1 : 0; });
  CHECK(exit_code(child) == 0);
}

TEST_CASE("Array: zero-initialised, shared with children, bounds-checked") {
  mproc::Array<int> arr(1000);
  CHECK(arr.size() == 1000);
  CHECK(std::accumulate(arr.begin(), arr.end(), 0) == 0);
  std::vector<mproc::detail::Child> children;
  for (int c = 0; c < 2; ++c) {
    children.push_back(spawn([&, c] {
      for (std::size_t i = static_cast<std::size_t>(c); i < arr.size(); i += 2) arr[i] = static_cast<int>(i);
      return 0;
    }));
  }
  for (auto& c : children) CHECK(exit_code(c) == 0);
  std::vector<int> expected(1000);
  std::iota(expected.begin(), expected.end(), 0);
  CHECK(arr.to_vector() == expected);
  CHECK(arr.span().size() == 1000);
  CHECK(arr.at(999) == 999);
  CHECK_THROWS_AS(arr.at(1000), mproc::IndexError);
  CHECK(arr.update([](std::span<int> s) { return s[0] + s[1]; }) == 1);

  mproc::Array<double> listed{1.5, 2.5};
  CHECK(listed.to_vector() == std::vector<double>{1.5, 2.5});
  const std::vector<short> source{1, 2, 3};
  CHECK(mproc::Array<short>(source).to_vector() == source);
  CHECK(mproc::Array<char>(3, 'x').to_vector() == std::vector<char>{'x', 'x', 'x'});
}

TEST_CASE("A large Array gets its own segment and is shared all the same") {
  constexpr std::size_t n = 4 << 20;  // 32 MiB of doubles
  mproc::Array<double> big(n, 1.0);
  auto child = spawn([&] {
    big[n - 1] = 42.0;
    return big[0] == 1.0 ? 0 : 1;
  });
  CHECK(exit_code(child) == 0);
  CHECK(big[n - 1] == 42.0);
}

// n, hidden from the optimiser (which would otherwise warn about filling n elements
// the constructor throws before reaching).
std::size_t at_run_time(std::size_t n) {
  volatile std::size_t hidden = n;
  return hidden;
}

TEST_CASE("An Array whose size overflows throws SharedMemoryFull instead of handing out a short block") {
  // n * 8 wraps around to 8 bytes
  CHECK_THROWS_AS(mproc::Array<double>(at_run_time((std::size_t{1} << 61) + 1)), mproc::SharedMemoryFull);
  // wraps once the header is added
  CHECK_THROWS_AS(mproc::Array<char>(at_run_time(SIZE_MAX)), mproc::SharedMemoryFull);
  CHECK_THROWS_AS(mproc::Array<std::int64_t>(at_run_time(SIZE_MAX / 8)), mproc::SharedMemoryFull);
  mproc::Array<double> fine(3);  // and the heap still works
  CHECK(fine.size() == 3);
}

TEST_CASE("2,000 Arrays of 24 KB alive at once take a few descriptors, within the usual limit of 1,024") {
  auto child = spawn([] {  // with the limit lowered for this process only
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_cur, 1024);
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return 10;
    const std::size_t before = mproc_test::open_descriptors();
    std::vector<mproc::Array<double>> arrays;
    for (int i = 0; i < 2000; ++i) arrays.emplace_back(3000, static_cast<double>(i));
    const std::size_t grew = mproc_test::open_descriptors() - before;
    for (int i = 0; i < 2000; ++i) {  // every Array its own memory
      const auto& a = arrays[static_cast<std::size_t>(i)];
      if (a.size() != 3000 || a[0] != i || a[2999] != i) return 11;
    }
    return grew <= 20 ? 0 : 12;
  });
  CHECK(exit_code(child) == 0);
}

TEST_CASE("A parent and a child carving Arrays from the arena they share get separate memory") {
  mproc_test::drop_cached_segments();
  mproc::Value<int> first(0);  // makes the arena both will carve from (and grow)
  constexpr int count = 300;
  const auto fill_and_check = [](int who) {
    std::vector<mproc::Array<std::int32_t>> mine;
    for (int i = 0; i < count; ++i) mine.emplace_back(6000, who);
    for (auto& a : mine) {
      for (std::int32_t x : a) {
        if (x != who) return false;
      }
    }
    return true;
  };
  auto child = spawn([&] { return fill_and_check(2) ? 0 : 1; });
  CHECK(fill_and_check(1));
  CHECK(exit_code(child) == 0);
}

TEST_CASE("Running out of descriptors for shared memory says which limit to raise") {
  auto child = spawn([] {
    // UndefinedBehaviorSanitizer checks the dynamic type of an object it has not seen
    // before through a pipe, which this child will have no descriptor for: show it an
    // OSError used as below first (a no-op in other builds).
    const auto matches = [](const mproc::OSError& e) {
      const std::string what = e.what();
      return e.error_code() == EMFILE && what.find("RLIMIT_NOFILE") != std::string::npos &&
             what.find("ulimit -n") != std::string::npos;
    };
    (void)matches(mproc::OSError("warm-up", EMFILE));
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = static_cast<rlim_t>(mproc_test::open_descriptors()) + 6;  // a few to spare
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return 10;
    std::vector<mproc::Array<char>> arrays;  // own_segment_size: a segment each
    try {
      for (int i = 0; i < 64; ++i) arrays.emplace_back(mproc::detail::SharedHeap::own_segment_size);
    } catch (const mproc::OSError& e) {
      return matches(e) ? 0 : 12;
    }
    return 11;
  });
  CHECK(exit_code(child) == 0);
}

long add_to(mproc::Value<long> total, mproc::Array<long> seen, int i) {
  total.update([i](long& v) { v += i; });
  seen[static_cast<std::size_t>(i)] = 1;
  return i;
}

TEST_CASE("Values and Arrays can be Pool task arguments, even for a Pool started before them") {
  mproc::Pool pool(add_to, {.processes = 2});
  mproc::Value<long> total(0);
  mproc::Array<long> seen(100);
  std::vector<std::tuple<mproc::Value<long>, mproc::Array<long>, int>> tasks;
  for (int i = 0; i < 100; ++i) tasks.emplace_back(total, seen, i);
  pool.starmap(tasks);
  CHECK(total.load() == 99 * 100 / 2);
  CHECK(std::accumulate(seen.begin(), seen.end(), 0L) == 100);
}

namespace {
/// The inodes of the memfds named "mproc" (the segments) that process pid holds a
/// descriptor of, or maps.
std::set<ino_t> segment_inodes(pid_t pid) {
  std::set<ino_t> inodes;
  const std::string proc = "/proc/" + std::to_string(pid);
  for (const auto& fd : mproc_test::directory_entries((proc + "/fd").c_str())) {
    char target[256] = {};
    const std::string link = proc + "/fd/" + fd;
    struct stat st{};
    if (::readlink(link.c_str(), target, sizeof target - 1) > 0 &&
        std::string(target).rfind("/memfd:mproc (", 0) == 0 && ::stat(link.c_str(), &st) == 0) {
      inodes.insert(st.st_ino);
    }
  }
  std::ifstream maps(proc + "/maps");
  for (std::string line; std::getline(maps, line);) {
    std::istringstream fields(line);
    std::string range, perms, offset, device, path;
    ino_t inode = 0;
    if (fields >> range >> perms >> offset >> device >> inode >> path && path == "/memfd:mproc") inodes.insert(inode);
  }
  return inodes;
}

pid_t worker_pid_seeing(mproc::Array<char> a, char expected) { return a[a.size() - 1] == expected ? ::getpid() : -1; }
}  // namespace

TEST_CASE("A large Array dropped after being sent to a pool task goes back to the system while the pool lives") {
  mproc::Pool pool(worker_pid_seeing, {.processes = 1});
  const mproc::Array<char> small(10, 'd');  // the arena of the small parts is made now
  std::set<ino_t> dropped;
  pid_t worker = 0;
  for (char c : {'a', 'b', 'c'}) {  // each a segment of its own (256 KiB or more)
    const auto before = segment_inodes(::getpid());
    mproc::Array<char> big(std::size_t{1} << 20, c);
    const auto after = segment_inodes(::getpid());
    REQUIRE(after.size() == before.size() + 1);
    for (ino_t inode : after) {
      if (before.count(inode) == 0) dropped.insert(inode);
    }
    worker = pool.apply(big, c);
    REQUIRE(worker > 0);
  }
  CHECK(pool.apply(small, 'd') == worker);  // the worker has run on since
  const auto held_here = segment_inodes(::getpid());
  const auto held_by_worker = segment_inodes(worker);
  for (ino_t inode : dropped) {
    INFO("segment inode " << inode);
    CHECK(held_here.count(inode) == 0);
    CHECK(held_by_worker.count(inode) == 0);  // so no process holds it: its memory is freed
  }
}

TEST_CASE("A handle whose every holder is gone cannot be decoded: SharedMemoryGone") {
  mproc_test::drop_cached_segments();  // so that the child carves the Value from an arena of its own
  auto pipe = mproc::detail::make_pipe();
  auto child = spawn([&] {
    const mproc::Bytes bytes = mproc::encode(mproc::Value<int>(5));
    return mproc::detail::write_all(pipe.write.get(), bytes.data(), bytes.size()) ? 0 : 1;
  });
  CHECK(exit_code(child) == 0);
  pipe.write.reset();
  std::array<std::byte, 256> buffer{};
  const ssize_t n = mproc::detail::read_some(pipe.read.get(), buffer.data(), buffer.size());
  REQUIRE(n > 0);
  const std::span<const std::byte> bytes(buffer.data(), static_cast<std::size_t>(n));
  CHECK_THROWS_AS(mproc::decode<mproc::Value<int>>(bytes), mproc::SharedMemoryGone);
}

TEST_CASE("Nothing is left behind: no /dev/shm file, descriptor or mapping once the handles are gone") {
  mproc_test::drop_cached_segments();
  const auto shm_before = mproc_test::dev_shm();
  const auto fds_before = mproc_test::open_descriptors();
  REQUIRE(mproc_test::segment_mappings() == 0);
  {
    mproc::Manager mgr;
    auto lst = mgr.list<std::string>();
    auto d = mgr.dict<int, int>();
    mproc::Value<int> v(1);
    mproc::Array<double> small(10), big(1 << 20);
    mproc::Lock lock;
    mproc::RLock rlock;
    mproc::Event event;
    mproc::Semaphore sem;
    mproc::Condition cond;
    mproc::Barrier barrier(2);
    auto child = spawn([&] {
      lst.append("x");
      d.set(1, 2);
      v.store(2);
      event.set();
      barrier.wait();
      return 0;
    });
    barrier.wait();
    CHECK(exit_code(child) == 0);
    CHECK(lst.size() == 1);
    const mproc::Bytes sent = mproc::encode(std::make_tuple(lst, d, v, big, lock, cond));
    auto received = mproc::decode<decltype(std::make_tuple(lst, d, v, big, lock, cond))>(sent);
    CHECK(std::get<2>(received).load() == 2);
    CHECK(mproc_test::segment_mappings() > 0);
  }
  mproc_test::drop_cached_segments();
  CHECK(mproc_test::segment_mappings() == 0);
  CHECK(mproc_test::open_descriptors() == fds_before);
  CHECK(mproc_test::dev_shm() == shm_before);
}

TEST_CASE("Nothing is left behind when the program using shared state is killed with SIGKILL") {
  const auto shm_before = mproc_test::dev_shm();
  auto ready = mproc::detail::make_pipe();
  auto program = spawn([&] {  // stands in for a whole program: it makes everything, then is killed
    mproc::Manager mgr;
    auto lst = mgr.list<int>({1, 2, 3});
    mproc::Value<int> v(1);
    mproc::Lock lock;
    lock.lock();
    mproc::Event never;
    auto worker = spawn([&] {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the program
      lst.append(4);
      return mproc::detail::write_all(ready.write.get(), "w", 1) ? (never.wait(), 0) : 1;
    });
    (void)mproc::detail::write_all(ready.write.get(), "p", 1);
    never.wait();
    return 0;
  });
  std::size_t got = 0;
  char buffer[2];
  while (got < 2) {  // both the program and its worker are up
    const ssize_t n = mproc::detail::read_some(ready.read.get(), buffer + got, 2 - got);
    REQUIRE(n > 0);
    got += static_cast<std::size_t>(n);
  }
  program.kill(SIGKILL);
  CHECK(exit_code(program) == -SIGKILL);
  CHECK(mproc_test::dev_shm() == shm_before);
}

}  // namespace
