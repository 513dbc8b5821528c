#pragma once
// SharedRing: the byte-level engine under mproc::Queue. A ring buffer in shared
// memory (a memfd mapped twice, see mirror_mapping.hpp) that carries frames (a
// 24-byte FrameHeader and a payload) between any number of writer and reader
// processes forked after it was made.
//
// - One writer at a time holds put_lock while it copies one frame in; one reader at
//   a time holds get_lock while it takes one frame out. Both are robust mutexes: a
//   holder that dies is repaired by the next one (see recover_writer/recover_reader).
// - Nobody waits while holding a lock (except inside an item bigger than the whole
//   ring, which streams through in pieces). Waiting is on futex words, so a waiter
//   that is killed leaves nothing behind.
// - Readers sleep only on an empty queue, and a publish onto a drained queue wakes them
//   all: the one that takes the item may be killed before it is done, and the others
//   must then be blocked on the robust get_lock (which the kernel hands on when its
//   holder dies), not asleep on a word that nobody will change again.
// - While an item bigger than the ring streams through, its writer always holds one of
//   three robust stream locks, and moves to another after each piece (never to the one
//   a reader has said it waits on, which it would take back before that reader got
//   it): a reader waiting for more bytes blocks on the one the writer holds, so it
//   wakes when a piece comes or when the writer dies (and then drops the item).
// - head and tail are byte positions that only grow; a frame is published by one
//   store to tail after its bytes are in place, so readers never see half a frame.
// - The ring grows: it starts small (1 MiB) and, when a writer finds it full, goes on
//   in a region four times the size (or as big as the item needs), up to its
//   capacity (1 GiB by default). Each region is a part of one memfd, mapped twice
//   (so that records have no seam); a region begins at a position, published by one
//   store (of the region count) under put_lock before any frame is written there, and
//   the positions before it stay in the regions before, which the readers finish
//   first. Each process maps a region when it first needs it and unmaps it once the
//   readers have left it (whose pages they give back then): so a queue costs little
//   address space (what `ulimit -v` limits) unless many bytes wait in it. A writer
//   that cannot map a bigger region waits for readers, as at full capacity.
// - Pages cost memory once written. To keep that to what is really in use, a writer
//   that finds the queue empty past the first 256 KiB of the lap jumps back to its
//   start (a padding frame that it consumes itself) and returns the pages beyond to
//   the system. A queue that never empties keeps the pages it has swept (up to the
//   region's size) unless it is bounded, when the jump is also taken whenever
//   maxsize items still fit.

#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/shm/crash_safety.hpp>  // fault_point
#include <mproc/detail/shm/memfd.hpp>
#include <mproc/detail/shm/mirror_mapping.hpp>
#include <mproc/detail/shm/shared_mapping.hpp>
#include <mproc/detail/sync/robust_lock.hpp>
#include <mproc/detail/sync/robust_mutex.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/errors.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <utility>

namespace mproc::detail {

class SharedRing {
 public:
  /// The most a ring grows to when no capacity is given; memory follows actual use.
  static constexpr std::size_t default_capacity = std::size_t{1} << 30;
  /// The size a ring starts with (its whole capacity if that is smaller).
  static constexpr std::size_t initial_capacity = std::size_t{1} << 20;

  /// maxsize bounds the number of items (0: unbounded); capacity is the most the
  /// ring grows to in bytes, rounded up to a power of two of at least one page.
  SharedRing(std::size_t maxsize, std::size_t capacity)
      : control_(sizeof(Control)),
        c_(new(control_.data()) Control(maxsize, fit_file_size_limit(ring_size(capacity)))),
        file_(make_memfd("mproc-ring", c_->file_bytes())) {
    (void)view(0);  // here, so that every process forked from now on has it mapped
  }
  SharedRing(const SharedRing&) = delete;
  SharedRing& operator=(const SharedRing&) = delete;
  ~SharedRing() {
    for (u32 r = 0; r < c_->region_count; ++r) unmap_mirrored(views_[r].load(), c_->region_size[r]);
  }

