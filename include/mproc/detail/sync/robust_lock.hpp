#pragma once
// RobustLock: the one scoped holder of a RobustMutex. It takes the mutex itself
// (counting a takeover from a dead holder, which the caller then repairs after) or
// adopts one the caller already took by other means (try_lock, a deadline); it can be
// moved out of the function that took the mutex, and let go early.

#include <mproc/detail/sync/robust_mutex.hpp>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <utility>

namespace mproc::detail {

class RobustLock {
 public:
  RobustLock() = default;
  /// Takes m. When the previous holder died with it, still takes it, counts the
  /// death in deaths and reports recovered().
  RobustLock(RobustMutex& m, std::atomic<std::uint64_t>& deaths) : m_(&m), deaths_(&deaths) {
    note(m.lock() == LockResult::owner_died);
  }
  /// Holds m, which the calling thread has just taken.
  RobustLock(RobustMutex& m, std::adopt_lock_t) noexcept : m_(&m) {}
  RobustLock(RobustLock&& other) noexcept
      : m_(std::exchange(other.m_, nullptr)), deaths_(other.deaths_), recovered_(other.recovered_) {}
  RobustLock& operator=(RobustLock&& other) noexcept {
    if (this != &other) {
      unlock();
      m_ = std::exchange(other.m_, nullptr);
      deaths_ = other.deaths_;
      recovered_ = other.recovered_;
    }
    return *this;
  }
  RobustLock(const RobustLock&) = delete;
  RobustLock& operator=(const RobustLock&) = delete;
  ~RobustLock() { unlock(); }

  explicit operator bool() const noexcept { return m_ != nullptr; }
  void unlock() noexcept {
    if (m_ != nullptr) std::exchange(m_, nullptr)->unlock();
  }

  /// True once the mutex was taken over from a dead holder while held here.
  bool recovered() const noexcept { return recovered_; }
  /// Waits on c (releasing the mutex meanwhile) until notified or the deadline;
  /// false on timeout. The mutex is held again either way.
  bool wait_until(SharedCondition& c, Deadline deadline) {
    const WaitResult r = c.wait_until(*m_, deadline);
    note(r.owner_died);
    return !r.timed_out;
  }

 private:
  void note(bool owner_died) noexcept {
    if (!owner_died) return;
    if (deaths_ != nullptr) deaths_->fetch_add(1, std::memory_order_relaxed);
    recovered_ = true;
  }

  RobustMutex* m_ = nullptr;
  std::atomic<std::uint64_t>* deaths_ = nullptr;
  bool recovered_ = false;
};

}  // namespace mproc::detail
