#pragma once
// LockRef: how a Lock or RLock handle refers to the lock's shared state, and what
// happens when the last handle in this process goes while a thread here holds it.
//
// glibc links each robust mutex a thread holds into that thread's robust list, through
// the mutex's own memory. If that memory is unmapped while the mutex is held, the list
// points into nothing: the thread's next lock of any robust mutex writes there (SIGSEGV,
// or a write into whatever was mapped there since), and the kernel walks it when the
// thread ends. So the handles of one lock in a process share one Local, and when the
// last goes with the lock held:
// - by the calling thread (`lock.acquire(); drop`): the lock is abandoned: unlocked,
//   every level of an RLock, and the next locker sees owner_died(), as after a holder's
//   death (no handle is left here to release it).
// - by another thread of this process: a bug of the program (that thread has no handle
//   left to release it with), but glibc's list must stay sound: the memory stays mapped
//   in this process until it exits, and the lock stays held until that thread ends
//   (then the next locker gets it with owner_died(), as for any thread that ends holding
//   a lock).
// A lock held by another process is that process's; dropping the handles here does not
// touch it.

#include <mproc/detail/os/fork_safe_mutex.hpp>
#include <mproc/detail/os/pid.hpp>
#include <mproc/detail/shm/shared_heap.hpp>
#include <mproc/detail/sync/sync_state.hpp>
#include <mproc/detail/wire/bytes.hpp>

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace mproc::detail {

class LockRef {
 public:
  /// A new, unlocked lock in shared memory.
  static LockRef make(bool recursive) { return LockRef(SharedObject<LockState>::make(0, recursive)); }
  /// The lock encode() described (see SharedObject::decode), sharing its Local with
  /// every other handle of that lock in this process.
  static LockRef decode(Reader& r, const char* what) { return LockRef(SharedObject<LockState>::decode(r, what)); }
  /// Writes where the lock is.
  void encode(Writer& w) const { local_->object.encode(w); }

  LockState* operator->() const noexcept { return state_; }
  LockState& operator*() const noexcept { return *state_; }
  friend bool operator==(const LockRef& a, const LockRef& b) noexcept { return a.state_ == b.state_; }

 private:
  // One per lock in this process: it keeps the lock's memory mapped, and its
  // destructor is the last handle going.
  struct Local {
    explicit Local(SharedObject<LockState> o) noexcept : object(std::move(o)) {}
    Local(const Local&) = delete;
    Local& operator=(const Local&) = delete;
    ~Local() {
      forget(object.get());
      const pid_t holder = object->mutex.holder();
      if (holder == 0) return;  // free, or its holder died: no list here names it
      if (holder == current_tid()) {
        abandon(*object);
      } else if (::syscall(SYS_tgkill, current_pid(), holder, 0) == 0) {
        keep_mapped(std::move(object));
      }
    }
    SharedObject<LockState> object;
  };
  using Registry = std::unordered_map<const LockState*, std::weak_ptr<Local>>;

  explicit LockRef(SharedObject<LockState> object) : state_(object.get()) {
    std::lock_guard guard(fork_safe_mutex<LockRef>());
    std::weak_ptr<Local>& slot = registry()[state_];
    local_ = slot.lock();
    if (!local_) {
      local_ = std::make_shared<Local>(std::move(object));
      slot = local_;
    }
    // A duplicate object (the lock already had a handle here) goes with the argument,
    // after the mutex: dropping it never unmaps anything, the Local holds the memory.
  }

  // Never destroyed: handles in static objects may outlive any static registry.
  static Registry& registry() {
    static auto* locals = new Registry();
    return *locals;
  }
  static void forget(const LockState* state) {
    std::lock_guard guard(fork_safe_mutex<LockRef>());
    const auto it = registry().find(state);
    // Unless a handle decoded meanwhile made a new Local for it.
    if (it != registry().end() && it->second.expired()) registry().erase(it);
  }
  // Releases the lock the calling thread holds, as if it had died with it.
  static void abandon(LockState& s) noexcept {
    s.dropped_while_held.store(true, std::memory_order_relaxed);  // published by the unlock
    s.depth.store(0, std::memory_order_relaxed);
    s.owner_tid.store(0, std::memory_order_relaxed);
    while (::pthread_mutex_unlock(s.mutex.native()) == 0 && s.mutex.held_by_caller()) {
    }
  }
  static void keep_mapped(SharedObject<LockState> object) {
    static auto* kept = new std::vector<SharedObject<LockState>>();
    std::lock_guard guard(fork_safe_mutex<LockRef>());
    kept->push_back(std::move(object));
  }

  LockState* state_;
  std::shared_ptr<Local> local_;
};

}  // namespace mproc::detail