  /// Copies one item in. Returns false if wait ran out first (no room: maxsize items
  /// queued, or the ring full at its capacity, or at the most this process can map).
  /// An item bigger than that streams through the ring once it is empty, while
  /// readers take it: without wait it is refused at once, and if wait runs out
  /// midway it is withdrawn (a reader taking it drops it). Without wait, it still
  /// waits for the lock while another writer copies an item in (never for readers).
  bool put(std::span<const std::byte> payload, Deadline wait) {
    forget_left_regions();
    const u64 record = record_size(payload.size());
    if (wait.is_no_wait() && record > c_->region_size[c_->region_count - 1]) return false;
    const auto has_room = [&] { return ready_for(record); };
    RobustLock lock;
    Placement placement = Placement::none;
    for (;;) {
      // A writer that died in a giant item leaves the ring full: taking the lock
      // repairs that (recover_writer), so a streaming writer is a reason to try too.
      if (has_room() || c_->put_streaming.load() != 0 || can_grow()) {
        lock = lock_writer(wait);
        if (!lock) return false;
        placement = place(record);
        if (placement == Placement::stream && wait.is_no_wait()) return false;
        if (placement != Placement::none) break;
        lock.unlock();
      }
      if (wait.is_no_wait()) return false;
      if (!wait_for(c_->get_seq, c_->put_waiters, has_room, wait)) return false;
    }
    if (placement == Placement::stream) return stream_record(payload, record, wait);
    write_record(payload, record);
    return true;
  }

  /// Takes the oldest item: calls consume(payload) with its bytes and then removes
  /// it, even if consume throws (a poisoned item must not block the queue). Returns
  /// false if wait ran out before an item was there; without wait, also while another
  /// reader is taking one. A reader killed inside consume leaves the item to the next
  /// one (an item bigger than the ring, whose bytes are gone, is dropped).
  template <class Consume>
  bool get(Deadline wait, Consume&& consume) {
    forget_left_regions();
    std::optional<Taken> taken = take(wait);
    if (!taken) return false;
    struct Finish {
      SharedRing& ring;
      Taken& taken;
      ~Finish() { ring.finish(taken); }
    } finish{*this, *taken};
    consume(taken->payload);
    return true;
  }

  /// Items put and not yet taken (exact when no put or get is under way). Each count
  /// moves on the side that leaves the item visible to the next one in: a writer
  /// counts its item after it shows, a reader before the item goes, so that one
  /// killed in between is undone by the next writer (recover_writer) or the next
  /// reader, who finds the item still there. Meanwhile the difference may be
  /// negative: it reads as 0.
  std::size_t size() const noexcept {
    const std::uint64_t got = c_->get_count.load();
    const std::uint64_t put = c_->put_count.load();
    return put > got ? static_cast<std::size_t>(put - got) : 0;
  }
  std::size_t maxsize() const noexcept { return static_cast<std::size_t>(c_->maxsize); }
  /// The most the ring grows to.
  std::size_t capacity() const noexcept { return static_cast<std::size_t>(c_->region_size[c_->region_count - 1]); }

 private:
  using u64 = std::uint64_t;
  using u32 = std::uint32_t;
  static_assert(std::atomic<u64>::is_always_lock_free, "SharedRing needs address-free 64-bit atomics");

  // Jumping back to the lap's start only pays when the ring is much bigger than this.
  static constexpr u64 hot_bytes = u64{256} << 10;
  // Pages past the jump point are returned once at least this much can go.
  static constexpr u64 release_bytes = u64{1} << 20;
  static constexpr u32 no_stream_lock = 3;
  // Regions grow fourfold from initial_capacity (or less) up to at most 2^46 bytes.
  static constexpr u32 max_regions = 16;

  struct Control {
    Control(std::size_t max, u64 cap) : maxsize(max) {
      regions_of(cap, [this](u64 size, u64 offset) {
        region_size[region_count] = size;
        region_offset[region_count] = offset;
        ++region_count;
      });
    }
    /// Calls f(size, offset in the memfd) for each region of a ring of capacity cap.
    template <class F>
    static void regions_of(u64 cap, F f) {
      u64 size = std::min<u64>(cap, initial_capacity);
      for (u64 offset = 0;; offset += size, size = std::min(4 * size, cap)) {
        f(size, offset);
        if (size == cap) break;
      }
    }
    static u64 file_bytes_of(u64 cap) {
      u64 end = 0;
      regions_of(cap, [&end](u64 size, u64 offset) { end = offset + size; });
      return end;
    }
    u64 file_bytes() const noexcept { return region_offset[region_count - 1] + region_size[region_count - 1]; }

    RobustMutex put_lock;
    RobustMutex get_lock;
    // The writer of a streamed item holds stream_lock[stream_current] throughout.
    RobustMutex stream_lock[3];
    const u64 maxsize;
    // Region r: bytes [region_offset[r], + region_size[r]) of the memfd.
    u32 region_count = 0;
    u64 region_size[max_regions] = {};
    u64 region_offset[max_regions] = {};
    // Regions begun: the writers' is the last. Bumped (under put_lock) after
    // region_start is set for the new ones.
    std::atomic<u32> regions{1};
    std::atomic<u64> region_start[max_regions] = {};  // the position where each begins
    std::atomic<u32> head_region{0};  // the readers' region, as they last saw: the ones before are left

