#pragma once
// Segment: shared memory backed by a memfd, the home of every Value, Array, lock
// and Manager container.
//
// A memfd has no name: nothing appears in /dev/shm, and the kernel frees the memory
// when the last process that maps it (or holds its descriptor) is gone, whether it
// exits normally, throws, or is killed with SIGKILL. Processes forked after a segment
// was made inherit its mapping. Any other process (a Pool worker forked earlier, say)
// reaches it from a handle: the handle names a process that holds the descriptor and
// its number, and the receiver opens /proc/<pid>/fd/<fd> (same user, no ptrace
// attach needed), then checks the segment's random id, so a recycled pid or a reused
// descriptor number is detected instead of trusted.
//
// Each process maps the whole `reserved` size at once (address space only); the file
// behind it is extended with fallocate() as the segment grows, so addresses never
// move and no process ever has to remap.

#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/os/fork_safe_mutex.hpp>
#include <mproc/detail/shm/memfd.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/errors.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

namespace mproc::detail {

inline constexpr std::uint64_t segment_magic = 0x6765736370726f6dULL;  // "mprocseg"

/// What a segment holds; checked when a handle is decoded.
enum class SegmentKind : std::uint64_t { arena = 1, manager = 2 };

/// The first 64 bytes of every segment.
struct SegmentHeader {
  std::uint64_t magic;
  std::uint64_t id;                       // random: tells this segment from any other
  std::uint64_t kind;                     // SegmentKind
  std::uint64_t reserved;                 // bytes every process maps: the most it may grow to
  std::atomic<std::uint64_t> committed;   // bytes backed by memory; never beyond the file size
  std::atomic<std::uint64_t> cursor;      // arenas: the next free offset
  std::int32_t creator_pid;
  std::int32_t creator_fd;
  std::uint64_t flags;                    // segment_flag_*
};
static_assert(sizeof(SegmentHeader) == 64);
inline constexpr std::size_t segment_header_size = sizeof(SegmentHeader);

/// SegmentHeader::flags: the segment holds one object of its own (see SharedHeap),
/// whose memory must go back once the last handle anywhere is dropped.
inline constexpr std::uint64_t segment_flag_own_object = 1;

class Segment;

/// Every segment this process maps, by id, so that a handle decoded here reuses the
/// mapping it inherited or decoded before. It also keeps the last few segments
/// reached through /proc mapped, so that a Pool worker handed the same container in
/// task after task opens it once, not per task; but never a segment of one object
/// of its own: kept here, a big Array dropped everywhere else would keep its memory
/// for as long as the worker lives (opening it again costs little next to its size).
class SegmentRegistry {
 public:
  static constexpr std::size_t recent_capacity = 8;

  /// The process-wide registry. Never destroyed: handles in static objects may
  /// outlive any static registry, and the kernel unmaps everything at exit anyway.
  static SegmentRegistry& instance() {
    static auto* registry = new SegmentRegistry();
    return *registry;
  }

  std::shared_ptr<Segment> find(std::uint64_t id) {
    std::lock_guard lock(mutex());
    const auto it = map_.find(id);
    return it == map_.end() ? nullptr : it->second.lock();
  }

  /// Registers s unless a live segment with its id is already known; returns the
  /// one to use.
  std::shared_ptr<Segment> add(std::shared_ptr<Segment> s, std::uint64_t id) {
    std::lock_guard lock(mutex());
    auto& slot = map_[id];
    if (auto existing = slot.lock()) return existing;
    slot = s;
    return s;
  }

  /// Called by a dying Segment: forgets its id unless a newer mapping took it over.
  void forget(std::uint64_t id) noexcept {
    std::lock_guard lock(mutex());
    const auto it = map_.find(id);
    if (it != map_.end() && it->second.expired()) map_.erase(it);
  }

  /// Keeps s mapped for a while (until recent_capacity newer ones have come), unless
  /// it holds one object of its own.
  void keep_recent(std::shared_ptr<Segment> s);

  /// Drops the kept segments (tests use it to check that nothing else holds one).
  void drop_recent() {
    std::array<std::shared_ptr<Segment>, recent_capacity> dropped;
    {
      std::lock_guard lock(mutex());
      dropped.swap(recent_);
    }
  }

 private:
  struct Tag {};
  static ForkSafeMutex<Tag>& mutex() { return fork_safe_mutex<Tag>(); }

