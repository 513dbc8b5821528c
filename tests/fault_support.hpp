#pragma once
// Killing a process at one of mproc's fault points (detail/shm/crash_safety.hpp): the
// crash tests' way to leave shared state exactly as a holder that died at that
// instruction leaves it.

#include <mproc/detail/os/child.hpp>
#include <mproc/detail/shm/crash_safety.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <unistd.h>

#include <cstring>

namespace mproc_test {

namespace fault_detail {
inline const char* kill_at = nullptr;
inline void kill_if_reached(const char* where) {
  if (kill_at != nullptr && std::strcmp(where, kill_at) == 0) ::kill(::getpid(), SIGKILL);
}
}  // namespace fault_detail

/// Runs op in a forked child that is SIGKILLed when it reaches the named fault point;
/// fails the test if it ends any other way (it never reached the point).
template <class Op>
void die_at(const char* point, Op op) {
  auto child = mproc::detail::fork_child({}, [&] {
    fault_detail::kill_at = point;
    mproc::detail::fault_hook.store(fault_detail::kill_if_reached);
    op();
    return 0;
  });
  const auto& status = child.wait();
  REQUIRE(status.has_value());
  REQUIRE(status->python_exitcode() == -SIGKILL);
}

}  // namespace mproc_test