    // Writer side.
    alignas(64) std::atomic<u64> tail{0};  // bytes published
    std::atomic<u64> put_count{0};         // items published (a streamed one once whole)
    std::atomic<u32> put_seq{0};           // futex: bumped after tail moves
    std::atomic<u32> get_waiters{0};       // sleepers on put_seq
    std::atomic<u32> put_streaming{0};     // a writer is (or died) inside an item bigger than the ring
    std::atomic<u32> stream_current{0};    // which stream_lock that writer holds
    // Under put_lock: what a writer that dies mid-publish leaves for the next one.
    u64 pending_start = 0;  // tail before the item
    u64 pending_end = 0;    // tail after it; 0 when no publish is under way
    u64 pending_count = 0;  // put_count before it
    u64 high_water = 0;     // end of the furthest bytes written and not yet released
    u64 max_record = 0;     // the largest item record written so far

    // Reader side.
    alignas(64) std::atomic<u64> head{0};  // bytes consumed
    std::atomic<u64> get_count{0};         // items consumed
    std::atomic<u32> get_seq{0};           // futex: bumped after head moves
    std::atomic<u32> put_waiters{0};       // sleepers on get_seq
    // Under get_lock: the streamed item being taken (or skipped after its reader died).
    // Atomic: take() reads it without the lock, to see a half-taken item to settle.
    std::atomic<u64> skip_end{0};  // where it ends; 0 when none
    u64 skip_index = 0;
    std::atomic<u32> stream_waiter{no_stream_lock};  // the stream lock its reader waits on
    std::atomic<u32> stream_abandoned{0};            // its writer died: it is being dropped
  };

  /// An item being taken: its payload (in the ring, or copied out of a streamed
  /// item), and where the reader's head goes once it is consumed.
  struct Taken {
    std::span<const std::byte> payload;
    Bytes copy;
    u64 index = 0;
    u64 end = 0;
    bool consumed = false;  // head already moved past it (streamed items)
    RobustLock lock;
  };

  static u64 ring_size(std::size_t requested) {
    const u64 at_least = std::max<u64>(requested, page_size());
    if (at_least > (u64{1} << 46)) throw ValueError("mproc: Queue ring capacity too large");
    return std::bit_ceil(at_least);
  }
  /// cap, or under a file-size limit (RLIMIT_FSIZE) the largest power of two whose
  /// regions all fit in it: the memfd grown past it would end the program (SIGXFSZ),
  /// and an item bigger than the ring streams through it anyway. If not even a page
  /// fits, making the memfd raises OSError (EFBIG).
  static u64 fit_file_size_limit(u64 cap) {
    const auto limit = file_size_limit();
    if (!limit) return cap;
    while (cap > page_size() && Control::file_bytes_of(cap) > *limit) cap /= 2;
    return cap;
  }
  static constexpr u64 record_size(std::size_t payload) noexcept { return (frame_header_size + payload + 7) / 8 * 8; }

  // ---------------------------------------------------------------- regions

  /// The writers' region.
  u32 current() const noexcept { return c_->regions.load() - 1; }
  /// The region that holds position pos (one not before the readers').
  u32 region_of(u64 pos) const noexcept {
    u32 r = current();
    while (r > 0 && pos < c_->region_start[r].load()) --r;
    return r;
  }
  /// Where position pos lies in region r, mapped here (view(r) was called).
  std::byte* at(u32 r, u64 pos) const noexcept {
    return views_[r].load(std::memory_order_relaxed) + ((pos - c_->region_start[r].load()) & (c_->region_size[r] - 1));
  }
  /// Region r mapped in this process, or nullptr if it has no address space left.
  std::byte* try_view(u32 r) {
    if (std::byte* p = views_[r].load(std::memory_order_acquire)) return p;
    std::byte* p = map_mirrored(file_.get(), c_->region_offset[r], c_->region_size[r]);
    if (p == nullptr) return nullptr;
    std::byte* mapped = nullptr;
    if (views_[r].compare_exchange_strong(mapped, p)) return p;
    unmap_mirrored(p, c_->region_size[r]);  // another thread of this process mapped it first
    return mapped;
  }
  /// Region r mapped in this process; SharedMemoryFull if it has no address space left.
  std::byte* view(u32 r) {
    if (std::byte* p = try_view(r)) return p;
    throw SharedMemoryFull("mproc: no address space left to map a Queue's ring of " +
                           std::to_string(2 * c_->region_size[r]) +
                           " bytes (the address-space limit, RLIMIT_AS or "
                           "`ulimit -v`, " +
                           address_space_limit_text() + ")");
  }
  /// Unmaps the regions the readers have left. Nothing in this process uses them:
  /// writers are in the last region, readers (one at a time) at or past head_region.
  void forget_left_regions() noexcept {
    const u32 left = c_->head_region.load();
    for (u32 r = unmapped_below_.load(); r < left; r = unmapped_below_.load()) {
      if (unmapped_below_.compare_exchange_strong(r, r + 1)) {
        unmap_mirrored(views_[r].exchange(nullptr), c_->region_size[r]);
      }
    }
  }

