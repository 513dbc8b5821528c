#pragma once
// SharedDict's layout in a Manager segment and its operations: a compact,
// insertion-ordered hash table (Python's own dict design), crash-consistent:
//
//   root  -> table block {capacity, used, live, index_size,
//                         entries[capacity] {hash, payload},   in insertion order
//                         index[index_size]}                   open addressing into entries
//   payload: {key size, value size, key bytes, value bytes}   (the codec's encodings)
//
// The entries are the truth; the index and the live count are derived from them.
// Every change to the entries is one published store (a new entry becomes part of the
// dict when `used` grows past it; an update or erase swaps the entry's payload
// offset), a table that must grow is rebuilt aside and published with one store to
// root.table, and a process that dies half way leaves at worst a stale index, which
// the next locker rebuilds from the entries (repair()).
//
// Keys are compared by their encodings, so a key type must encode equal keys to
// equal bytes. canonical_encoding<K>() checks what can be checked (SharedDict
// static_asserts it): numbers, enums, strings, and standard containers, pairs,
// tuples, optionals and variants of them pass; a trivially copyable struct passes
// only if it has no padding and no floating-point members (its padding bytes travel
// with it, and two equal keys may fill them differently), long double never (6 of
// its 16 bytes are padding), nor unordered containers (equal ones may iterate in
// different orders). Floating-point values compare
// by their bits: -0.0 and 0.0 are different keys (Python would merge them), and a NaN
// key is found by a NaN with the same bits. A Codec<K> or cereal serialisation is
// trusted to write equal keys alike.
//
// The caller holds the dict's lock (with_lock) around every call.

#include <mproc/codec.hpp>
#include <mproc/detail/manager/container.hpp>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

namespace mproc::detail {

template <class T>
consteval bool canonical_encoding();
template <template <class...> class Tuple, class... Ts>
consteval bool all_canonical(std::type_identity<Tuple<Ts...>>) {
  return (canonical_encoding<Ts>() && ...);
}

/// Whether equal Ts always encode to equal bytes (see the top of this file).
template <class T>
consteval bool canonical_encoding() {
  constexpr Kind kind = kind_of<T>();
  if constexpr (kind == Kind::trivial) {
    if constexpr (std::is_same_v<T, long double>) {
      return false;  // 10 bytes of value in 16: the other 6 are padding
    } else if constexpr (std::is_floating_point_v<T> || std::has_unique_object_representations_v<T>) {
      return true;
    } else if constexpr (std::is_array_v<T>) {
      return canonical_encoding<std::remove_extent_t<T>>();
    } else if constexpr (is_std_array<T>) {
      return sizeof(T) == std::tuple_size_v<T> * sizeof(typename T::value_type) &&
             canonical_encoding<typename T::value_type>();
    } else if constexpr (is_specialization_of<T, std::chrono::duration>) {
      return canonical_encoding<typename T::rep>();
    } else if constexpr (is_specialization_of<T, std::chrono::time_point>) {
      return canonical_encoding<typename T::duration>();
    } else {
      return false;  // padding, or floating-point members, in a struct's object bytes
    }
  } else if constexpr (is_specialization_of<T, std::unordered_map> || is_specialization_of<T, std::unordered_set> ||
                       is_specialization_of<T, std::unordered_multimap> ||
                       is_specialization_of<T, std::unordered_multiset>) {
    return false;
  } else if constexpr (kind == Kind::map) {
    return canonical_encoding<typename T::key_type>() && canonical_encoding<typename T::mapped_type>();
  } else if constexpr (kind == Kind::string || kind == Kind::sequence || kind == Kind::array || kind == Kind::set ||
                       kind == Kind::optional) {
    return canonical_encoding<typename T::value_type>();
  } else if constexpr (kind == Kind::tuple || kind == Kind::variant) {
    return all_canonical(std::type_identity<T>{});
  } else {
    return true;  // bool (one checked byte), or an encoding of the user's own
  }
}

struct DictRoot {
  explicit DictRoot(std::uint64_t tag) : header(tag) {}
  ContainerHeader header;
  std::uint64_t table = 0;  // offset of the DictTable, 0 while the dict has none
};

struct DictTable {
  std::uint64_t capacity;    // entries it has room for
  std::uint64_t used;        // entries appended so far, erased ones included
  std::uint64_t live;        // entries with a payload (derived)
  std::uint64_t index_size;  // a power of two, at least twice capacity
  // DictEntry entries[capacity]; std::uint32_t index[index_size];
};

struct DictEntry {
  std::uint64_t hash;
  std::uint64_t payload;  // 0 once erased
};

struct PayloadHeader {
  std::uint64_t key_size;
  std::uint64_t value_size;
};

/// A key and a value, encoded one after the other, ready to become a payload.
struct EncodedItem {
  Bytes bytes;
  std::size_t key_size = 0;
  std::span<const std::byte> key() const noexcept { return bytes.span().first(key_size); }
};

template <class K, class V>
class DictStore {
 public:
  static constexpr std::uint32_t empty_slot = 0xffffffffu;
  static constexpr std::uint32_t erased_slot = 0xfffffffeu;
  static constexpr std::uint64_t max_capacity = 0x7ffffff0u;
  static constexpr std::uint64_t npos = ~std::uint64_t{0};

