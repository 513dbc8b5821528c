#pragma once
// Boost.Interprocess as a user would set it up for the same jobs as mproc's Value,
// SharedList and SharedDict: a managed_shared_memory segment holding an int, a vector
// and a map, each guarded by a mutex placed in the segment beside it. Two flavours:
// - BoostLocks: Boost's own interprocess_mutex, for the containers and for the
//   segment's allocator (its default mutex_family). Not robust: a process killed
//   holding one leaves it locked for good.
// - RobustLocks: robust process-shared pthread mutexes in both places (a mutex family
//   of them plugged into the segment's allocator). A dead holder's mutex is taken over
//   and marked consistent, so nobody hangs; but Boost has no way to finish or undo what
//   the holder left half done, so the next locker works on whatever it left.
// bench_boost.cpp times both against mproc, and tests/test_boost_kill_safety.cpp kills
// processes in the middle of their operations. A dependency of those two only, never
// of the library.

#include <mproc/detail/sync/robust_mutex.hpp>

#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <boost/interprocess/indexes/iset_index.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/mem_algo/rbtree_best_fit.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/mutex_family.hpp>

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <functional>
#include <string>
#include <utility>

namespace mproc_bench {

namespace bip = boost::interprocess;

/// A robust process-shared pthread mutex with the members Boost.Interprocess asks of
/// a mutex (lock, try_lock, unlock). A dead holder's mutex is taken over as if it had
/// been unlocked: Boost's structures offer nothing to repair.
template <int Type>
class RobustBoostMutex {
 public:
  RobustBoostMutex() : mutex_(Type) {}
  void lock() { (void)mutex_.lock(); }
  bool try_lock() { return mutex_.try_lock() != mproc::detail::LockResult::timed_out; }
  void unlock() { mutex_.unlock(); }

 private:
  mproc::detail::RobustMutex mutex_;
};

/// The mutex family a managed segment's allocator locks with (Boost's concept).
struct RobustMutexFamily {
  using mutex_type = RobustBoostMutex<PTHREAD_MUTEX_NORMAL>;
  using recursive_mutex_type = RobustBoostMutex<PTHREAD_MUTEX_RECURSIVE>;
};

/// Boost's own locks: interprocess_mutex (a plain process-shared pthread mutex).
struct BoostLocks {
  using Family = bip::mutex_family;
  using Mutex = bip::interprocess_mutex;
};

/// Robust pthread mutexes for the containers and the segment's allocator.
struct RobustLocks {
  using Family = RobustMutexFamily;
  using Mutex = RobustBoostMutex<PTHREAD_MUTEX_NORMAL>;
};

template <class Locks>
using ManagedMemory =
    bip::basic_managed_shared_memory<char, bip::rbtree_best_fit<typename Locks::Family>, bip::iset_index>;

template <class Locks>
using SegmentManager = typename ManagedMemory<Locks>::segment_manager;

template <class T, class Locks>
using BoostVector = bip::vector<T, bip::allocator<T, SegmentManager<Locks>>>;

template <class K, class V, class Locks>
using BoostMap = bip::map<K, V, std::less<K>, bip::allocator<std::pair<const K, V>, SegmentManager<Locks>>>;

/// A T and the mutex that guards it, side by side in a segment.
template <class T, class Locks>
struct BoostGuarded {
  template <class... Args>
  explicit BoostGuarded(Args&&... args) : data(std::forward<Args>(args)...) {}
  typename Locks::Mutex mutex;
  T data;
};

/// A managed_shared_memory segment of the given size whose name is removed as soon as
/// it is made: processes forked afterwards share the mapping, and nothing is left in
/// /dev/shm whatever happens to them.
template <class Locks>
class BoostSegment {
 public:
  explicit BoostSegment(std::size_t bytes) : name_(unique_name()), memory_(bip::create_only, name_.c_str(), bytes) {
    bip::shared_memory_object::remove(name_.c_str());
  }
  BoostSegment(const BoostSegment&) = delete;
  BoostSegment& operator=(const BoostSegment&) = delete;

  ManagedMemory<Locks>& memory() noexcept { return memory_; }
  SegmentManager<Locks>* manager() noexcept { return memory_.get_segment_manager(); }

  /// A new unnamed T in the segment, its allocator (if it takes one) from the segment.
  template <class T, class... Args>
  T* make(Args&&... args) {
    return memory_.template construct<T>(bip::anonymous_instance)(std::forward<Args>(args)...);
  }

 private:
  static std::string unique_name() {
    static std::atomic<unsigned> count{0};
    return "mproc-boost-" + std::to_string(::getpid()) + "-" + std::to_string(count++);
  }

  std::string name_;
  ManagedMemory<Locks> memory_;
};

}  // namespace mproc_bench