  bool at_maxsize() const noexcept { return c_->maxsize != 0 && size() >= c_->maxsize; }
  /// Whether bytes more fit in the writers' region now.
  bool room_for(u64 bytes) const noexcept {
    if (at_maxsize()) return false;
    const u32 r = current();
    const u64 tail = c_->tail.load();
    const u64 from = std::max(c_->head.load(), c_->region_start[r].load());
    const u64 used = tail > from ? tail - from : 0;  // without the locks, a hint
    return c_->region_size[r] - std::min(used, c_->region_size[r]) >= bytes;
  }
  bool can_grow() const noexcept { return current() + 1 < c_->region_count && !at_maxsize(); }
  /// Whether a record can go in without growing the ring: it fits in the writers'
  /// region, or it is bigger and the queue is empty, to stream it through (a streamed
  /// item is alone in the ring: see abandon and recover_writer).
  bool ready_for(u64 record) const noexcept {
    if (record <= c_->region_size[current()]) return room_for(record);
    return !at_maxsize() && c_->head.load() == c_->tail.load();
  }

  enum class Placement { none, in_place, stream };

  /// Under put_lock: where a record goes now. In the writers' region if it fits; else
  /// in a bigger region if the ring may grow and this process can map it; else
  /// streamed through the writers' region if it is bigger than that and the queue is
  /// empty; else nowhere yet.
  Placement place(u64 record) {
    const u32 r = current();
    (void)view(r);
    const bool fits = record <= c_->region_size[r];
    if (fits && room_for(record)) return Placement::in_place;
    if (grow(record)) return Placement::in_place;
    return !fits && ready_for(record) ? Placement::stream : Placement::none;
  }

  /// Under put_lock: makes the writers go on in a bigger region (four times the size,
  /// or the first that holds record), at the tail. False if the ring is at its
  /// capacity (or maxsize), or this process has no address space for the region.
  bool grow(u64 record) {
    if (at_maxsize()) return false;
    const u32 from = current();
    u32 to = from + 1;
    while (to < c_->region_count && c_->region_size[to] < record) ++to;
    if (to >= c_->region_count || try_view(to) == nullptr) return false;
    const u64 tail = c_->tail.load(std::memory_order_relaxed);
    for (u32 r = from + 1; r <= to; ++r) c_->region_start[r].store(tail);  // skipped ones stay empty
    c_->high_water = 0;
    c_->regions.store(to + 1);
    notify(c_->get_seq, c_->put_waiters);  // writers waiting for room, in another process maybe
    return true;
  }

  /// Reader, get_lock held, at head: the region of head, mapped here. Regions the
  /// readers have just left are empty: their pages go back to the system.
  u32 enter_region(u64 head) {
    const u32 r = region_of(head);
    if (const u32 left = c_->head_region.load(); r > left) {
      for (u32 k = left; k < r; ++k) punch_hole(file_.get(), c_->region_offset[k], c_->region_size[k]);
      c_->head_region.store(r);  // a reader killed before this leaves it to the next
    }
    (void)view(r);
    return r;
  }

  /// Sleeps on seq (counted in waiters) until ready() or the deadline.
  template <class Ready>
  static bool wait_for(std::atomic<u32>& seq, std::atomic<u32>& waiters, Ready ready, Deadline deadline) {
    // A waiter killed in here stays counted: its only cost is a futex_wake call
    // with nobody to wake when the other side has something for it.
    waiters.fetch_add(1);
    struct Leave {
      std::atomic<u32>& w;
      ~Leave() { w.fetch_sub(1); }
    } leave{waiters};
    for (;;) {
      const u32 seen = seq.load();
      if (ready()) return true;
      if (!futex_wait(seq, seen, deadline)) return ready();
    }
  }
  static void notify(std::atomic<u32>& seq, std::atomic<u32>& waiters) noexcept {
    seq.fetch_add(1);
    if (waiters.load() != 0) futex_wake(seq);
  }

