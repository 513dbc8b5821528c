#pragma once
// Manager, SharedList and SharedDict: Python's multiprocessing.Manager().list() and
// .dict(), without the server process and the proxies. A Manager owns one shared
// memory segment (a memfd: nothing in /dev/shm, freed by the kernel when the last
// process using it is gone); its containers live in it, and every operation is a
// few memory accesses under the container's own robust lock, atomic across all
// processes.
//
//   mproc::Manager mgr;
//   auto lst = mgr.list<int>();                  // before the processes that use it
//   auto d = mgr.dict<std::string, int>();
//   lst.append(30);  d.set("a", 1);  d.get("a");  // in any process
//
// Elements, keys and values may be of any type the codec sends: plain values are
// kept in place, others as their encoding in the segment.
//
// Handles: SharedList and SharedDict are handles, like Python's proxies. Copies, and
// copies in processes forked later, refer to the same container; a handle can also
// be sent to a process that started earlier (a Pool task argument, say), which maps
// the segment on arrival. The sender must keep its handle (or the Manager) until the
// receiver has decoded it; if every process that could hand the segment over is gone
// by then, decoding throws SharedMemoryGone.
//
// Lifetime: the segment lives while any process holds the Manager or a handle into
// it. Erased and cleared elements return their memory to the segment at once; the
// few bytes of a container's own header are returned when the segment goes.
//
// Full segment: the segment starts at ManagerOptions::initial_size and grows by
// itself, up to ManagerOptions::max_size (only address space is reserved up front:
// 1 GiB by default, or an eighth of the address-space limit `ulimit -v` if one is set
// and that is less).
// An operation that needs more throws SharedMemoryFull, saying how big the segment
// may get and how to raise it; the operation has then changed nothing, and the
// container stays usable.
//
// Dead processes: a process killed in the middle of an operation (even with
// SIGKILL) leaves the container consistent: the next operation takes the lock over,
// completes or discards the half-done change (at worst leaking that operation's
// memory), and owner_deaths() counts the event.

#include <mproc/codec.hpp>
#include <mproc/detail/manager/container.hpp>
#include <mproc/detail/manager/dict_store.hpp>
#include <mproc/detail/manager/list_store.hpp>
#include <mproc/detail/shm/memfd.hpp>
#include <mproc/detail/shm/segment.hpp>
#include <mproc/detail/shm/segment_allocator.hpp>
#include <mproc/detail/shm/shared_heap.hpp>
#include <mproc/errors.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace mproc {

class Manager;

namespace detail {

/// What SharedList and SharedDict share: the container they refer to, locked
/// access to it, and the members that mean the same for both.
template <class Store>
class ContainerHandle {
 public:
  /// The number of elements (of keys, for a dict).
  std::size_t size() const {
    return locked("size", [](Store& s) { return static_cast<std::size_t>(s.size()); });
  }
  /// True if the container is empty.
  bool empty() const { return size() == 0; }
  /// Removes everything and returns the memory to the segment.
  void clear() {
    locked("clear", [](Store& s) { s.clear(); });
  }
  /// How many times a process died in the middle of an operation on this container
  /// (the container was repaired each time).
  std::uint64_t owner_deaths() const noexcept {
    return ref_.template root<ContainerHeader>().deaths.load(std::memory_order_relaxed);
  }

 protected:
  explicit ContainerHandle(ContainerRef ref) noexcept : ref_(std::move(ref)) {}
  template <class F>
  decltype(auto) locked(const char* what, F&& f) const {
    return with_lock<Store>(ref_, what, std::forward<F>(f));
  }

  ContainerRef ref_;
};

/// Codec<Handle> for SharedList and SharedDict: a container travels as its place,
/// and the receiver uses the same container.
template <class Handle, class Root>
struct ContainerCodec {
  static void encode(Writer& w, const Handle& h) { h.ref_.encode(w); }
  static Handle decode(Reader& r) {
    return Handle(ContainerRef::decode<Root>(r, type_tag<Handle>(), Handle::type_label));
  }
};

}  // namespace detail