  explicit DictStore(const ContainerRef& ref) noexcept : ref_(ref), root_(ref.root<DictRoot>()) {}

  ContainerHeader& header() noexcept { return root_.header; }

  std::uint64_t size() const noexcept { return root_.table == 0 ? 0 : table()->live; }

  static EncodedItem encode_key(const K& key) {
    EncodedItem item;
    encode_into(item.bytes, key);
    item.key_size = item.bytes.size();
    return item;
  }

  /// The value under the key, if any.
  std::optional<V> get(const EncodedItem& key) const {
    const Found f = find(key.key());
    if (f.entry == npos) return std::nullopt;
    return decode<V>(value_bytes(entries(table())[f.entry].payload));
  }

  bool contains(const EncodedItem& key) const { return find(key.key()).entry != npos; }

  /// Sets key -> value; item holds the key's encoding, to which the value's is appended.
  void set(EncodedItem& item, const V& value) {
    const std::size_t before = item.bytes.size();
    encode_into(item.bytes, value);
    const std::uint64_t payload = store_payload(item);
    item.bytes.resize(before);
    Found f = find(item.key());
    if (f.entry != npos) {
      DictEntry& e = entries(table())[f.entry];
      const std::uint64_t old = e.payload;
      publish(e.payload, payload);
      ref_.allocator().deallocate(old);
      return;
    }
    DictTable* t = root_.table == 0 ? nullptr : table();
    if (t == nullptr || t->used == t->capacity) {
      try {
        t = rebuild(size() + 1);
      } catch (...) {
        ref_.allocator().deallocate(payload);
        throw;
      }
      f = find(item.key());
    }
    const std::uint64_t hash = hash_bytes(item.key());
    DictEntry& e = entries(t)[t->used];
    e.hash = hash;
    e.payload = payload;
    fault_point("dict.insert");
    publish(t->used, t->used + 1);  // the key is in the dict from here on
    fault_point("dict.index");
    index(t)[f.slot] = static_cast<std::uint32_t>(t->used - 1);
    t->live += 1;
  }

  /// Removes the key; returns its value if asked to (want_value) and it was there.
  /// found reports whether it was there.
  std::optional<V> erase(const EncodedItem& key, bool want_value, bool& found) {
    const Found f = find(key.key());
    found = f.entry != npos;
    if (!found) return std::nullopt;
    DictTable* t = table();
    DictEntry& e = entries(t)[f.entry];
    const std::uint64_t old = e.payload;
    std::optional<V> value;
    if (want_value) value = decode<V>(value_bytes(old));  // before anything changes
    publish(e.payload, std::uint64_t{0});
    fault_point("dict.erase");
    index(t)[f.slot] = erased_slot;
    t->live -= 1;
    ref_.allocator().deallocate(old);
    return value;
  }

  void clear() {
    const std::uint64_t old = root_.table;
    if (old == 0) return;
    publish(root_.table, std::uint64_t{0});
    const DictTable* t = ref_.at<DictTable>(old);
    for (std::uint64_t x = 0; x < t->used; ++x) ref_.allocator().deallocate(entries(t)[x].payload);
    ref_.allocator().deallocate(old);
  }

  /// Calls f(key bytes, value bytes) for every entry, in insertion order.
  template <class F>
  void for_each(F&& f) const {
    if (root_.table == 0) return;
    const DictTable* t = table();
    for (std::uint64_t x = 0; x < t->used; ++x) {
      const std::uint64_t payload = entries(t)[x].payload;
      if (payload != 0) f(key_bytes(payload), value_bytes(payload));
    }
  }

  /// Rebuilds the index and the live count from the entries (after a process died
  /// half way through an operation).
  void repair() {
    if (root_.table == 0) return;
    DictTable* t = table();
    std::fill_n(index(t), t->index_size, empty_slot);
    t->live = 0;
    for (std::uint64_t x = 0; x < t->used; ++x) {
      if (entries(t)[x].payload != 0) link(t, x);
    }
  }