  // forever: lock() tries first, without reading the clock.
  static LockResult lock(RobustMutex& m, Deadline deadline) {
    return deadline.is_forever() ? m.lock() : m.lock_until(deadline);
  }
  RobustLock lock_writer(Deadline wait) {
    // put_nowait may wait for another writer's copy, never for a giant item that
    // streams through at the readers' pace.
    const bool streaming = c_->put_streaming.load() != 0;
    const bool no_wait = wait.is_no_wait();
    const LockResult r =
        no_wait && streaming ? c_->put_lock.try_lock() : lock(c_->put_lock, no_wait ? Deadline::forever() : wait);
    if (r == LockResult::timed_out) return {};
    RobustLock l(c_->put_lock, std::adopt_lock);
    // A streaming writer holds put_lock: finding put_streaming set means it died.
    if ((r == LockResult::owner_died || c_->put_streaming.load() != 0) && !recover_writer(wait)) return {};
    return l;
  }
  RobustLock lock_reader(Deadline wait) {
    // get_nowait gives up at once while another reader takes an item, as Python's does.
    const LockResult r = wait.is_no_wait() ? c_->get_lock.try_lock() : lock(c_->get_lock, wait);
    if (r == LockResult::timed_out) return {};
    RobustLock l(c_->get_lock, std::adopt_lock);
    if (r == LockResult::owner_died || c_->skip_end != 0) {
      if (!recover_reader(wait)) return {};  // no_wait: only what needs no waiting
    }
    return l;
  }

  // ---------------------------------------------------------------- writing

  void write_header(u32 r, u64 position, FrameKind kind, u64 id, u64 size) const noexcept {
    const FrameHeader h = make_frame_header(kind, id, size);
    std::memcpy(at(r, position), &h, frame_header_size);
  }

  /// Records the publish about to happen, so that a writer dying in it can be repaired.
  void begin_publish(u64 start, u64 end, u64 count) noexcept {
    c_->pending_start = start;
    c_->pending_count = count;
    std::atomic_signal_fence(std::memory_order_seq_cst);  // in this order even if killed
    c_->pending_end = end;
  }
  /// Counts the item, now visible, and closes the record.
  void end_publish() noexcept {
    c_->put_count.store(c_->pending_count + 1);
    std::atomic_signal_fence(std::memory_order_seq_cst);
    c_->pending_end = 0;
  }

  /// Whether a writer at offset should continue at the lap's start, so the pages in
  /// use stay few. Never at the cost of room, and never counting on the readers: the
  /// padding to the lap's end stays queued until a reader passes it, so the used
  /// bytes before offset and the record must both fit before it. Only a bounded
  /// queue jumps while items are queued, and only if maxsize items of the largest
  /// size seen still fit before the readers' position.
  bool should_jump(u64 cap, u64 offset, u64 used, u64 record) const noexcept {
    if (cap < 4 * hot_bytes || offset < hot_bytes || cap - offset < frame_header_size) return false;
    if (used == 0) return offset >= record;
    return c_->maxsize != 0 && offset >= 2 * used && offset - used >= record &&
           (offset - used - record) / c_->maxsize >= c_->max_record;
  }

  /// Writes a padding frame from tail to the lap's end of region r and returns the
  /// lap's start. When the queue is empty and no reader is busy, moves the readers
  /// past it too.
  u64 jump(u32 r, u64 tail, u64 offset) {
    const u64 cap = c_->region_size[r];
    const u64 next = tail + (cap - offset);
    write_header(r, tail, FrameKind::padding, 0, cap - offset - frame_header_size);
    if (c_->high_water >= offset + frame_header_size + release_bytes) {
      punch_hole(file_.get(), c_->region_offset[r] + offset + frame_header_size,
                 c_->high_water - offset - frame_header_size);
    }
    c_->high_water = offset + frame_header_size;
    if (c_->head.load() == tail) {
      // Publish the padding alone, then consume it as a reader would: a writer
      // killed in between leaves a well-formed ring either way.
      const LockResult r = c_->get_lock.try_lock();
      if (r != LockResult::timed_out) {
        RobustLock reader(c_->get_lock, std::adopt_lock);
        if (r == LockResult::owner_died) recover_reader(Deadline::no_wait());  // cannot wait
        if (c_->head.load() == tail) {
          c_->tail.store(next);
          c_->head.store(next);
        }
      }
    }
    return next;
  }