/// A list in a Manager's shared memory (Python's Manager().list()). Indices may be
/// negative, counting from the end, as in Python; a bad index throws IndexError.
template <class T>
class SharedList : public detail::ContainerHandle<detail::ListStore<T>> {
  using Store = detail::ListStore<T>;
  using Base = detail::ContainerHandle<Store>;
  using Base::locked;

 public:
  using value_type = T;

  /// Adds value at the end.
  void append(const T& value) {
    locked("append", [&](Store& s) { s.append(value); });
  }
  /// Adds every element of values at the end, all or none (a SharedMemoryFull part
  /// way leaves the list unchanged).
  template <std::ranges::input_range Range>
  void extend(const Range& values) {
    locked("extend", [&](Store& s) { s.extend(values); });
  }
  /// extend() from a braced list.
  void extend(std::initializer_list<T> values) {
    locked("extend", [&](Store& s) { s.extend(values); });
  }
  /// Inserts value before position index; an index past either end inserts at that
  /// end, as in Python.
  void insert(std::ptrdiff_t index, const T& value) {
    locked("insert", [&](Store& s) {
      const auto n = static_cast<std::ptrdiff_t>(s.size());
      const std::ptrdiff_t at = index < 0 ? std::max<std::ptrdiff_t>(0, index + n) : std::min(index, n);
      if (at == n) s.append(value);
      else s.insert(static_cast<std::uint64_t>(at), value);
    });
  }
  /// Removes and returns the element at index (the last by default).
  T pop(std::ptrdiff_t index = -1) {
    return locked("pop", [&](Store& s) { return s.pop(position(index, s.size(), "pop")); });
  }
  /// A copy of the element at index.
  T at(std::ptrdiff_t index) const {
    return locked("at", [&](Store& s) { return s.at(position(index, s.size(), "at")); });
  }
  /// Replaces the element at index.
  void set(std::ptrdiff_t index, const T& value) {
    locked("set", [&](Store& s) { s.set(position(index, s.size(), "set"), value); });
  }
  /// A copy of all the elements, taken atomically (Python's list(proxy)).
  std::vector<T> snapshot() const {
    return locked("snapshot", [](Store& s) { return s.snapshot(); });
  }

 private:
  static constexpr const char* type_label = "mproc::SharedList";  // for error messages
  friend class Manager;
  friend struct detail::ContainerCodec<SharedList, detail::ListRoot<T>>;
  static_assert((require_sendable<T>(), true));

  explicit SharedList(detail::ContainerRef ref) noexcept : Base(std::move(ref)) {}
  static SharedList make(std::shared_ptr<detail::Segment> seg) {
    return SharedList(detail::ContainerRef::make<detail::ListRoot<T>>(std::move(seg), "a new mproc::SharedList",
                                                                      detail::type_tag<SharedList>()));
  }

  static std::uint64_t position(std::ptrdiff_t index, std::uint64_t size, const char* what) {
    const auto n = static_cast<std::ptrdiff_t>(size);
    const std::ptrdiff_t at = index < 0 ? index + n : index;
    if (at < 0 || at >= n) {
      throw IndexError(std::string("mproc::SharedList::") + what + ": index " + std::to_string(index) +
                       (n == 0 ? " on an empty list" : " out of range (size " + std::to_string(n) + ")"));
    }
    return static_cast<std::uint64_t>(at);
  }
};

/// A dict in a Manager's shared memory (Python's Manager().dict()), keeping
/// insertion order. keys(), values() and items() are snapshots taken atomically.
/// Keys are compared by their encodings, so K must be a type whose equal values
/// encode alike: a struct with padding is refused at compile time, and
/// floating-point keys compare by their bits (-0.0 and 0.0 are different keys; see
/// detail/manager/dict_store.hpp).
template <class K, class V>
class SharedDict : public detail::ContainerHandle<detail::DictStore<K, V>> {
  using Store = detail::DictStore<K, V>;
  using Base = detail::ContainerHandle<Store>;
  using Base::locked;

