#pragma once
// What the Manager's containers share: the header at the start of every container
// (type tag, robust mutex), the reference a handle holds (segment + offset), and how
// an element is kept (in place, or as the offset of its encoding).

#include <mproc/codec.hpp>
#include <mproc/detail/shm/crash_safety.hpp>
#include <mproc/detail/shm/segment.hpp>
#include <mproc/detail/shm/segment_allocator.hpp>
#include <mproc/detail/sync/robust_lock.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/errors.hpp>

#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

namespace mproc::detail {

/// The start of every container in a Manager segment.
struct ContainerHeader {
  explicit ContainerHeader(std::uint64_t type) : tag(type) {}
  const std::uint64_t tag;  // type_tag of the handle type: decoding checks it
  // Every operation holds it. Error-checking, so that an operation called from inside
  // an update() callback on the same container fails instead of deadlocking.
  RobustMutex mutex{PTHREAD_MUTEX_ERRORCHECK};
  std::atomic<std::uint64_t> deaths{0};
};

/// Where a container lives: its Manager's segment, kept mapped by this reference,
/// and the offset of its root (a struct starting with a ContainerHeader).
class ContainerRef {
 public:
  /// Allocates and constructs a Root in seg.
  template <class Root, class... Args>
  static ContainerRef make(std::shared_ptr<Segment> seg, const char* what, Args&&... args) {
    const std::uint64_t offset = SegmentAllocator(*seg).allocate(sizeof(Root), what);
    ::new (seg->at<void>(offset)) Root(std::forward<Args>(args)...);
    return ContainerRef(std::move(seg), offset);
  }

  template <class Root>
  Root& root() const noexcept {
    return *seg_->at<Root>(offset_);
  }
  Segment& segment() const noexcept { return *seg_; }
  SegmentAllocator allocator() const noexcept { return SegmentAllocator(*seg_); }
  template <class T>
  T* at(std::uint64_t offset) const noexcept {
    return seg_->at<T>(offset);
  }
  friend bool operator==(const ContainerRef& a, const ContainerRef& b) noexcept {
    return a.seg_ == b.seg_ && a.offset_ == b.offset_;
  }

  void encode(Writer& w) const {
    seg_->encode(w);
    w.pod(offset_);
  }
  /// The container encode() described. Throws ProtocolError unless the bytes name a
  /// live Root whose tag is `tag`, SharedMemoryGone if the segment cannot be reached.
  template <class Root>
  static ContainerRef decode(Reader& r, std::uint64_t tag, const char* what) {
    auto seg = Segment::decode(r, SegmentKind::manager, what);
    const auto offset = r.pod<std::uint64_t>();
    if (!SegmentAllocator(*seg).plausible(offset, sizeof(Root)) || seg->at<ContainerHeader>(offset)->tag != tag) {
      throw ProtocolError(std::string("mproc: the bytes do not name a ") + what + " in its Manager's memory");
    }
    return ContainerRef(std::move(seg), offset);
  }

 private:
  ContainerRef(std::shared_ptr<Segment> seg, std::uint64_t offset) noexcept : seg_(std::move(seg)), offset_(offset) {}

  std::shared_ptr<Segment> seg_;
  std::uint64_t offset_;
};

/// Runs f(store) with the container's lock held. If the last holder died, first lets
/// the store repair what it left half done (Store::repair()).
template <class Store, class F>
decltype(auto) with_lock(const ContainerRef& ref, const char* what, F&& f) {
  Store store(ref);
  ContainerHeader& header = store.header();
  try {
    RobustLock guard(header.mutex, header.deaths);
    if (guard.recovered()) store.repair();
    return std::forward<F>(f)(store);
  } catch (const OSError& e) {
    if (e.error_code() != EDEADLK) throw;
    throw ValueError(std::string("mproc: ") + what +
                     " called from inside an update() callback on the same container (that would deadlock)");
  }
}

/// A length-prefixed run of bytes in a segment.
struct BlobHeader {
  std::uint64_t size;
};

/// Copies bytes into a new blob; returns its offset.
inline std::uint64_t store_blob(const ContainerRef& c, std::span<const std::byte> bytes, const char* what) {
  const std::uint64_t offset = c.allocator().allocate(sizeof(BlobHeader) + bytes.size(), what);
  c.at<BlobHeader>(offset)->size = bytes.size();
  if (!bytes.empty()) std::memcpy(c.at<std::byte>(offset + sizeof(BlobHeader)), bytes.data(), bytes.size());
  return offset;
}

inline std::span<const std::byte> blob_bytes(const ContainerRef& c, std::uint64_t offset) noexcept {
  return {c.at<const std::byte>(offset + sizeof(BlobHeader)), static_cast<std::size_t>(c.at<BlobHeader>(offset)->size)};
}

/// How a container keeps a T: in place when T is a plain value (trivially copyable,
/// no pointers, at most 16-byte aligned), else as the offset of a blob holding its
/// encoding.
template <class T>
struct ElementStore {
  static constexpr bool in_place = (kind_of<T>() == Kind::trivial || kind_of<T>() == Kind::boolean) && alignof(T) <= 16;
  using Slot = std::conditional_t<in_place, T, std::uint64_t>;

  /// The slot for v (for an encoded T, a new blob the caller must link or drop).
  static Slot make(const ContainerRef& c, const T& v, const char* what) {
    if constexpr (in_place) {
      return v;
    } else {
      const Bytes bytes = encode(v);
      return store_blob(c, bytes.span(), what);
    }
  }
  static T read(const ContainerRef& c, const Slot& slot) {
    if constexpr (in_place) return slot;
    else return decode<T>(blob_bytes(c, slot));
  }
  /// Frees what make() allocated.
  static void drop(const ContainerRef& c, const Slot& slot) noexcept {
    if constexpr (!in_place) c.allocator().deallocate(slot);
    else (void)c, (void)slot;
  }
};

/// A 64-bit hash of bytes (dict keys), the same in every process.
inline std::uint64_t hash_bytes(std::span<const std::byte> bytes) noexcept {
  constexpr std::uint64_t k = 0x9e3779b97f4a7c15ULL;
  std::uint64_t h = bytes.size() * k;
  std::size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    h = (h ^ w) * k;
    h ^= h >> 32;
  }
  std::uint64_t tail = 0;
  if (i < bytes.size()) std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  h = (h ^ tail) * k;
  // murmur3's finaliser: every input bit reaches every output bit.
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

}  // namespace mproc::detail