  void write_record(std::span<const std::byte> payload, u64 record) {
    const u32 r = current();
    const u64 cap = c_->region_size[r];
    const u64 region_start = c_->region_start[r].load(std::memory_order_relaxed);
    const u64 tail = c_->tail.load(std::memory_order_relaxed);  // only the lock holder moves it
    const u64 offset = (tail - region_start) & (cap - 1);
    const u64 used = tail - std::max(c_->head.load(), region_start);
    const u64 start = should_jump(cap, offset, used, record) ? jump(r, tail, offset) : tail;
    c_->max_record = std::max(c_->max_record, record);
    const u64 index = c_->put_count.load(std::memory_order_relaxed);
    write_header(r, start, FrameKind::message, index, payload.size());
    if (!payload.empty()) std::memcpy(at(r, start) + frame_header_size, payload.data(), payload.size());
    c_->high_water = std::max(c_->high_water, std::min(cap, ((start - region_start) & (cap - 1)) + record));
    const u64 published = c_->tail.load(std::memory_order_relaxed);  // past the padding if jump() consumed it
    begin_publish(published, start + record, index);
    fault_point("ring.publish");
    c_->tail.store(start + record);
    fault_point("ring.published");
    end_publish();
    // Readers sleep only on an empty queue, so only a publish onto a drained queue
    // wakes them (checked after the store: a reader draining meanwhile is seen); all
    // of them, as the first one may die before it takes the item.
    c_->put_seq.fetch_add(1);
    if (c_->get_waiters.load() != 0 && c_->head.load() == published) futex_wake(c_->put_seq);
  }

  /// Streams an item bigger than the writers' region through it, piece by piece as
  /// the reader makes room. Once part of an item is visible, the rest must follow: if
  /// the deadline comes first, the item is withdrawn (false).
  bool stream_record(std::span<const std::byte> payload, u64 record, Deadline deadline) {
    const u32 r = current();
    const u64 cap = c_->region_size[r];
    c_->put_streaming.store(1);
    take_stream_lock(no_stream_lock);  // before the first byte shows
    const u64 start = c_->tail.load(std::memory_order_relaxed);
    const u64 index = c_->put_count.load(std::memory_order_relaxed);
    const FrameHeader h = make_frame_header(FrameKind::message, index, payload.size());
    begin_publish(start, start + record, index);
    fault_point("ring.publish");
    c_->high_water = cap;
    // The queue is empty here (ready_for), so the first piece holds the header and the
    // readers' head is this item's.
    for (u64 done = 0; done < record;) {
      const u64 tail = start + done;
      // Wait for a good share of the ring, not every free byte, to keep wake-ups few.
      const u64 want = std::min(record - done, cap / 2);
      if (!wait_for(c_->get_seq, c_->put_waiters, [&] { return cap - (tail - c_->head.load()) >= want; }, deadline)) {
        withdraw();
        return false;
      }
      const u64 n = std::min(record - done, cap - (tail - c_->head.load()));
      std::byte* dst = at(r, tail);
      for (u64 i = 0; i < n;) {  // header, then payload, then zero padding
        const u64 pos = done + i;
        u64 take;
        if (pos < frame_header_size) {
          take = std::min(n - i, frame_header_size - pos);
          std::memcpy(dst + i, reinterpret_cast<const std::byte*>(&h) + pos, take);
        } else if (pos - frame_header_size < payload.size()) {
          take = std::min(n - i, payload.size() - (pos - frame_header_size));
          std::memcpy(dst + i, payload.data() + (pos - frame_header_size), take);
        } else {
          take = n - i;
          std::memset(dst + i, 0, take);
        }
        i += take;
      }
      done += n;
      c_->tail.store(start + done);
      notify(c_->put_seq, c_->get_waiters);  // readers that slept on the drained ring
      if (done < record) take_stream_lock(c_->stream_current.load(std::memory_order_relaxed));
    }
    end_publish();
    c_->put_streaming.store(0);
    c_->stream_lock[c_->stream_current.load(std::memory_order_relaxed)].unlock();
    return true;
  }

  /// Gives up the item being streamed as if its writer had died: its stream lock goes
  /// free with no new byte, which tells a reader in the middle of it to drop it; with
  /// no reader at it, it is dropped here. Only if a reader holds get_lock now is it
  /// left half done, to that reader and the next writer (recover_writer).
  void withdraw() {
    c_->stream_lock[c_->stream_current.load(std::memory_order_relaxed)].unlock();
    (void)recover_writer(Deadline::no_wait());
  }

