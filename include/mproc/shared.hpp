#pragma once
// Value<T> and Array<T>: Python's multiprocessing.Value and Array. A T (or n of
// them) in shared memory, in place, with a Lock to guard them.
//
//   mproc::Value<int> x(1000);
//   x.update([](int& v) { v += 10; });          // read-modify-write under the lock
//   { std::lock_guard g(x.get_lock()); x.value() -= 10; }  // Python's `with x.get_lock():`
//
// Made before the processes (or Pool) that use them, they are shared by
// inheritance; they can also be sent, e.g. as Pool task arguments, to processes
// that started earlier. Copies of a Value or Array are handles to the same memory.

#include <mproc/codec.hpp>
#include <mproc/detail/shm/shared_heap.hpp>
#include <mproc/detail/wire/handle_codec.hpp>
#include <mproc/errors.hpp>
#include <mproc/sync.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace mproc {

namespace detail {

// Whether a T is read and written with lock-free atomics, and how a T must be aligned
// for that. (Asked only of trivially copyable types: others get RequireInPlace's
// error and no more.)
template <class T>
consteval bool lock_free_in_place() {
  if constexpr (std::is_trivially_copyable_v<T>) return std::atomic_ref<T>::is_always_lock_free;
  else return false;
}
template <class T>
consteval std::size_t atomic_alignment() {
  if constexpr (std::is_trivially_copyable_v<T>) return std::atomic_ref<T>::required_alignment;
  else return alignof(T);
}

template <class T>
struct ValueCell {
  explicit ValueCell(const T& v) : value(v) {}
  alignas(atomic_alignment<T>()) T value;
};

// An Array's size; its elements follow it (trailing storage of the SharedObject).
template <class T>
struct alignas(alignof(T) > alignof(std::uint64_t) ? alignof(T) : alignof(std::uint64_t)) ArrayHeader {
  explicit ArrayHeader(std::uint64_t n) : size(n) {}
  std::uint64_t size;
  T* data() noexcept { return reinterpret_cast<T*>(this + 1); }
};

// Instantiated (with sizeof) by Value and Array, so that this is the error a user sees.
template <class T>
struct RequireInPlace {
  static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T>,
                "mproc::Value<T> and mproc::Array<T> keep T in place in shared memory, so T must be "
                "trivially copyable and hold no pointers. For strings, vectors and other types the codec "
                "sends, use a Manager: mgr.list<T>() or mgr.dict<K, V>().");
};

/// Codec<Handle> for Value and Array: they travel as the place of their shared
/// object (member state_) and of their lock (member lock_).
template <class Handle>
struct GuardedHandleCodec {
  static void encode(Writer& w, const Handle& h) {
    h.state_.encode(w);
    Codec<Lock>::encode(w, h.lock_);
  }
  static Handle decode(Reader& r) {
    auto state = decltype(Handle::state_)::decode(r, Handle::type_label);
    return Handle(std::move(state), Codec<Lock>::decode(r));
  }
};

}  // namespace detail

/// A T in shared memory with a Lock (Python's multiprocessing.Value).
///
/// load() is lock-free when T fits an atomic (int, double...), else it takes the
/// lock; store() and update() take the lock, so they never interleave with each
/// other. Called by a thread that already holds get_lock(), they use that hold
/// instead of locking again. value() is the unsynchronised reference (Python's
/// .value without the lock): guard it with get_lock() yourself.
template <class T>
class Value {
 public:
  using value_type = T;

  /// A new shared T, initialised to initial, with a new Lock.
  explicit Value(const T& initial = T{}) : Value(initial, Lock()) {}
  /// A new shared T guarded by an existing lock (shared with whatever else it guards).
  Value(const T& initial, Lock lock)
      : state_(detail::SharedObject<detail::ValueCell<T>>::make(0, initial)), lock_(std::move(lock)) {}

  /// The value now.
  T load() const {
    if constexpr (lock_free) {
      return std::atomic_ref<T>(state_->value).load(std::memory_order_acquire);
    } else {
      detail::HeldUnlessOwned hold(lock_);
      return state_->value;
    }
  }
  /// Replaces the value, under the lock.
  void store(const T& v) {
    detail::HeldUnlessOwned hold(lock_);
    write(v);
  }
  /// Calls f(T&) on the value under the lock, so the read-modify-write is atomic
  /// across processes; returns the new value.
  template <class F>
  T update(F&& f) {
    detail::HeldUnlessOwned hold(lock_);
    T v = state_->value;
    std::forward<F>(f)(v);
    write(v);
    return v;
  }
  /// The shared T itself, unsynchronised (Python's .value). Valid while any copy of
  /// this Value exists in this process.
  T& value() const noexcept { return state_->value; }
  /// The lock that guards the value (Python's get_lock()).
  Lock& get_lock() const noexcept { return lock_; }

