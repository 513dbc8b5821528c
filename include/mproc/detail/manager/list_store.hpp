#pragma once
// SharedList's layout in a Manager segment and its operations, written so that a
// process killed at any instruction leaves a list the next locker can use:
//
//   root  -> array block {capacity, size, slots...}
//
// - append/extend write the new slots past `size`, then publish the new size with
//   one store; growing extends the block where it lies when the room after it is
//   free (then publishes the new capacity), else copies into a bigger block and
//   publishes it with one store to root.array.
// - operations that move elements (insert, pop from the middle) and in-place
//   overwrites of large values first write a journal in the root, publish it, and
//   record their progress step by step; the next locker finishes a journaled
//   operation whose process died (repair()).
// - memory is freed only after nothing refers to it any more, so a crash can leak a
//   block but never free one twice.
//
// The caller holds the list's lock (with_lock) around every call.

#include <mproc/detail/manager/container.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace mproc::detail {

enum : std::uint64_t { list_op_none = 0, list_op_remove = 1, list_op_insert = 2, list_op_set = 3 };

template <class T>
struct ListRoot {
  using Slot = typename ElementStore<T>::Slot;
  explicit ListRoot(std::uint64_t tag) : header(tag) {}

  ContainerHeader header;
  std::uint64_t array = 0;  // offset of the ListArray, 0 while the list has none
  // The journal of an operation that moves or overwrites slots in place.
  std::uint64_t op = list_op_none;
  std::uint64_t index = 0;     // the slot it is about
  std::uint64_t progress = 0;  // the next slot to move
  std::uint64_t count = 0;     // the size before the operation
  alignas(Slot) std::byte slot[sizeof(Slot)];  // the removed slot, or the slot to write
};

struct ListArray {
  std::uint64_t capacity;
  std::uint64_t size;
  // capacity slots follow, 16-byte aligned
};
static_assert(sizeof(ListArray) == 16);

template <class T>
class ListStore {
 public:
  using Store = ElementStore<T>;
  using Slot = typename Store::Slot;
  using Root = ListRoot<T>;

  explicit ListStore(const ContainerRef& ref) noexcept : ref_(ref), root_(ref.root<Root>()) {}

  ContainerHeader& header() noexcept { return root_.header; }

  std::uint64_t size() const noexcept { return root_.array == 0 ? 0 : array()->size; }

  T at(std::uint64_t i) const { return Store::read(ref_, slot(i)); }

