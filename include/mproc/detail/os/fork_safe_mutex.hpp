#pragma once
// A process-wide mutex that fork() never leaves locked in the child. Another thread
// of the parent may hold an ordinary mutex at the moment of the fork; the child,
// which has only the forking thread, would then wait for it forever. pthread_atfork
// handlers take this mutex around every fork, so the child always gets it unlocked.

#include <pthread.h>

#include <mutex>

namespace mproc::detail {

/// The mutex for Tag (one per Tag type); every fork() takes it first.
template <class Tag>
std::mutex& fork_safe_mutex() {
  static std::mutex m;
  static const bool registered = [] {
    ::pthread_atfork([] { fork_safe_mutex<Tag>().lock(); }, [] { fork_safe_mutex<Tag>().unlock(); },
                     [] { fork_safe_mutex<Tag>().unlock(); });
    return true;
  }();
  (void)registered;
  return m;
}

}  // namespace mproc::detail
