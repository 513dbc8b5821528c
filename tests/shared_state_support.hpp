#pragma once
// Helpers for the shared-state tests (test_shared, test_sync, test_manager): forked
// children that report through their exit code, and the checks that mproc leaves
// nothing behind: no file in /dev/shm (checked around every test binary by a Catch2
// listener), no descriptor or mapping of a segment once the handles are gone.

#include <mproc/detail/os/child.hpp>
#include <mproc/detail/shm/crash_safety.hpp>
#include <mproc/detail/shm/segment.hpp>
#include <mproc/detail/shm/shared_heap.hpp>

// Catch2 v2 declares its listener base only with this; include this header before
// catch.hpp (and before any header that includes it: clang-format sorts includes
// within a block, so give this one a block of its own).
#if defined(TWOBLUECUBES_SINGLE_INCLUDE_CATCH_HPP_INCLUDED) && !defined(CATCH_CONFIG_EXTERNAL_INTERFACES)
#error "include shared_state_support.hpp before catch2/catch.hpp, in an include block of its own"
#endif
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <utility>

namespace mproc_test {

/// Forks a child that runs body() (returning its exit code) and _exits; never
/// returns into the test runner.
template <class Body>
mproc::detail::Child spawn(Body&& body) {
  return mproc::detail::fork_child({}, std::forward<Body>(body));
}

/// Waits for the child and returns its exit code (-signal if killed).
inline int exit_code(mproc::detail::Child& child) {
  const auto& status = child.wait();
  REQUIRE(status.has_value());
  return status->python_exitcode();
}

/// True if f() throws an E (for checks inside forked children, which report through
/// their exit code rather than CHECK).
template <class E, class F>
bool throws(F&& f) {
  try {
    f();
  } catch (const E&) {
    return true;
  }
  return false;
}

/// Forks a child that takes a lock (through take()) and dies with SIGKILL holding it.
template <class Take>
void die_holding(Take&& take) {
  auto child = spawn([&] {
    take();
    ::kill(::getpid(), SIGKILL);
    return 0;
  });
  REQUIRE(exit_code(child) == -SIGKILL);
}

/// Sets mproc's test fault hook (detail/shm/crash_safety.hpp) for a scope.
class FaultHook {
 public:
  explicit FaultHook(void (*hook)(const char*)) noexcept { mproc::detail::fault_hook.store(hook); }
  FaultHook(const FaultHook&) = delete;
  FaultHook& operator=(const FaultHook&) = delete;
  ~FaultHook() { mproc::detail::fault_hook.store(nullptr); }
};

inline std::set<std::string> directory_entries(const char* path) {
  std::set<std::string> names;
  if (DIR* d = ::opendir(path)) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.insert(name);
    }
    ::closedir(d);
  }
  return names;
}

/// The files in /dev/shm (POSIX named shared memory and semaphores), but those of
/// Open MPI jobs (ctest runs the MPI tests beside this binary; their shared-memory
/// transport makes and removes its own files there while this one runs).
inline std::set<std::string> dev_shm() {
  std::set<std::string> names = directory_entries("/dev/shm");
  std::erase_if(names, [](const std::string& name) {
    return name.starts_with("vader_segment.") || name.starts_with("sm_segment.") || name.starts_with("ompi.");
  });
  return names;
}

/// How many descriptors this process has open.
inline std::size_t open_descriptors() { return directory_entries("/proc/self/fd").size(); }

/// How many mappings of mproc segments this process has.
inline std::size_t segment_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::size_t n = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/memfd:mproc") != std::string::npos) ++n;
  }
  return n;
}

/// Lets go of the segments mproc keeps for reuse (the heap's current arena, the
/// recently decoded ones), so that only segments held by live handles stay mapped.
inline void drop_cached_segments() {
  mproc::detail::SharedHeap::instance().drop_current();
  mproc::detail::SegmentRegistry::instance().drop_recent();
}

/// Fails the test binary if /dev/shm differs after the run from before it.
struct DevShmListener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  std::set<std::string> before;
  void testRunStarting(const Catch::TestRunInfo&) override { before = dev_shm(); }
  void testRunEnded(const Catch::TestRunStats&) override {
    const auto after = dev_shm();
    if (after == before) return;
    std::fprintf(stderr, "FAILED: /dev/shm changed during the test run:\n");
    for (const auto& name : after) {
      if (before.count(name) == 0) std::fprintf(stderr, "  new: /dev/shm/%s\n", name.c_str());
    }
    for (const auto& name : before) {
      if (after.count(name) == 0) std::fprintf(stderr, "  gone: /dev/shm/%s\n", name.c_str());
    }
    std::fflush(stderr);
    std::_Exit(EXIT_FAILURE);
  }
};
CATCH_REGISTER_LISTENER(DevShmListener)

}  // namespace mproc_test