  std::vector<T> snapshot() const {
    std::vector<T> out;
    const std::uint64_t n = size();
    out.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i) out.push_back(at(i));
    return out;
  }

  void append(const T& value) {
    const Slot s = Store::make(ref_, value, "mproc::SharedList::append");
    try {
      reserve(size() + 1);
    } catch (...) {
      Store::drop(ref_, s);
      throw;
    }
    ListArray* a = array();
    put(a, a->size, s);
    fault_point("list.append");
    publish(a->size, a->size + 1);
  }

  template <class Range>
  void extend(const Range& values) {
    std::vector<Slot> made;
    try {
      for (const auto& v : values) made.push_back(Store::make(ref_, v, "mproc::SharedList::extend"));
      reserve(size() + made.size());
    } catch (...) {
      for (const Slot& s : made) Store::drop(ref_, s);
      throw;
    }
    if (made.empty()) return;
    ListArray* a = array();
    for (std::size_t i = 0; i < made.size(); ++i) put(a, a->size + i, made[i]);
    fault_point("list.extend");
    publish(a->size, a->size + made.size());
  }

  /// Inserts before index i (0 <= i <= size()).
  void insert(std::uint64_t i, const T& value) {
    const Slot s = Store::make(ref_, value, "mproc::SharedList::insert");
    const std::uint64_t n = size();
    try {
      reserve(n + 1);
    } catch (...) {
      Store::drop(ref_, s);
      throw;
    }
    journal(list_op_insert, i, n, n, s);
    finish_journal();
  }

  /// Removes and returns element i (i < size()).
  T pop(std::uint64_t i) {
    ListArray* a = array();
    const Slot s = slot(i);
    T value = Store::read(ref_, s);  // before anything changes: a decode error leaves the list as it was
    const std::uint64_t n = a->size;
    if (i + 1 == n) {
      publish(a->size, n - 1);
      Store::drop(ref_, s);
      return value;
    }
    journal(list_op_remove, i, i, n, s);
    finish_journal();
    return value;
  }

  /// Replaces element i (i < size()).
  void set(std::uint64_t i, const T& value) {
    const Slot s = Store::make(ref_, value, "mproc::SharedList::set");
    if constexpr (Store::in_place) {
      journal(list_op_set, i, 0, 0, s);  // a large T takes several stores to write
      finish_journal();
    } else {
      Slot* p = slots(array()) + i;
      const Slot old = *p;
      publish(*p, s);  // one 8-byte store
      Store::drop(ref_, old);
    }
  }

  void clear() {
    const std::uint64_t old = root_.array;
    if (old == 0) return;
    publish(root_.array, std::uint64_t{0});
    const ListArray* a = ref_.at<ListArray>(old);
    for (std::uint64_t i = 0; i < a->size; ++i) Store::drop(ref_, get(a, i));
    ref_.allocator().deallocate(old);
  }

  /// Finishes an operation whose process died half way.
  void repair() {
    if (root_.op != list_op_none) finish_journal();
  }

 private:
  ListArray* array() const noexcept { return ref_.at<ListArray>(root_.array); }
  static Slot* slots(const ListArray* a) noexcept {
    return reinterpret_cast<Slot*>(reinterpret_cast<std::byte*>(const_cast<ListArray*>(a)) + sizeof(ListArray));
  }
  static Slot get(const ListArray* a, std::uint64_t i) noexcept {
    Slot s;
    std::memcpy(&s, slots(a) + i, sizeof(Slot));
    return s;
  }
  static void put(ListArray* a, std::uint64_t i, const Slot& s) noexcept {
    std::memcpy(slots(a) + i, &s, sizeof(Slot));
  }
  Slot slot(std::uint64_t i) const noexcept { return get(array(), i); }
  Slot journal_slot() const noexcept {
    Slot s;
    std::memcpy(&s, root_.slot, sizeof(Slot));
    return s;
  }

  // Makes room for n slots.
  void reserve(std::uint64_t n) {
    if (root_.array == 0 || n > array()->capacity) grow(n);
  }

  // A bigger block, or the same one extended; published with one store either way.
  void grow(std::uint64_t n) {
    const ListArray* a = root_.array == 0 ? nullptr : array();
    const std::uint64_t capacity = a == nullptr ? 0 : a->capacity;
    const std::uint64_t size = a == nullptr ? 0 : a->size;
    const std::uint64_t max_slots = (std::uint64_t{1} << 47) / sizeof(Slot);
    if (n > max_slots) throw SharedMemoryFull("mproc: SharedList of " + std::to_string(n) + " elements is too long");
    std::uint64_t grown = std::min(max_slots, std::max({n, 2 * capacity, std::uint64_t{4}}));
    if (a != nullptr && ref_.allocator().extend(root_.array, sizeof(ListArray) + grown * sizeof(Slot))) {
      publish(array()->capacity, grown);  // where it lies: nothing to copy
      return;
    }
    std::uint64_t offset = 0;
    try {
      offset = ref_.allocator().allocate(sizeof(ListArray) + grown * sizeof(Slot), "mproc::SharedList (to grow)");
    } catch (const SharedMemoryFull&) {
      if (grown == n) throw;
      grown = n;  // no room to double: take just what is needed
      offset = ref_.allocator().allocate(sizeof(ListArray) + grown * sizeof(Slot), "mproc::SharedList (to grow)");
    }
    auto* b = ref_.at<ListArray>(offset);
    b->capacity = grown;
    b->size = size;
    if (size != 0) std::memcpy(slots(b), slots(a), size * sizeof(Slot));
    fault_point("list.grow");
    const std::uint64_t old = root_.array;
    publish(root_.array, offset);
    ref_.allocator().deallocate(old);
  }

  void journal(std::uint64_t op, std::uint64_t index, std::uint64_t progress, std::uint64_t count, const Slot& s) {
    root_.index = index;
    root_.progress = progress;
    root_.count = count;
    std::memcpy(root_.slot, &s, sizeof(Slot));
    publish(root_.op, op);
    fault_point("list.journal");
  }

  // Runs (or, after a crash, resumes) the journaled operation. Each step records
  // its progress after its move, so redoing the last step is harmless.
  void finish_journal() {
    ListArray* a = array();
    Slot* p = slots(a);
    if (root_.op == list_op_remove) {
      const std::uint64_t last = root_.count - 1;
      const std::uint64_t halfway = (root_.progress + last) / 2;
      for (std::uint64_t k = root_.progress; k < last; ++k) {
        std::memcpy(p + k, p + k + 1, sizeof(Slot));
        publish(root_.progress, k + 1);
        if (k == halfway) fault_point("list.remove.shift");
      }
      publish(a->size, last);
      publish(root_.op, std::uint64_t{list_op_none});
      Store::drop(ref_, journal_slot());  // only now: the journal no longer names it
    } else if (root_.op == list_op_insert) {
      const std::uint64_t halfway = (root_.progress + root_.index) / 2;
      for (std::uint64_t k = root_.progress; k > root_.index; --k) {
        std::memcpy(p + k, p + k - 1, sizeof(Slot));
        publish(root_.progress, k - 1);
        if (k == halfway) fault_point("list.insert.shift");
      }
      put(a, root_.index, journal_slot());
      publish(a->size, root_.count + 1);
      publish(root_.op, std::uint64_t{list_op_none});
    } else if (root_.op == list_op_set) {
      put(a, root_.index, journal_slot());
      fault_point("list.set");
      publish(root_.op, std::uint64_t{list_op_none});
    }
  }

  const ContainerRef& ref_;
  Root& root_;
};

}  // namespace mproc::detail