 private:
  static constexpr const char* type_label = "mproc::Value";  // for error messages
  friend struct detail::GuardedHandleCodec<Value>;
  static constexpr bool lock_free = detail::lock_free_in_place<T>();
  static_assert(sizeof(detail::RequireInPlace<T>) > 0);

  Value(detail::SharedObject<detail::ValueCell<T>> cell, Lock lock) : state_(std::move(cell)), lock_(std::move(lock)) {}

  void write(const T& v) {
    // Atomic when possible, so that a lock-free load() never sees half a store.
    if constexpr (lock_free) std::atomic_ref<T>(state_->value).store(v, std::memory_order_release);
    else state_->value = v;
  }

  detail::SharedObject<detail::ValueCell<T>> state_;
  mutable Lock lock_;
};

/// n Ts in shared memory with a Lock (Python's multiprocessing.Array). Element
/// access is unsynchronised, as in Python; take get_lock() (or use update()) for
/// consistent multi-element changes.
template <class T>
class Array {
 public:
  using value_type = T;

  /// n elements, each a copy of fill (zero by default, as in Python), with a new Lock.
  /// Throws SharedMemoryFull if the system has no memory for them, or if n * sizeof(T)
  /// is more than any memory can hold (the size would overflow).
  explicit Array(std::size_t n, const T& fill = T{}, Lock lock = Lock()) : Array(Uninitialised{}, n, std::move(lock)) {
    std::fill_n(data(), n, fill);
  }
  /// A copy of init, with a new Lock.
  Array(std::initializer_list<T> init) : Array(std::span<const T>(init.begin(), init.size())) {}
  /// A copy of init (a vector, an array, a span...), with a given or a new Lock.
  explicit Array(std::span<const T> init, Lock lock = Lock()) : Array(Uninitialised{}, init.size(), std::move(lock)) {
    std::copy(init.begin(), init.end(), data());
  }

  /// The number of elements.
  std::size_t size() const noexcept { return static_cast<std::size_t>(state_->size); }
  /// Element i, unchecked and unsynchronised.
  T& operator[](std::size_t i) const noexcept { return data()[i]; }
  /// Element i; throws IndexError if i >= size().
  T& at(std::size_t i) const {
    if (i >= size()) {
      throw IndexError("mproc::Array index " + std::to_string(i) + " out of range (size " + std::to_string(size()) +
                       ")");
    }
    return data()[i];
  }
  /// The elements, unsynchronised. Valid while any copy of this Array exists in this process.
  std::span<T> span() const noexcept { return {data(), size()}; }
  /// The first element, unsynchronised.
  T* data() const noexcept { return state_->data(); }
  /// Iterators over the elements, unsynchronised.
  T* begin() const noexcept { return data(); }
  T* end() const noexcept { return data() + size(); }
  /// A copy of the elements taken under the lock (Python's arr[:]).
  std::vector<T> to_vector() const {
    detail::HeldUnlessOwned hold(lock_);
    return std::vector<T>(begin(), end());
  }
  /// Calls f(std::span<T>) under the lock; returns what f returns.
  template <class F>
  decltype(auto) update(F&& f) {
    detail::HeldUnlessOwned hold(lock_);
    return std::forward<F>(f)(span());
  }
  /// The lock that guards the elements (Python's get_lock()).
  Lock& get_lock() const noexcept { return lock_; }

 private:
  static constexpr const char* type_label = "mproc::Array";  // for error messages
  friend struct detail::GuardedHandleCodec<Array>;
  using Block = detail::ArrayHeader<T>;
  static_assert(sizeof(detail::RequireInPlace<T>) > 0);

  struct Uninitialised {};
  Array(Uninitialised, std::size_t n, Lock lock)
      : state_(detail::SharedObject<Block>::make(detail::object_bytes(n, sizeof(T), "mproc::Array"),
                                                 static_cast<std::uint64_t>(n))),
        lock_(std::move(lock)) {}
  Array(detail::SharedObject<Block> block, Lock lock) : state_(std::move(block)), lock_(std::move(lock)) {
    if (state_.extra() / sizeof(T) < state_->size) {
      throw ProtocolError("mproc: the bytes do not name an mproc::Array in shared memory");
    }
  }

  detail::SharedObject<Block> state_;
  mutable Lock lock_;
};

template <class T>
struct Codec<Value<T>> : detail::GuardedHandleCodec<Value<T>> {};
template <class T>
struct Codec<Array<T>> : detail::GuardedHandleCodec<Array<T>> {};

}  // namespace mproc