  /// Takes a stream lock that is neither held (the writer's) nor the one a reader
  /// waits on, then leaves held: a reader waiting on it wakes, and finds a new piece.
  /// The streaming writer always holds one.
  void take_stream_lock(u32 held) {
    const u32 waiter = c_->stream_waiter.load();
    u32 next = 0;
    while (next == held || next == waiter) ++next;
    (void)c_->stream_lock[next].lock();  // owner_died: a reader died holding it a moment
    c_->stream_current.store(next);
    if (held != no_stream_lock) c_->stream_lock[held].unlock();
  }

  /// The previous writer died holding put_lock (or gave up waiting here): undo or
  /// settle what it left. False if wait ran out first.
  bool recover_writer(Deadline wait) {
    if (c_->pending_end != 0) {
      const u64 tail = c_->tail.load();
      const bool showed = tail != c_->pending_start;
      if (showed) c_->put_count.store(c_->pending_count + 1);  // as end_publish would
      if (showed && tail < c_->pending_end) {
        // It died inside a streamed item: nothing may be written until the readers
        // are past it. With no live reader taking it, drop it here, as a reader would
        // (abandon(): a streamed item is alone in the ring); else that reader does.
        const u64 end = c_->pending_end;
        const auto passed = [&] { return c_->head.load() >= end; };
        if (const LockResult r = c_->get_lock.try_lock(); r != LockResult::timed_out) {
          RobustLock reader(c_->get_lock, std::adopt_lock);
          if (!passed()) {
            c_->tail.store(end);
            advance(end, c_->pending_count);
          }
          c_->skip_end = 0;  // a reader that died in it left it half taken
          c_->stream_abandoned.store(0);
        }
        if (!passed() && (wait.is_no_wait() || !wait_for(c_->get_seq, c_->put_waiters, passed, wait))) {
          return false;
        }
      }
      c_->pending_end = 0;
    }
    c_->put_streaming.store(0);
    notify(c_->put_seq, c_->get_waiters);  // it may have published and died before waking anyone
    return true;
  }

  // ---------------------------------------------------------------- reading

  bool readable() const noexcept { return c_->tail.load() != c_->head.load(); }

  std::optional<Taken> take(Deadline wait) {
    // A streamed item half taken by a reader also calls for the lock: if that reader
    // died after taking every byte there was, and then the writer died too, no byte
    // will ever come, and only a reader taking get_lock settles the item (drops it,
    // counting it taken) so that size() agrees with the Empty this get may raise.
    const auto ready = [this] { return readable() || c_->skip_end.load() != 0; };
    for (;;) {
      if (ready()) {
        RobustLock l = lock_reader(wait);
        if (!l) return std::nullopt;
        if (std::optional<Taken> t = next_item()) {
          t->lock = std::move(l);
          return t;
        }
      }
      if (wait.is_no_wait()) return std::nullopt;
      if (!wait_for(c_->put_seq, c_->get_waiters, ready, wait)) return std::nullopt;
    }
  }

  /// Moves head past consumed bytes (and, for an item, counts it first: see size())
  /// and wakes writers.
  void advance(u64 head, std::optional<u64> index) noexcept {
    if (index) {
      c_->get_count.store(*index + 1);
      fault_point("ring.counted");
    }
    c_->head.store(head);
    notify(c_->get_seq, c_->put_waiters);  // all: writers wait for different amounts
  }

  /// The next item, skipping padding and dropped streamed items; nothing if none is
  /// left. Called with get_lock held.
  std::optional<Taken> next_item() {
    for (;;) {
      const u64 head = c_->head.load(std::memory_order_relaxed);
      if (head == c_->tail.load()) return std::nullopt;
      const u32 r = enter_region(head);
      const FrameHeader h = parse_frame_header({at(r, head), frame_header_size});
      if (h.kind == FrameKind::padding) {
        advance(head + frame_header_size + h.size, std::nullopt);
        continue;
      }
      if (h.kind != FrameKind::message || h.flags != 0) {
        throw ProtocolError("mproc: Queue memory is corrupt (not a Queue item frame)");
      }
      const u64 record = record_size(static_cast<std::size_t>(h.size));
      Taken t;
      t.index = h.id;
      t.end = head + record;
      if (record > c_->region_size[r]) {
        std::optional<Bytes> copy = read_streamed(r, head, h);
        if (!copy) continue;  // its writer died in it
        t.copy = std::move(*copy);
        t.payload = t.copy.span();
        t.consumed = true;
      } else {
        t.payload = {at(r, head) + frame_header_size, static_cast<std::size_t>(h.size)};
      }
      return t;
    }
  }