 public:
  using key_type = K;
  using mapped_type = V;

  /// Sets key to value (Python's d[key] = value).
  void set(const K& key, const V& value) {
    Item item = Store::encode_key(key);
    locked("set", [&](Store& s) { s.set(item, value); });
  }
  /// The value under key, or nothing.
  std::optional<V> get(const K& key) const {
    const Item item = Store::encode_key(key);
    return locked("get", [&](Store& s) { return s.get(item); });
  }
  /// The value under key, or fallback (Python's d.get(key, fallback)).
  V get(const K& key, const V& fallback) const {
    std::optional<V> v = get(key);
    return v ? std::move(*v) : fallback;
  }
  /// True if key is in the dict (Python's key in d).
  bool contains(const K& key) const {
    const Item item = Store::encode_key(key);
    return locked("contains", [&](Store& s) { return s.contains(item); });
  }
  /// Removes key; returns whether it was there (Python's del d[key], without KeyError).
  bool erase(const K& key) {
    const Item item = Store::encode_key(key);
    return locked("erase", [&](Store& s) {
      bool found = false;
      s.erase(item, false, found);
      return found;
    });
  }
  /// Removes key and returns its value, or nothing if it was not there (Python's d.pop(key, None)).
  std::optional<V> pop(const K& key) {
    const Item item = Store::encode_key(key);
    return locked("pop", [&](Store& s) {
      bool found = false;
      return s.erase(item, true, found);
    });
  }
  /// Sets key to f(current value or nothing) atomically across processes, and
  /// returns the new value: d.update("hits", [](std::optional<int> v) { return v.value_or(0) + 1; }).
  /// f runs under the dict's lock: keep it short, and do not touch this dict in it.
  /// If f throws, nothing changes.
  template <class F>
  V update(const K& key, F&& f) {
    static_assert(std::is_invocable_r_v<V, F&, std::optional<V>>,
                  "mproc::SharedDict::update: f must take a std::optional<V> and return a V");
    Item item = Store::encode_key(key);
    return locked("update", [&](Store& s) {
      V value = f(s.get(item));
      s.set(item, value);
      return value;
    });
  }
  /// The keys, in insertion order.
  std::vector<K> keys() const {
    return collect<K>([](auto k, auto) { return decode<K>(k); });
  }
  /// The values, in insertion order of their keys.
  std::vector<V> values() const {
    return collect<V>([](auto, auto v) { return decode<V>(v); });
  }
  /// The (key, value) pairs, in insertion order.
  std::vector<std::pair<K, V>> items() const {
    return collect<std::pair<K, V>>([](auto k, auto v) { return std::pair<K, V>(decode<K>(k), decode<V>(v)); });
  }
 private:
  static constexpr const char* type_label = "mproc::SharedDict";  // for error messages
  friend class Manager;
  friend struct detail::ContainerCodec<SharedDict, detail::DictRoot>;
  using Item = detail::EncodedItem;
  static_assert((require_sendable<K>(), require_sendable<V>(), true));
  static_assert(detail::canonical_encoding<K>(),
                "mproc::SharedDict<K, V> compares keys by their encoded bytes, and equal Ks may encode "
                "differently: K is (or holds) an unordered container, whose order varies, a long double, "
                "which is padded, or a trivially "
                "copyable struct, which travels as its object bytes, padding included (one with float or "
                "double members is refused too: its padding cannot be ruled out). Use a struct of integers "
                "and enums without padding, a std::tuple or std::pair of the members, std::map or std::set, "
                "or give K a cereal serialize() or a mproc::Codec<K> that writes each member.");

  explicit SharedDict(detail::ContainerRef ref) noexcept : Base(std::move(ref)) {}
  static SharedDict make(std::shared_ptr<detail::Segment> seg) {
    return SharedDict(detail::ContainerRef::make<detail::DictRoot>(std::move(seg), "a new mproc::SharedDict",
                                                                   detail::type_tag<SharedDict>()));
  }

