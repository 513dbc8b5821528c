#pragma once
// Process-wide mutexes that fork() never leaves locked in the child. Another thread
// of the parent may hold an ordinary mutex at the moment of the fork; the child,
// which has only the forking thread, would then wait for it forever. pthread_atfork
// handlers take each of these mutexes around every fork, so the child always gets
// them unlocked; and a thread may fork while it holds one (the handlers see that the
// forking thread is the holder), so holding one also means "no fork by another
// thread meanwhile" (ForkBlock).

#include <pthread.h>

#include <mutex>

namespace mproc::detail {

/// The mutex for Tag (one per Tag type). Lockable; re-entrant on one thread.
template <class Tag>
class ForkSafeMutex {
 public:
  void lock() {
    if (depth()++ == 0) mutex().lock();
  }
  void unlock() {
    if (--depth() == 0) mutex().unlock();
  }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    // Around a fork: the forking thread takes the mutex unless it holds it already;
    // the child, whose only thread is that one, gets it back as the parent does.
    static const bool registered = (::pthread_atfork(
                                        [] {
                                          if (depth() == 0) mutex().lock();
                                        },
                                        [] {
                                          if (depth() == 0) mutex().unlock();
                                        },
                                        [] {
                                          if (depth() == 0) mutex().unlock();
                                        }),
                                    true);
    (void)registered;
    return m;
  }
  static int& depth() noexcept {
    thread_local int held = 0;
    return held;
  }
};

/// The ForkSafeMutex for Tag.
template <class Tag>
ForkSafeMutex<Tag>& fork_safe_mutex() {
  static ForkSafeMutex<Tag> m;
  return m;
}

/// Holds off every fork() of this process by another thread while it lives.
class ForkBlock {
 public:
  ForkBlock() { fork_safe_mutex<ForkBlock>().lock(); }
  ~ForkBlock() { fork_safe_mutex<ForkBlock>().unlock(); }
  ForkBlock(const ForkBlock&) = delete;
  ForkBlock& operator=(const ForkBlock&) = delete;
};

}  // namespace mproc::detail
