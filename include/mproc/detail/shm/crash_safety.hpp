#pragma once
// Ordering stores for processes that may die at any instruction. Another process
// reads shared state only after taking the robust mutex that guards it, which orders
// memory between processes; what remains is to keep the compiler from moving stores
// across the points where a half-done operation must be recognisable. Also the fault
// hook the tests kill processes with (or interleave others) at those points.

#include <atomic>

namespace mproc::detail {

/// Stores value into field so that, should the process die anywhere around here,
/// every store before it has happened and none after it has: the compiler may not
/// move stores across (a killed process stops between two instructions, so program
/// order is what the next locker finds).
template <class T>
inline void publish(T& field, const T& value) noexcept {
  std::atomic_signal_fence(std::memory_order_seq_cst);
  field = value;
  std::atomic_signal_fence(std::memory_order_seq_cst);
}

/// Test hook: called where a shared-memory operation is half done. The crash tests
/// set it to a function that kills the process at a chosen point, others to one that
/// makes a chosen interleaving happen there (or throws, to test the way out); null
/// otherwise.
inline std::atomic<void (*)(const char*)> fault_hook{nullptr};

inline void fault_point(const char* where) {
  if (auto* hook = fault_hook.load(std::memory_order_relaxed)) hook(where);
}

}  // namespace mproc::detail