  template <class Out, class F>
  std::vector<Out> collect(F&& make) const {
    return locked("snapshot", [&](Store& s) {
      std::vector<Out> out;
      out.reserve(static_cast<std::size_t>(s.size()));
      s.for_each([&](auto k, auto v) { out.push_back(make(k, v)); });
      return out;
    });
  }
};

/// How big a Manager's segment may be.
struct ManagerOptions {
  /// Bytes of memory the segment starts with.
  std::size_t initial_size = std::size_t{1} << 20;
  /// The most the segment may grow to; an operation that needs more throws
  /// SharedMemoryFull. Only address space is reserved for it up front, in every
  /// process that uses the Manager. 0: 1 GiB, or an eighth of the address-space limit
  /// (RLIMIT_AS, `ulimit -v`) if one is set and that is less.
  std::size_t max_size = 0;

  /// What max_size = 0 stands for in this process.
  static std::size_t default_max_size() noexcept {
    const std::size_t most = std::size_t{1} << 30;
    const auto limit = detail::address_space_limit();
    return limit ? std::min(most, *limit / 8) : most;
  }
};

/// Owns a shared-memory segment and makes lists and dicts in it (Python's
/// multiprocessing.Manager, with no server process). Copies of a Manager share the
/// segment; a Manager can be sent to another process, which can then make
/// containers in it too.
class Manager {
 public:
  /// Makes the segment. Throws SharedMemoryFull if the system has no memory for
  /// initial_size, or this process no address space for max_size.
  explicit Manager(ManagerOptions options = {}) {
    if (options.max_size == 0) options.max_size = ManagerOptions::default_max_size();
    if (options.max_size < options.initial_size) options.max_size = options.initial_size;
    const std::size_t floor = detail::heap_begin + 4096;
    seg_ = detail::Segment::create(detail::SegmentKind::manager, std::max(options.initial_size, floor),
                                   std::max(options.max_size, floor));
    detail::SegmentAllocator::format(*seg_);
  }

  /// A new, empty list of T.
  template <class T>
  SharedList<T> list() {
    return SharedList<T>::make(seg_);
  }
  /// A new list holding a copy of init.
  template <class T>
  SharedList<T> list(std::initializer_list<T> init) {
    SharedList<T> l = list<T>();
    l.extend(init);
    return l;
  }
  /// A new list holding a copy of init (a vector, a range...).
  template <class T, std::ranges::input_range Range>
  SharedList<T> list(const Range& init) {
    SharedList<T> l = list<T>();
    l.extend(init);
    return l;
  }
  /// A new, empty dict from K to V.
  template <class K, class V>
  SharedDict<K, V> dict() {
    return SharedDict<K, V>::make(seg_);
  }

  /// Bytes of memory the segment uses now.
  std::size_t size() const noexcept { return seg_->committed(); }
  /// The most the segment may grow to (ManagerOptions::max_size, rounded to pages).
  std::size_t max_size() const noexcept { return seg_->reserved(); }
  /// Bytes in live blocks: containers' headers, elements and tables.
  std::size_t used() const noexcept { return detail::SegmentAllocator(*seg_).live_bytes(); }

 private:
  static constexpr const char* type_label = "mproc::Manager";  // for error messages
  friend struct Codec<Manager>;
  explicit Manager(std::shared_ptr<detail::Segment> seg) noexcept : seg_(std::move(seg)) {}

  std::shared_ptr<detail::Segment> seg_;
};

template <class T>
struct Codec<SharedList<T>> : detail::ContainerCodec<SharedList<T>, detail::ListRoot<T>> {};
template <class K, class V>
struct Codec<SharedDict<K, V>> : detail::ContainerCodec<SharedDict<K, V>, detail::DictRoot> {};

/// A Manager travels as the place of its segment.
template <>
struct Codec<Manager> {
  static void encode(detail::Writer& w, const Manager& m) { m.seg_->encode(w); }
  static Manager decode(detail::Reader& r) {
    return Manager(detail::Segment::decode(r, detail::SegmentKind::manager, Manager::type_label));
  }
};

}  // namespace mproc