 private:
  struct Found {
    std::uint64_t entry;  // npos if the key is absent
    std::uint64_t slot;   // its index slot, or where to put it
  };

  DictTable* table() const noexcept { return ref_.at<DictTable>(root_.table); }
  static DictEntry* entries(const DictTable* t) noexcept {
    return reinterpret_cast<DictEntry*>(reinterpret_cast<std::byte*>(const_cast<DictTable*>(t)) + sizeof(DictTable));
  }
  static std::uint32_t* index(const DictTable* t) noexcept {
    return reinterpret_cast<std::uint32_t*>(entries(t) + t->capacity);
  }
  std::span<const std::byte> key_bytes(std::uint64_t payload) const noexcept {
    const auto* h = ref_.at<PayloadHeader>(payload);
    return {ref_.at<const std::byte>(payload + sizeof(PayloadHeader)), static_cast<std::size_t>(h->key_size)};
  }
  std::span<const std::byte> value_bytes(std::uint64_t payload) const noexcept {
    const auto* h = ref_.at<PayloadHeader>(payload);
    return {ref_.at<const std::byte>(payload + sizeof(PayloadHeader) + h->key_size),
            static_cast<std::size_t>(h->value_size)};
  }

  std::uint64_t store_payload(const EncodedItem& item) {
    const std::uint64_t offset =
        ref_.allocator().allocate(sizeof(PayloadHeader) + item.bytes.size(), "mproc::SharedDict::set");
    auto* h = ref_.at<PayloadHeader>(offset);
    h->key_size = item.key_size;
    h->value_size = item.bytes.size() - item.key_size;
    std::memcpy(ref_.at<std::byte>(offset + sizeof(PayloadHeader)), item.bytes.data(), item.bytes.size());
    return offset;
  }

  Found find(std::span<const std::byte> key) const {
    if (root_.table == 0) return {npos, npos};
    const DictTable* t = table();
    const std::uint64_t hash = hash_bytes(key);
    const std::uint64_t mask = t->index_size - 1;
    std::uint64_t reusable = npos;
    for (std::uint64_t slot = hash & mask;; slot = (slot + 1) & mask) {
      const std::uint32_t x = index(t)[slot];
      if (x == empty_slot) return {npos, reusable == npos ? slot : reusable};
      if (x == erased_slot) {
        if (reusable == npos) reusable = slot;
        continue;
      }
      const DictEntry& e = entries(t)[x];
      if (e.hash == hash && e.payload != 0) {
        const auto k = key_bytes(e.payload);
        if (k.size() == key.size() && std::memcmp(k.data(), key.data(), key.size()) == 0) return {x, slot};
      }
    }
  }

  // Puts entry x into the index (its key is known to be absent from it).
  static void link(DictTable* t, std::uint64_t x) noexcept {
    const std::uint64_t mask = t->index_size - 1;
    std::uint64_t slot = entries(t)[x].hash & mask;
    while (index(t)[slot] != empty_slot) slot = (slot + 1) & mask;
    index(t)[slot] = static_cast<std::uint32_t>(x);
    t->live += 1;
  }

  // A new table with room for at least twice `live` entries, holding the live
  // entries in order; published with one store.
  DictTable* rebuild(std::uint64_t live) {
    const std::uint64_t capacity = std::max<std::uint64_t>(8, 2 * live);
    if (capacity > max_capacity) {
      throw SharedMemoryFull("mproc: a SharedDict cannot hold more than " + std::to_string(max_capacity / 2) + " keys");
    }
    const std::uint64_t index_size = std::bit_ceil(2 * capacity);
    const std::uint64_t offset =
        ref_.allocator().allocate(sizeof(DictTable) + capacity * sizeof(DictEntry) + index_size * sizeof(std::uint32_t),
                                  "mproc::SharedDict (to grow)");
    auto* t = ref_.at<DictTable>(offset);
    t->capacity = capacity;
    t->index_size = index_size;
    t->used = 0;
    t->live = 0;
    std::fill_n(index(t), index_size, empty_slot);
    const std::uint64_t old = root_.table;
    if (old != 0) {
      const DictTable* o = ref_.at<DictTable>(old);
      for (std::uint64_t x = 0; x < o->used; ++x) {
        if (entries(o)[x].payload == 0) continue;
        entries(t)[t->used] = entries(o)[x];
        link(t, t->used);
        t->used += 1;
      }
    }
    fault_point("dict.grow");
    publish(root_.table, offset);
    ref_.allocator().deallocate(old);
    return t;
  }

  const ContainerRef& ref_;
  DictRoot& root_;
};

}  // namespace mproc::detail