  std::unordered_map<std::uint64_t, std::weak_ptr<Segment>> map_;
  std::array<std::shared_ptr<Segment>, recent_capacity> recent_{};
  std::size_t next_ = 0;
};

/// One memfd-backed shared segment, mapped in this process. Owns the mapping and
/// the descriptor; always held through a std::shared_ptr (handles copy it).
class Segment {
 public:
  /// Makes a new segment of `committed` bytes (memory reserved now) that may grow to
  /// `reserved` bytes. Throws SharedMemoryFull if the system has no memory for it, or
  /// this process no address space.
  static std::shared_ptr<Segment> create(SegmentKind kind, std::size_t committed, std::size_t reserved,
                                         std::uint64_t flags = 0) {
    committed = page_round_up(std::max(committed, segment_header_size));
    reserved = page_round_up(std::max(reserved, committed));
    check_file_size("fallocate(memfd)", committed);
    Fd fd = make_memfd("mproc", 0);
    if (!allocate_file(fd.get(), committed)) {
      throw SharedMemoryFull("mproc: the system has no memory for a shared segment of " + std::to_string(committed) +
                             " bytes");
    }
    const std::uint64_t id = random_id();
    const int fd_number = fd.get();
    std::shared_ptr<Segment> s(new Segment(std::move(fd), map(fd_number, reserved), reserved));
    auto* h = ::new (s->base()) SegmentHeader{};
    h->magic = segment_magic;
    h->id = id;
    h->kind = static_cast<std::uint64_t>(kind);
    h->reserved = reserved;
    h->committed.store(committed, std::memory_order_relaxed);
    h->cursor.store(segment_header_size, std::memory_order_relaxed);
    h->creator_pid = static_cast<std::int32_t>(::getpid());
    h->creator_fd = fd_number;
    h->flags = flags;
    return SegmentRegistry::instance().add(std::move(s), id);
  }

  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment() {
    const std::uint64_t id = header().id;
    ::munmap(base_, reserved_);
    SegmentRegistry::instance().forget(id);
  }

  std::byte* base() const noexcept { return static_cast<std::byte*>(base_); }
  SegmentHeader& header() const noexcept { return *static_cast<SegmentHeader*>(base_); }
  std::uint64_t id() const noexcept { return header().id; }
  int fd() const noexcept { return fd_.get(); }
  std::size_t reserved() const noexcept { return reserved_; }
  std::size_t committed() const noexcept { return header().committed.load(std::memory_order_acquire); }

  /// The object at offset (the caller has checked that it lies within committed()).
  template <class T>
  T* at(std::uint64_t offset) const noexcept {
    return reinterpret_cast<T*>(base() + offset);
  }
  std::uint64_t offset_of(const void* p) const noexcept {
    return static_cast<std::uint64_t>(static_cast<const std::byte*>(p) - base());
  }

  /// Backs the segment with memory up to `wanted` bytes, or if the system has no
  /// memory (or the file-size limit no room) for that, up to `needed` (both at most
  /// reserved()). Returns false if the system has no memory left for `needed`; throws
  /// OSError (EFBIG) if `needed` is past the file-size limit (RLIMIT_FSIZE: growing
  /// the file there would end the program with SIGXFSZ). Processes may grow one
  /// segment at once (a parent and a child carving from an arena both map):
  /// committed() only rises.
  bool grow_to(std::size_t wanted, std::size_t needed) {
    needed = std::min(page_round_up(needed), reserved_);
    std::uint64_t now = committed();
    if (needed <= now) return true;
    wanted = std::min(std::max(page_round_up(wanted), needed), reserved_);
    const auto limit = file_size_limit();
    check_file_size("fallocate(memfd)", needed, limit);
    if (limit) wanted = std::max(needed, std::min(wanted, *limit / page_size() * page_size()));
    // Each extends the file to at least its size.
    std::size_t bytes = wanted;
    if (!allocate_file(fd_.get(), bytes)) {
      if (wanted == needed || !allocate_file(fd_.get(), needed)) return false;
      bytes = needed;
    }
    auto& committed_bytes = header().committed;
    while (now < bytes &&
           !committed_bytes.compare_exchange_weak(now, bytes, std::memory_order_release, std::memory_order_acquire)) {
    }
    return true;
  }

  /// Writes where to find this segment: this process and its descriptor, then the
  /// creator's (a second chance if this process is gone when the bytes arrive).
  void encode(Writer& w) const {
    w.pod(static_cast<std::int32_t>(::getpid()));
    w.pod(static_cast<std::int32_t>(fd_.get()));
    w.pod(header().creator_pid);
    w.pod(header().creator_fd);
    w.pod(header().id);
  }