  /// Copies a streamed item out as its writer puts it in, freeing ring space as it
  /// goes; nothing if its writer died in it (the item is dropped). Out of line: its
  /// set-up would otherwise cost every get (next_item) some instructions.
  [[gnu::noinline]] std::optional<Bytes> read_streamed(u32 r, u64 head, const FrameHeader& h) {
    c_->skip_index = h.id;
    c_->skip_end = head + record_size(static_cast<std::size_t>(h.size));
    Bytes out(static_cast<std::size_t>(h.size));
    const u64 payload_start = head + frame_header_size;
    const u64 payload_end = payload_start + h.size;
    const auto copy = [&](u64 from, u64 to) {  // ring positions; the header and padding stay behind
      const u64 a = std::max(from, payload_start);
      const u64 b = std::min(to, payload_end);
      if (a < b) std::memcpy(out.data() + (a - payload_start), at(r, a), b - a);
    };
    // Its bytes are being taken: the rest must follow, whatever the caller's deadline.
    if (drain_stream(copy, Deadline::forever()) != Drained::done) return std::nullopt;
    return out;
  }

  /// The previous reader died holding get_lock, or gave up skipping: drop the rest of
  /// the streamed item it was in. False if the deadline passed first (the rest is
  /// then left to the next reader).
  bool recover_reader(Deadline deadline) {
    if (c_->skip_end == 0) {
      c_->stream_abandoned.store(0);  // in case it died as it finished dropping one
      return true;
    }
    return drain_stream([](u64, u64) {}, deadline) != Drained::timed_out;
  }

  enum class Drained { done, dropped, timed_out };

  /// Consumes the streamed item that ends at skip_end from head on, passing each
  /// piece's ring positions [from, to) to copy as its writer puts them in.
  template <class Copy>
  Drained drain_stream(Copy copy, Deadline deadline) {
    const u64 end = c_->skip_end;
    for (u64 pos = c_->head.load(std::memory_order_relaxed); pos < end;) {
      if (c_->stream_abandoned.load() != 0) return abandon();
      if (c_->tail.load() == pos) {
        const std::optional<bool> alive = wait_stream(pos, deadline);
        if (!alive) return Drained::timed_out;
        if (!*alive) return abandon();
      }
      const u64 to = std::min(c_->tail.load(), end);
      copy(pos, to);
      pos = to;
      advance(pos, std::nullopt);
    }
    c_->get_count.store(c_->skip_index + 1);
    c_->skip_end = 0;
    return Drained::done;
  }

  /// Waits until the streaming writer has put bytes past pos (true), or has died
  /// (false); nothing if the deadline passed first. A live writer holds
  /// stream_lock[stream_current] and leaves it only after a piece or the last byte,
  /// so holding that lock while it is still the current one and no byte came means
  /// the writer is dead, whoever was the lock's last owner.
  std::optional<bool> wait_stream(u64 pos, Deadline deadline) {
    for (;;) {
      if (c_->tail.load() != pos) return true;
      const u32 current = c_->stream_current.load();
      c_->stream_waiter.store(current);  // first: from here on the writer leaves it to us
      if (c_->stream_current.load() != current || c_->tail.load() != pos) continue;
      RobustMutex& m = c_->stream_lock[current];
      const bool in_time = lock(m, deadline) != LockResult::timed_out;
      const bool dead = in_time && c_->stream_current.load() == current && c_->tail.load() == pos;
      if (dead) c_->stream_abandoned.store(1);  // before unlocking: a reader killed next leaves it said
      if (in_time) m.unlock();
      c_->stream_waiter.store(no_stream_lock);
      if (!in_time) return std::nullopt;
      if (dead) return false;
    }
  }

  /// Drops the streamed item being taken, whose writer died in it: readers move past
  /// it at once, and tail with them (the writer side waits for that, see
  /// recover_writer, and never writes its missing bytes).
  Drained abandon() noexcept {
    const u64 end = c_->skip_end;
    if (c_->head.load() < end) {  // else done already, by a reader killed before it cleared up
      c_->tail.store(end);
      advance(end, c_->skip_index);
    }
    c_->skip_end = 0;
    c_->stream_abandoned.store(0);
    return Drained::dropped;
  }

  void finish(Taken& t) noexcept {
    if (!t.consumed) advance(t.end, t.index);
    t.lock.unlock();
  }

  SharedMapping control_;
  Control* c_;
  Fd file_;  // the regions; inherited by every process forked while the queue lives
  // This process's mappings of the regions, and how many of the first ones it unmapped.
  std::array<std::atomic<std::byte*>, max_regions> views_{};
  std::atomic<u32> unmapped_below_{0};
};

}  // namespace mproc::detail
