#pragma once
// Where Value, Array and the locks and events live: memfd segments ("arenas") that a
// shared atomic cursor carves into objects, Python's multiprocessing.heap idea. An
// object's bytes are never reused for another object, so a process that still uses
// an object (a child that inherited it, a worker that decoded it) can never see it
// turn into something else when another process drops it. An arena's memory is
// freed by the kernel once no process maps it any more: each process unmaps an arena
// when its last handle into it goes.
//
// Each arena costs a descriptor in every process that maps it (and every child
// inherits them), so arenas are few: each new one reserves twice the address space
// of the one before (64 KiB, 128 KiB, ... up to 32 MiB) and is backed by memory only
// as objects are carved from it, with the same reserve-then-fallocate growth as a
// Manager's segment. Two thousand 24 KB Arrays take ten descriptors, not two
// thousand. Objects of 256 KiB or more get a segment of their own, whose memory goes
// back to the system as soon as the object is dropped in every process (no process
// keeps such a segment mapped for reuse, see SegmentRegistry); the bytes of a smaller object
// that was dropped stay in its arena until the whole arena is unmapped. (The
// threshold keeps that waste small next to what lives: a program that makes and drops
// big scratch Arrays beside long-lived Values would otherwise pin arena after arena.)
//
// SharedObject<T> is the handle: a T in an arena, kept mapped while a copy exists in
// this process. Copies refer to the same T.

#include <mproc/detail/os/fork_safe_mutex.hpp>
#include <mproc/detail/shm/memfd.hpp>
#include <mproc/detail/shm/segment.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/errors.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <typeinfo>
#include <utility>

