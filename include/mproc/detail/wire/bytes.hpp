#pragma once
// Bytes, the owned buffer every encoded value lives in, and the bounds-checked
// Writer/Reader the codec and the frames use to fill and parse it.

#include <mproc/detail/shm/memfd.hpp>  // address_space_limit
#include <mproc/errors.hpp>

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

namespace mproc {
namespace detail {

/// Asks for 2 MiB pages on a big buffer about to be filled front to back: a few
/// hundred page faults instead of tens of thousands. Small buffers are left alone.
inline void advise_huge_pages(void* data, std::size_t bytes) noexcept {
  constexpr std::uintptr_t huge_page = std::uintptr_t{2} << 20;
  if (bytes < 4 * huge_page) return;
  const auto begin = (reinterpret_cast<std::uintptr_t>(data) + huge_page - 1) & ~(huge_page - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(data) + bytes) & ~(huge_page - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

/// Faults in, in one system call, the whole pages of a big buffer about to be
/// written (or, with write false, read) front to back: a page fault costs several
/// times more than the kernel's own loop over the same pages (most in virtual
/// machines), and a payload of a MiB takes 256 of them. Small buffers, and kernels
/// without MADV_POPULATE_WRITE, are left alone.
inline void prefault(const void* data, std::size_t bytes, bool write = true) noexcept {
#ifdef MADV_POPULATE_WRITE
  constexpr std::size_t from = std::size_t{256} << 10;
  if (bytes < from) return;
  const std::uintptr_t page = 4096;
  const auto begin = (reinterpret_cast<std::uintptr_t>(data) + page - 1) & ~(page - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(data) + bytes) & ~(page - 1);
  if (end > begin) {
    ::madvise(reinterpret_cast<void*>(begin), end - begin, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
  }
#else
  (void)data;
  (void)bytes;
  (void)write;
#endif
}

/// The last big buffer (a mapping of Bytes) that the process freed, kept mapped for the
/// next one. A map of big items encodes its input into one such mapping per call, and
/// faulting tens of MiB in again cost more than encoding them (several times more in a
/// virtual machine, where memory given back is given back to the host too). One block of
/// at most kept_bytes (a bigger one is cut to that), handed over by one atomic exchange:
/// no lock, so any thread may free while another forks.
class SpareMapping {
 public:
  static constexpr std::size_t kept_bytes = std::size_t{128} << 20;
  struct Taken {
    std::byte* data = nullptr;
    std::size_t capacity = 0;
    std::size_t faulted = 0;  // the bytes from the start whose pages are in
  };
  /// The kept block, grown to at least `capacity` bytes, or nothing.
  static Taken take(std::size_t capacity) noexcept {
    Block* b = slot().exchange(nullptr, std::memory_order_acquire);
    if (b == nullptr) return {};
    Taken t{b->data, b->capacity, b->capacity};
    delete b;
    (void)::madvise(t.data, t.capacity, MADV_DOFORK);  // a buffer in use is copied into children as usual
    if (t.capacity < capacity) {
      void* p = ::mremap(t.data, t.capacity, capacity, MREMAP_MAYMOVE);
      if (p == MAP_FAILED) {
        ::munmap(t.data, t.capacity);
        return {};
      }
      t.data = static_cast<std::byte*>(p);
      t.capacity = capacity;
    }
    return t;
  }
  /// Keeps a freed mapping (its first kept_bytes) for the next take().
  static void give(std::byte* data, std::size_t capacity) noexcept {
    // Under an address-space limit (`ulimit -v`) an eighth of it at most, so that what
    // is kept never makes a big allocation fail.
    std::size_t keep = kept_bytes;
    if (const auto limit = address_space_limit()) keep = std::min(keep, *limit / 8 / 4096 * 4096);
    if (capacity > keep) {
      ::munmap(data + keep, capacity - keep);
      capacity = keep;
    }
    if (capacity == 0) return;
    // Kept out of children forked meanwhile (a pool's fork server): shared with one, the
    // next buffer here would copy each page on its first write instead of just using it.
    (void)::madvise(data, capacity, MADV_DONTFORK);
    Block* b = new (std::nothrow) Block{data, capacity};
    if (b == nullptr) {
      ::munmap(data, capacity);
      return;
    }
    if (Block* old = slot().exchange(b, std::memory_order_acq_rel)) {
      ::munmap(old->data, old->capacity);
      delete old;
    }
  }

 private:
  struct Block {
    std::byte* data;
    std::size_t capacity;
  };
  static std::atomic<Block*>& slot() noexcept {
    static std::atomic<Block*> kept{nullptr};
    // A child has no copy of the kept block (MADV_DONTFORK): it starts with none.
    static const bool registered =
        (::pthread_atfork(nullptr, nullptr, [] { kept.store(nullptr, std::memory_order_relaxed); }), true);
    (void)registered;
    return kept;
  }
};

}  // namespace detail

/// A move-only, growable byte buffer. Unlike std::vector<std::byte> it grows without
/// zero-filling, which matters for the 100 MiB payloads that cross pipes.
class Bytes {
 public:
  Bytes() = default;
  explicit Bytes(std::size_t size) { resize(size); }
  Bytes(const void* data, std::size_t size) { append(data, size); }
  Bytes(Bytes&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  Bytes& operator=(Bytes&& other) noexcept {
    if (this != &other) {
      free_block();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
  }
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  ~Bytes() { free_block(); }

  std::byte* data() noexcept { return data_; }
  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::span<const std::byte> span() const noexcept { return {data_, size_}; }
  operator std::span<const std::byte>() const noexcept { return span(); }

  void clear() noexcept { size_ = 0; }
  void reserve(std::size_t capacity) {
    if (capacity <= capacity_) return;
    if (capacity >= mapped_from) return reserve_mapped(capacity);
    // realloc lets glibc mremap large blocks instead of copying them.
    auto* grown = static_cast<std::byte*>(std::realloc(data_, capacity));
    if (grown == nullptr) throw std::bad_alloc();
    data_ = grown;
    capacity_ = capacity;
    detail::advise_huge_pages(data_, capacity_);
    detail::prefault(data_ + size_, capacity_ - size_);  // new memory, about to be filled
  }
  /// Makes room for n more bytes past size(), growing geometrically.
  void reserve_more(std::size_t n) {
    if (size_ + n > capacity_) reserve(std::max(size_ + n, capacity_ + capacity_ / 2));
  }
  /// Sets the size; new bytes are left uninitialised.
  void resize(std::size_t size) {
    if (size > size_) reserve_more(size - size_);
    size_ = size;
  }
  /// Grows by n uninitialised bytes and returns a pointer to them.
  std::byte* extend(std::size_t n) {
    const std::size_t old = size_;
    resize(size_ + n);
    return data_ + old;
  }
  void append(const void* src, std::size_t n) {
    if (n != 0) std::memcpy(extend(n), src, n);
  }
  /// Drops the first n bytes, keeping the rest (used by stream readers).
  void consume_front(std::size_t n) noexcept {
    if (n >= size_) {
      size_ = 0;
      return;
    }
    std::memmove(data_, data_ + n, size_ - n);
    size_ -= n;
  }

 private:
  /// Buffers from this size up are mappings of their own, grown by mremap: glibc's
  /// realloc copies a block from its heap (where blocks of many MiB land once freed
  /// ones raised its mmap threshold), so a buffer growing to hold many big items was
  /// copied and faulted in again at each step.
  static constexpr std::size_t mapped_from = std::size_t{4} << 20;

  void reserve_mapped(std::size_t capacity) {
    constexpr std::size_t step = std::size_t{2} << 20;  // a huge page
    capacity = (capacity + step - 1) / step * step;
    std::size_t faulted = size_;  // the bytes from the start that have their pages already
    void* p = MAP_FAILED;
    if (capacity_ >= mapped_from) {
      p = ::mremap(data_, capacity_, capacity, MREMAP_MAYMOVE);
      faulted = capacity_;  // faulted in when it was reserved
    } else if (const auto spare = detail::SpareMapping::take(capacity); spare.data != nullptr) {
      p = spare.data;
      capacity = spare.capacity;
      faulted = spare.faulted;
    } else {
      p = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (p == MAP_FAILED) throw std::bad_alloc();
    if (capacity_ < mapped_from) {
      if (size_ != 0) std::memcpy(p, data_, size_);
      std::free(data_);
    }
    data_ = static_cast<std::byte*>(p);
    capacity_ = capacity;
    // The whole mapping, not just the new part: a mapping whose parts were advised
    // differently is split in two, and mremap cannot grow it any more.
    detail::advise_huge_pages(data_, capacity_);
    if (faulted < capacity_) detail::prefault(data_ + faulted, capacity_ - faulted);
  }
  void free_block() noexcept {
    if (capacity_ >= mapped_from) detail::SpareMapping::give(data_, capacity_);
    else std::free(data_);
  }

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

namespace detail {

/// How deep values may nest inside one another to be sent (README, "What can be sent"):
/// each container, smart pointer or class with a serialization of its own takes a level
/// (mproc::max_nesting). Decoding recurses once per level, on the stack of whichever
/// thread does it (a pool's own thread, for results), so deeper values are refused on
/// both sides: the sender's encode throws ValueError, a receiver's decode ProtocolError.
/// 1000 levels took at most 170 KiB of stack through the codec and cereal (half a MiB
/// unoptimised or under AddressSanitizer), a small part of a thread's usual 8 MiB.
/// (Python's pickle stops at about 500 nested lists.)
inline constexpr std::size_t max_nesting = 1000;

/// Counts the levels of nesting (max_nesting) an encoder or decoder is inside.
class Nesting {
 public:
  /// A level entered with enter(); leaving it on destruction, also by an exception.
  class Level {
   public:
    explicit Level(Nesting& n) noexcept : n_(&n) {}
    Level(const Level&) = delete;
    Level& operator=(const Level&) = delete;
    ~Level() { n_->leave(); }

   private:
    Nesting* n_;
  };

  explicit Nesting(std::size_t depth = 0) noexcept : depth_(depth) {}
  std::size_t depth() const noexcept { return depth_; }

  /// One level deeper; throws E past max_nesting. Pair with leave(), or use Level.
  template <class E>
  void enter() {
    if (depth_ == max_nesting) {
      throw E("mproc: a value nested more than " + std::to_string(max_nesting) +
              " levels deep cannot be sent (the limit keeps decoding it within a thread's stack)");
    }
    ++depth_;
  }
  void leave() noexcept { --depth_; }

 private:
  std::size_t depth_;
};

/// Appends encoded pieces to a Bytes buffer.
class Writer {
 public:
  explicit Writer(Bytes& out) noexcept : out_(&out) {}

  void raw(const void* src, std::size_t n) { out_->append(src, n); }
  template <class T>
  void pod(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    raw(&value, sizeof(T));
  }
  /// LEB128 unsigned integer: one byte for lengths below 128.
  void varint(std::uint64_t value) {
    std::byte buf[10];
    std::size_t n = 0;
    while (value >= 0x80) {
      buf[n++] = static_cast<std::byte>((value & 0x7f) | 0x80);
      value >>= 7;
    }
    buf[n++] = static_cast<std::byte>(value);
    raw(buf, n);
  }
  Bytes& buffer() noexcept { return *out_; }

  /// Enters a value nested in the one being written, until the Level ends; a value
  /// nested too deep to be decoded (max_nesting) is a ValueError.
  [[nodiscard]] Nesting::Level nest() {
    nesting_.enter<ValueError>();
    return Nesting::Level(nesting_);
  }
  std::size_t depth() const noexcept { return nesting_.depth(); }

 private:
  Bytes* out_;
  Nesting nesting_;
};

/// Reads encoded pieces from a byte span; every read is bounds-checked and a short
/// or malformed input throws ProtocolError.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) noexcept : in_(in) {}

  std::size_t remaining() const noexcept { return in_.size() - pos_; }
  std::size_t position() const noexcept { return pos_; }
  bool at_end() const noexcept { return pos_ == in_.size(); }

  /// Returns a pointer to the next n bytes and moves past them.
  const std::byte* take(std::size_t n) {
    if (n > remaining()) {
      throw ProtocolError("mproc: truncated data: needed " + std::to_string(n) + " bytes, " +
                          std::to_string(remaining()) + " left");
    }
    const std::byte* p = in_.data() + pos_;
    pos_ += n;
    return p;
  }
  void raw(void* dst, std::size_t n) {
    const std::byte* p = take(n);
    if (n != 0) std::memcpy(dst, p, n);
  }
  template <class T>
  T pod() {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    raw(&value, sizeof(T));
    return value;
  }
  std::uint64_t varint() {
    std::uint64_t value = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      const auto byte = std::to_integer<std::uint64_t>(*take(1));
      if (shift == 63 && byte > 1) break;  // more than 64 bits
      value |= (byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    throw ProtocolError("mproc: malformed length (varint longer than 64 bits)");
  }
  /// A count of elements that each take at least min_bytes: a count the remaining
  /// input cannot hold is rejected before anything is allocated.
  std::size_t count(std::size_t min_bytes) {
    const std::uint64_t n = varint();
    const std::size_t unit = min_bytes == 0 ? 1 : min_bytes;
    if (n > remaining() / unit) {
      throw ProtocolError("mproc: element count " + std::to_string(n) + " exceeds the " + std::to_string(remaining()) +
                          " bytes left");
    }
    return static_cast<std::size_t>(n);
  }

  /// Enters a value nested in the one being read, until the Level ends; deeper than
  /// max_nesting is a ProtocolError (the sender would have refused it).
  [[nodiscard]] Nesting::Level nest() {
    nesting_.enter<ProtocolError>();
    return Nesting::Level(nesting_);
  }
  std::size_t depth() const noexcept { return nesting_.depth(); }

 private:
  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
  Nesting nesting_;
};

}  // namespace detail
}  // namespace mproc
