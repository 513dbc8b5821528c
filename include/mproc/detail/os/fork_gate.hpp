#pragma once
// AddressSanitizer's allocator (g++ 12's and clang 14's) takes no lock around fork():
// a child forked while another thread is inside malloc inherits that thread's
// allocator lock held, and hangs at its first allocation of the same size. glibc's
// malloc locks its arenas around fork, so only a sanitized build needs the gate: there
// mproc's own threads (each pool's, each LogListener's) hold it (shared) whenever they
// are not asleep in poll, a futex or a robust mutex, and every fork_child takes it
// whole, so no fork lands inside one of their allocations. (The thread that makes a
// pool waits while the pool forks its fork server: DispatchEngine::launch.) The user's own
// threads are not covered: that is the sanitizer's limit, not mproc's.
// Without AddressSanitizer every member is empty.

#if defined(__SANITIZE_ADDRESS__)
#define MPROC_FORK_GATE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MPROC_FORK_GATE 1
#endif
#endif

#include <sys/types.h>

#ifdef MPROC_FORK_GATE
#include <pthread.h>

#include <condition_variable>
#include <mutex>
#include <new>
#endif

namespace mproc::detail {

class ForkGate {
 public:
#ifdef MPROC_FORK_GATE
  /// The calling thread (a pool's) holds the gate until leave(), which it must call
  /// before it ends. (No thread_local guard does it: its registration would be a
  /// leak to LeakSanitizer in a child forked meanwhile that leaves with exit().)
  static void join() {
    if (held()) return;
    State& s = state();
    std::unique_lock lock(s.mutex);
    s.changed.wait(lock, [&s] { return !s.forking; });  // a fork waiting goes first
    ++s.awake;
    held() = true;
  }
  static void leave() noexcept {
    if (!held()) return;
    State& s = state();
    std::lock_guard lock(s.mutex);
    if (--s.awake == 0) s.changed.notify_all();
    held() = false;
  }

  /// Holds the gate for a scope (a thread's body).
  class Member {
   public:
    Member() { join(); }
    ~Member() { leave(); }
    Member(const Member&) = delete;
    Member& operator=(const Member&) = delete;
  };

  /// Around a blocking wait of a thread that joined: forks may happen meanwhile.
  class Asleep {
   public:
    Asleep() noexcept : was_held_(held()) { leave(); }
    ~Asleep() {
      if (was_held_) join();
    }
    Asleep(const Asleep&) = delete;
    Asleep& operator=(const Asleep&) = delete;
    void forget() noexcept { was_held_ = false; }

   private:
    bool was_held_;
  };

  /// Around fork() in the parent: no joined thread is awake meanwhile.
  class Forking {
   public:
    Forking() {
      State& s = state();
      std::unique_lock lock(s.mutex);
      s.changed.wait(lock, [&s] { return !s.forking; });
      s.forking = true;
      s.changed.wait(lock, [&s] { return s.awake == 0; });
    }
    /// Call with fork()'s result. In the child the gate is new already (see state()):
    /// this object leaves it alone.
    void forked(pid_t pid) noexcept {
      if (pid != 0) return;
      in_child_ = true;
      asleep_.forget();
    }
    ~Forking() {
      if (in_child_) return;
      State& s = state();
      std::lock_guard lock(s.mutex);
      s.forking = false;
      s.changed.notify_all();
    }
    Forking(const Forking&) = delete;
    Forking& operator=(const Forking&) = delete;

   private:
    Asleep asleep_;  // a joined thread that forks lets go of its own share first
    bool in_child_ = false;
  };

 private:
  struct State {
    std::mutex mutex;
    std::condition_variable changed;
    int awake = 0;        // joined threads not asleep
    bool forking = false;
  };
  static State& state() {
    static State s;
    // After any fork (the program's own too), the child's one thread starts outside
    // the gate, and the gate is new: the threads counted awake are not in the child,
    // and one of them may have held the gate's mutex at the fork.
    static const bool registered = (::pthread_atfork(nullptr, nullptr,
                                                     [] {
                                                       held() = false;
                                                       new (&s) State{};
                                                     }),
                                    true);
    (void)registered;
    return s;
  }
  static bool& held() noexcept {
    static thread_local bool h = false;
    return h;
  }
#else
  static void join() noexcept {}
  static void leave() noexcept {}
  struct Member {
    Member() noexcept {}
  };
  struct Asleep {
    Asleep() noexcept {}
  };
  struct Forking {
    Forking() noexcept {}
    void forked(pid_t) noexcept {}
  };
#endif
};

}  // namespace mproc::detail