namespace mproc::detail {

/// A 64-bit FNV-1a hash; stable across the processes of one program.
inline std::uint64_t fnv1a(const void* data, std::size_t n, std::uint64_t h = 0xcbf29ce484222325ULL) noexcept {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

/// Identifies T in shared memory, so that a handle decoded as the wrong type is
/// refused instead of reinterpreting someone else's bytes. Every process of the
/// program runs the same binary (fork), so typeid names agree.
template <class T>
std::uint64_t type_tag() noexcept {
  static const std::uint64_t tag = [] {
    const char* name = typeid(T).name();
    return fnv1a(name, std::char_traits<char>::length(name));
  }();
  return tag;
}

/// Written just before every object in an arena.
struct ObjectHeader {
  std::uint64_t tag;   // type_tag<T>()
  std::uint64_t size;  // bytes of the object, trailing storage included
};

/// The most bytes one shared object may take: more than any address space, so that a
/// larger request fails (SharedMemoryFull) before a size computation can wrap around.
inline constexpr std::uint64_t max_object_size = std::uint64_t{1} << 48;

/// count * each bytes for `what`; SharedMemoryFull if that is more than max_object_size.
inline std::size_t object_bytes(std::size_t count, std::size_t each, const char* what) {
  if (each != 0 && count > max_object_size / each) {
    throw SharedMemoryFull(std::string(what) + ": " + std::to_string(count) + " elements of " + std::to_string(each) +
                           " bytes are more than any shared memory can hold");
  }
  return count * each;
}

/// The arenas of this process.
class SharedHeap {
 public:
  static constexpr std::size_t first_arena_size = 64 * 1024;
  static constexpr std::size_t max_arena_size = 32 << 20;
  /// Objects at least this big get a segment of their own.
  static constexpr std::size_t own_segment_size = 256 << 10;
  /// Growing an arena backs at most this much more memory at once (and at most
  /// doubles it): a mostly empty arena holds little memory.
  static constexpr std::size_t grow_step = 1 << 20;
  static constexpr std::size_t max_align = 64;

  /// The process-wide heap. Never destroyed (see SegmentRegistry::instance).
  static SharedHeap& instance() {
    static auto* heap = new SharedHeap();
    return *heap;
  }

  /// A zeroed block of `size` bytes aligned to `align` (at most 64) in shared
  /// memory, tagged with `tag`; returns its segment and address. Throws
  /// SharedMemoryFull if the system has no memory for it.
  std::pair<std::shared_ptr<Segment>, std::byte*> allocate(std::uint64_t tag, std::size_t size, std::size_t align) {
    if (size > max_object_size) {
      throw SharedMemoryFull("mproc: a shared object of " + std::to_string(size) +
                             " bytes is more than any shared memory can hold");
    }
    if (align < alignof(ObjectHeader)) align = alignof(ObjectHeader);
    const std::size_t footprint = segment_header_size + max_align + sizeof(ObjectHeader) + size;
    if (size >= own_segment_size) {
      auto own = Segment::create(SegmentKind::arena, footprint, 0, segment_flag_own_object);
      std::byte* p = carve(*own, tag, size, align);
      return {std::move(own), p};
    }
    std::size_t reserve = 0;
    {
      std::lock_guard lock(fork_safe_mutex<SharedHeap>());
      if (current_) {
        if (std::byte* p = carve(*current_, tag, size, align)) return {current_, p};
      }
      reserve = std::max(next_size_, std::bit_ceil(footprint));
      next_size_ = std::min(2 * reserve, max_arena_size);
    }
    // A memfd never grows past the file-size limit (RLIMIT_FSIZE): an arena reserves
    // no more, so that a full one is followed by another (Segment::create raises
    // OSError, EFBIG, if not even the object fits).
    if (const auto limit = file_size_limit()) {
      reserve = std::max(footprint, std::min(reserve, *limit / page_size() * page_size()));
    }
    // Made without the heap's mutex: making (and dropping) a segment takes the
    // registry's, and the two must never nest (fork's handlers take both).
    std::shared_ptr<Segment> fresh = Segment::create(SegmentKind::arena, footprint, reserve);
    std::byte* p = carve(*fresh, tag, size, align);
    std::shared_ptr<Segment> old;  // dropped after the lock; stays mapped while its objects live
    {
      std::lock_guard lock(fork_safe_mutex<SharedHeap>());
      old = std::exchange(current_, fresh);
    }
    return {std::move(fresh), p};
  }

  /// Stops allocating from the current arena, so it is unmapped once its objects
  /// are gone (tests use it to check that nothing else holds one).
  void drop_current() {
    std::shared_ptr<Segment> dropped;
    std::lock_guard lock(fork_safe_mutex<SharedHeap>());
    dropped.swap(current_);
  }

 private:
  // Takes a block from the segment's cursor, shared with every process that maps
  // it (a forked child may carve from an arena it inherited), and backs it with
  // memory; nullptr if the arena has no room left for it.
  static std::byte* carve(Segment& seg, std::uint64_t tag, std::size_t size, std::size_t align) {
    auto& cursor = seg.header().cursor;
    const std::uint64_t limit = seg.reserved();
    std::uint64_t at = cursor.load(std::memory_order_relaxed);
    std::uint64_t start = 0;
    do {
      start = (at + sizeof(ObjectHeader) + align - 1) / align * align;
      if (start > limit || limit - start < size) return nullptr;
    } while (!cursor.compare_exchange_weak(at, start + size, std::memory_order_relaxed));
    std::uint64_t end = start + size;
    const std::uint64_t committed = seg.committed();
    if (end > committed) {
      const auto give_back = [&] {
        (void)cursor.compare_exchange_strong(end, at, std::memory_order_relaxed);  // unless someone carved since
      };
      bool grown = false;
      try {
        grown = seg.grow_to(std::max(end, committed + std::min<std::uint64_t>(committed, grow_step)), end);
      } catch (const OSError& e) {
        give_back();
        if (e.error_code() != EFBIG) throw;
        return nullptr;  // past the file-size limit (lowered since): a new arena, sized to it, takes the object
      }
      if (!grown) {
        give_back();
        throw SharedMemoryFull("mproc: the system has no memory left for a shared object of " + std::to_string(size) +
                               " bytes");
      }
    }
    auto* header = seg.at<ObjectHeader>(start - sizeof(ObjectHeader));
    header->tag = tag;
    header->size = size;
    return seg.base() + start;  // fresh memfd pages are zero
  }

  std::shared_ptr<Segment> current_;
  std::size_t next_size_ = first_arena_size;  // the address space the next arena reserves
};

/// A T in shared memory, constructed in place; copies refer to the same T.
template <class T>
class SharedObject {
 public:
  /// Constructs a T from args in a fresh block with `extra` bytes of trailing
  /// storage (an Array's elements) right after it.
  template <class... Args>
  static SharedObject make(std::size_t extra, Args&&... args) {
    static_assert(alignof(T) <= SharedHeap::max_align);
    auto [seg, p] = SharedHeap::instance().allocate(type_tag<T>(), sizeof(T) + extra, alignof(T));
    return SharedObject(std::move(seg), ::new (p) T(std::forward<Args>(args)...));
  }

  T* get() const noexcept { return ptr_; }
  T& operator*() const noexcept { return *ptr_; }
  T* operator->() const noexcept { return ptr_; }
  /// Bytes of trailing storage after the T.
  std::size_t extra() const noexcept {
    return reinterpret_cast<const ObjectHeader*>(reinterpret_cast<const std::byte*>(ptr_) - sizeof(ObjectHeader))
               ->size -
           sizeof(T);
  }
  friend bool operator==(const SharedObject& a, const SharedObject& b) noexcept { return a.ptr_ == b.ptr_; }

  /// Writes where the T is: its segment and offset.
  void encode(Writer& w) const {
    seg_->encode(w);
    w.pod(static_cast<std::uint64_t>(seg_->offset_of(ptr_)));
  }

  /// The T encode() described. Throws ProtocolError if the bytes do not name a T,
  /// SharedMemoryGone if its memory can no longer be reached.
  static SharedObject decode(Reader& r, const char* what) {
    auto seg = Segment::decode(r, SegmentKind::arena, what);
    const auto offset = r.pod<std::uint64_t>();
    const std::size_t limit = seg->committed();
    const bool placed = offset >= segment_header_size + sizeof(ObjectHeader) && offset % alignof(T) == 0 &&
                        offset <= limit && limit - offset >= sizeof(T);
    const ObjectHeader* header = placed ? seg->at<ObjectHeader>(offset - sizeof(ObjectHeader)) : nullptr;
    if (header == nullptr || header->tag != type_tag<T>() || header->size > limit - offset ||
        header->size < sizeof(T)) {
      throw ProtocolError(std::string("mproc: the bytes do not name a ") + what + " in shared memory");
    }
    T* ptr = seg->at<T>(offset);
    return SharedObject(std::move(seg), ptr);
  }

 private:
  SharedObject(std::shared_ptr<Segment> seg, T* ptr) noexcept : seg_(std::move(seg)), ptr_(ptr) {}

  std::shared_ptr<Segment> seg_;
  T* ptr_;
};

}  // namespace mproc::detail