  /// The segment encode() described, mapped in this process: the mapping it already
  /// has, or one opened through /proc. `what` names the handle for error messages.
  static std::shared_ptr<Segment> decode(Reader& r, SegmentKind kind, const char* what) {
    const auto sender_pid = r.pod<std::int32_t>();
    const auto sender_fd = r.pod<std::int32_t>();
    const auto creator_pid = r.pod<std::int32_t>();
    const auto creator_fd = r.pod<std::int32_t>();
    const auto id = r.pod<std::uint64_t>();
    auto& registry = SegmentRegistry::instance();
    if (auto s = registry.find(id)) {
      if (s->header().kind != static_cast<std::uint64_t>(kind)) {
        throw ProtocolError(std::string("mproc: a ") + what + " handle refers to the wrong kind of segment");
      }
      return s;
    }
    for (const auto& [pid, fd] : {std::pair{sender_pid, sender_fd}, std::pair{creator_pid, creator_fd}}) {
      if (auto s = open_from(pid, fd, id, kind)) {
        s = registry.add(std::move(s), id);
        registry.keep_recent(s);
        return s;
      }
    }
    throw SharedMemoryGone(std::string("mproc: cannot map the shared memory of a ") + what + ": process " +
                           std::to_string(creator_pid) + " that made it and process " + std::to_string(sender_pid) +
                           " that sent it have exited or no longer hold it. Keep the sender (or a handle in it) "
                           "alive until the receiver has decoded the handle.");
  }

 private:
  Segment(Fd fd, void* base, std::size_t reserved) noexcept : fd_(std::move(fd)), base_(base), reserved_(reserved) {}

  static bool allocate_file(int fd, std::size_t bytes) {
    // fallocate reserves the pages now: running out of memory is an error here,
    // never a SIGBUS on some later store.
    for (;;) {
      if (::fallocate(fd, 0, 0, static_cast<off_t>(bytes)) == 0) return true;
      if (errno == EINTR) continue;
      if (errno == ENOSPC || errno == ENOMEM || errno == EFBIG) return false;
      throw OSError("fallocate(memfd)", errno);
    }
  }

  static void* map(int fd, std::size_t reserved) {
    if (std::byte* p = map_memfd(fd, 0, reserved)) return p;
    throw SharedMemoryFull("mproc: no address space left to map a shared segment of " + std::to_string(reserved) +
                           " bytes (the address-space limit, RLIMIT_AS or `ulimit -v`, " + address_space_limit_text() +
                           ")");
  }

  static std::uint64_t random_id() {
    std::uint64_t id = 0;
    while (::getrandom(&id, sizeof id, 0) != static_cast<ssize_t>(sizeof id)) {
      if (errno != EINTR) throw OSError("getrandom", errno);
    }
    return id;
  }

  // Opens descriptor fd of process pid through /proc and maps it if it is the
  // segment `id`; nullptr if the process or the descriptor is gone or is something else.
  static std::shared_ptr<Segment> open_from(std::int32_t pid, std::int32_t fd, std::uint64_t id, SegmentKind kind) {
    if (pid <= 0 || fd < 0) return nullptr;
    const std::string path = "/proc/" + std::to_string(pid) + "/fd/" + std::to_string(fd);
    // O_NOCTTY, O_NONBLOCK: should the number now name a terminal or a FIFO, opening
    // it must neither adopt it nor block.
    Fd file(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!file && (errno == EMFILE || errno == ENFILE)) throw descriptor_limit_error("open(/proc/<pid>/fd/<fd>)", errno);
    if (!file) return nullptr;
    struct stat st{};
    if (::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
        static_cast<std::size_t>(st.st_size) < segment_header_size) {
      return nullptr;
    }
    std::byte raw[segment_header_size];
    if (::pread(file.get(), raw, sizeof raw, 0) != static_cast<ssize_t>(sizeof raw)) return nullptr;
    const auto field = [&raw](std::size_t offset) {
      std::uint64_t v;
      std::memcpy(&v, raw + offset, sizeof v);
      return v;
    };
    const std::uint64_t reserved = field(offsetof(SegmentHeader, reserved));
    if (field(offsetof(SegmentHeader, magic)) != segment_magic || field(offsetof(SegmentHeader, id)) != id ||
        field(offsetof(SegmentHeader, kind)) != static_cast<std::uint64_t>(kind) ||
        reserved < static_cast<std::uint64_t>(st.st_size) || reserved != page_round_up(reserved)) {
      return nullptr;
    }
    set_nonblocking(file.get(), false);
    const int fd_number = file.get();
    return std::shared_ptr<Segment>(new Segment(std::move(file), map(fd_number, reserved), reserved));
  }

  Fd fd_;
  void* base_;
  std::size_t reserved_;
};

inline void SegmentRegistry::keep_recent(std::shared_ptr<Segment> s) {
  if ((s->header().flags & segment_flag_own_object) != 0) return;
  std::shared_ptr<Segment> evicted;
  {
    std::lock_guard lock(mutex());
    for (const auto& r : recent_) {
      if (r == s) return;
    }
    evicted = std::exchange(recent_[next_], std::move(s));
    next_ = (next_ + 1) % recent_capacity;
  }
  // evicted may be the last reference: its destructor takes the mutex, so it runs
  // only now, outside the lock.
}

}  // namespace mproc::detail
