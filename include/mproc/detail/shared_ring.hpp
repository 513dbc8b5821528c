#pragma once
// SharedRing: the byte-level engine under mproc::Queue. A ring buffer in shared
// memory (MirrorMapping) that carries frames (a 24-byte FrameHeader and a payload)
// between any number of writer and reader processes forked after it was made.
//
// - One writer at a time holds put_lock while it copies one frame in; one reader at
//   a time holds get_lock while it takes one frame out. Both are robust mutexes: a
//   holder that dies is repaired by the next one (see recover_writer/recover_reader).
// - Nobody waits while holding a lock (except inside an item bigger than the whole
//   ring, which streams through in pieces). Waiting is on futex words, so a waiter
//   that is killed leaves nothing behind.
// - head and tail are byte positions that only grow; a frame is published by one
//   store to tail after its bytes are in place, so readers never see half a frame.
// - The ring is reserved, not committed (1 GiB by default): pages cost memory once
//   written. To keep that to what is really in use, a writer that finds the queue
//   empty past the first 256 KiB of the lap jumps back to its start (a padding frame
//   that it consumes itself) and returns the pages beyond to the system. A queue
//   that never empties keeps the pages it has swept (up to the ring's size) unless
//   it is bounded, when the jump is also taken whenever maxsize items still fit.

#include <mproc/detail/bytes.hpp>
#include <mproc/detail/frame.hpp>
#include <mproc/detail/futex.hpp>
#include <mproc/detail/mirror_mapping.hpp>
#include <mproc/detail/robust_mutex.hpp>
#include <mproc/detail/shared_mapping.hpp>
#include <mproc/errors.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <utility>

namespace mproc::detail {

/// How long a blocking call may wait: not at all, until a deadline, or forever.
struct WaitSpec {
  bool block = true;
  std::optional<std::chrono::steady_clock::time_point> deadline;

  static WaitSpec forever() noexcept { return {}; }
  static WaitSpec no_wait() noexcept { return {false, std::nullopt}; }
  template <class Rep, class Period>
  static WaitSpec within(std::chrono::duration<Rep, Period> timeout) {
    const auto now = std::chrono::steady_clock::now();
    const auto ns = std::chrono::ceil<std::chrono::nanoseconds>(timeout);
    // Clamp so that a huge timeout cannot overflow the clock.
    const auto limit = std::chrono::steady_clock::time_point::max() - now;
    return {true, ns >= limit ? std::chrono::steady_clock::time_point::max() : now + ns};
  }
};

/// Unlocks a RobustMutex on scope exit (if it holds one).
class RingLock {
 public:
  RingLock() = default;
  explicit RingLock(RobustMutex& m) noexcept : m_(&m) {}
  RingLock(RingLock&& other) noexcept : m_(std::exchange(other.m_, nullptr)) {}
  RingLock& operator=(RingLock&& other) noexcept {
    if (this != &other) {
      unlock();
      m_ = std::exchange(other.m_, nullptr);
    }
    return *this;
  }
  RingLock(const RingLock&) = delete;
  RingLock& operator=(const RingLock&) = delete;
  ~RingLock() { unlock(); }
  explicit operator bool() const noexcept { return m_ != nullptr; }
  void unlock() noexcept {
    if (m_ != nullptr) std::exchange(m_, nullptr)->unlock();
  }

 private:
  RobustMutex* m_ = nullptr;
};

class SharedRing {
 public:
  /// Reserved ring size when none is given; physical memory follows actual use.
  static constexpr std::size_t default_capacity = std::size_t{1} << 30;

  /// maxsize bounds the number of items (0: unbounded); capacity is the ring's size
  /// in bytes, rounded up to a power of two of at least one page.
  SharedRing(std::size_t maxsize, std::size_t capacity)
      : control_(sizeof(Control)),
        c_(new (control_.data()) Control(maxsize, ring_size(capacity))),
        ring_(c_->capacity) {}
  SharedRing(const SharedRing&) = delete;
  SharedRing& operator=(const SharedRing&) = delete;

  /// Copies one item in. Returns false if wait ran out first (no room: maxsize items
  /// queued, or the ring full). An item larger than the whole ring streams through
  /// it once the ring is empty and then waits for readers regardless of wait.
  bool put(std::span<const std::byte> payload, const WaitSpec& wait) {
    const std::uint64_t record = record_size(payload.size());
    const std::uint64_t room = std::min<std::uint64_t>(record, c_->capacity);
    const auto has_room = [&] { return room_for(room); };
    RingLock lock;
    for (;;) {
      if (has_room()) {
        lock = lock_writer(wait);
        if (!lock) return false;
        if (has_room()) break;
        lock.unlock();
      }
      if (!wait.block) return false;
      if (!wait_for(c_->get_seq, c_->put_waiters, has_room, wait.deadline)) return false;
    }
    if (record <= c_->capacity) write_record(payload, record);
    else stream_record(payload, record);
    return true;
  }

  /// Takes the oldest item: calls consume(payload) with its bytes and then removes
  /// it, even if consume throws (a poisoned item must not block the queue). Returns
  /// false if wait ran out before an item was there.
  template <class Consume>
  bool get(const WaitSpec& wait, Consume&& consume) {
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

  /// Items put and not yet taken (exact when no put or get is under way).
  std::size_t size() const noexcept {
    const std::uint64_t got = c_->get_count.load();
    const std::uint64_t put = c_->put_count.load();
    return put > got ? static_cast<std::size_t>(put - got) : 0;
  }
  std::size_t maxsize() const noexcept { return static_cast<std::size_t>(c_->maxsize); }
  std::size_t capacity() const noexcept { return static_cast<std::size_t>(c_->capacity); }

 private:
  using u64 = std::uint64_t;
  using u32 = std::uint32_t;
  static_assert(std::atomic<u64>::is_always_lock_free, "SharedRing needs address-free 64-bit atomics");

  // Jumping back to the lap's start only pays when the ring is much bigger than this.
  static constexpr u64 hot_bytes = u64{256} << 10;
  // Pages past the jump point are returned once at least this much can go.
  static constexpr u64 release_bytes = u64{1} << 20;

  struct Control {
    Control(std::size_t max, u64 cap) : capacity(cap), maxsize(max) {}
    RobustMutex put_lock;
    RobustMutex get_lock;
    const u64 capacity;
    const u64 maxsize;

    // Writer side.
    alignas(64) std::atomic<u64> tail{0};  // bytes published
    std::atomic<u64> put_count{0};         // items published (or being streamed)
    std::atomic<u32> put_seq{0};           // futex: bumped after tail moves
    std::atomic<u32> get_waiters{0};       // sleepers on put_seq
    std::atomic<u32> put_streaming{0};     // a writer is inside an item bigger than the ring
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
    std::atomic<u32> get_streaming{0};     // a reader is inside an item bigger than the ring
    std::atomic<u64> broken{0};            // 1 + index of an item whose writer died in it
    // Under get_lock: the rest of a streamed item a reader died in.
    u64 skip_end = 0;
    u64 skip_index = 0;
  };

  /// An item being taken: its payload (in the ring, or copied out of a streamed
  /// item), and where the reader's head goes once it is consumed.
  struct Taken {
    std::span<const std::byte> payload;
    Bytes copy;
    u64 index = 0;
    u64 end = 0;
    bool consumed = false;  // head already moved past it (streamed items)
    RingLock lock;
  };

  static u64 ring_size(std::size_t requested) {
    const u64 at_least = std::max<u64>(requested, page_size());
    if (at_least > (u64{1} << 46)) throw ValueError("mproc: Queue ring capacity too large");
    return std::bit_ceil(at_least);
  }
  static constexpr u64 record_size(std::size_t payload) noexcept {
    return (frame_header_size + payload + 7) / 8 * 8;
  }
  std::byte* at(u64 position) const noexcept { return ring_.data() + (position & (c_->capacity - 1)); }

  bool room_for(u64 bytes) const noexcept {
    if (c_->maxsize != 0 && c_->put_count.load() - c_->get_count.load() >= c_->maxsize) return false;
    return c_->capacity - (c_->tail.load() - c_->head.load()) >= bytes;
  }

  /// Sleeps on seq (counted in waiters) until ready() or the deadline.
  template <class Ready>
  static bool wait_for(std::atomic<u32>& seq, std::atomic<u32>& waiters, Ready ready,
                       std::optional<std::chrono::steady_clock::time_point> deadline) {
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
  static void notify(std::atomic<u32>& seq, std::atomic<u32>& waiters, int n) noexcept {
    seq.fetch_add(1);
    if (waiters.load() != 0) futex_wake(seq, n);
  }

  RingLock lock(RobustMutex& m, const std::atomic<u32>& streaming, const WaitSpec& wait, bool& owner_died) {
    // put_nowait/get_nowait never wait out another process's giant streamed item.
    if (!wait.block && streaming.load() != 0) return {};
    const LockResult r = wait.deadline ? m.lock_until(*wait.deadline) : m.lock();
    if (r == LockResult::timed_out) return {};
    owner_died = r == LockResult::owner_died;
    return RingLock(m);
  }
  RingLock lock_writer(const WaitSpec& wait) {
    bool died = false;
    RingLock l = lock(c_->put_lock, c_->put_streaming, wait, died);
    if (died) recover_writer();
    return l;
  }
  RingLock lock_reader(const WaitSpec& wait) {
    bool died = false;
    RingLock l = lock(c_->get_lock, c_->get_streaming, wait, died);
    if (died) recover_reader();
    return l;
  }

  // ---------------------------------------------------------------- writing

  void write_header(u64 position, FrameKind kind, u64 id, u64 size) const noexcept {
    const FrameHeader h = make_frame_header(kind, id, size);
    std::memcpy(at(position), &h, frame_header_size);
  }

  /// Records the publish about to happen, so that a writer dying in it can be repaired.
  void begin_publish(u64 start, u64 end, u64 count) noexcept {
    c_->pending_start = start;
    c_->pending_count = count;
    c_->pending_end = end;
    std::atomic_signal_fence(std::memory_order_seq_cst);  // in this order even if killed
    c_->put_count.store(count + 1);
  }
  void end_publish() noexcept {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    c_->pending_end = 0;
  }

  /// Whether a writer at offset should continue at the lap's start, so the pages in
  /// use stay few. Never at the cost of room: on an empty queue the writer consumes
  /// the padding itself (jump()); otherwise only a bounded queue jumps, and only if
  /// maxsize items of the largest size seen still fit before the readers' position.
  bool should_jump(u64 offset, u64 used, u64 record) const noexcept {
    const u64 cap = c_->capacity;
    if (cap < 4 * hot_bytes || offset < hot_bytes || cap - offset < frame_header_size) return false;
    if (used == 0) return true;
    return c_->maxsize != 0 && offset >= 2 * used && offset - used >= record &&
           (offset - used - record) / c_->maxsize >= c_->max_record;
  }

  /// Writes a padding frame from tail to the lap's end and returns the lap's start.
  /// When the queue is empty and no reader is busy, moves the readers past it too.
  u64 jump(u64 tail, u64 offset) {
    const u64 cap = c_->capacity;
    const u64 next = tail + (cap - offset);
    write_header(tail, FrameKind::padding, 0, cap - offset - frame_header_size);
    if (c_->high_water >= offset + frame_header_size + release_bytes) {
      ring_.release(offset + frame_header_size, c_->high_water - offset - frame_header_size);
    }
    c_->high_water = offset + frame_header_size;
    if (c_->head.load() == tail) {
      // Publish the padding alone, then consume it as a reader would: a writer
      // killed in between leaves a well-formed ring either way.
      const LockResult r = c_->get_lock.try_lock();
      if (r != LockResult::timed_out) {
        RingLock reader(c_->get_lock);
        if (r == LockResult::owner_died) recover_reader();  // cannot wait: nothing is queued
        if (c_->head.load() == tail) {
          c_->tail.store(next);
          c_->head.store(next);
        }
      }
    }
    return next;
  }

  void write_record(std::span<const std::byte> payload, u64 record) {
    const u64 cap = c_->capacity;
    const u64 tail = c_->tail.load(std::memory_order_relaxed);  // only the lock holder moves it
    const u64 offset = tail & (cap - 1);
    const u64 start = should_jump(offset, tail - c_->head.load(), record) ? jump(tail, offset) : tail;
    c_->max_record = std::max(c_->max_record, record);
    const u64 index = c_->put_count.load(std::memory_order_relaxed);
    write_header(start, FrameKind::message, index, payload.size());
    if (!payload.empty()) std::memcpy(at(start) + frame_header_size, payload.data(), payload.size());
    c_->high_water = std::max(c_->high_water, std::min(cap, (start & (cap - 1)) + record));
    const u64 published = c_->tail.load(std::memory_order_relaxed);  // past the padding if jump() consumed it
    begin_publish(published, start + record, index);
    c_->tail.store(start + record);
    end_publish();
    // Readers sleep only on an empty queue, so only a publish onto a drained queue
    // needs to wake one (checked after the store: a reader draining meanwhile is
    // seen). Each reader that leaves items behind wakes the next (finish()).
    c_->put_seq.fetch_add(1);
    if (c_->get_waiters.load() != 0 && c_->head.load() == published) futex_wake(c_->put_seq, 1);
  }

  /// Writes total bytes from start on, piece by piece as readers make room; fill(dst,
  /// from, n) supplies bytes [from, from + n) of what is written. No deadline: once
  /// part of an item is visible, the rest must follow.
  template <class Fill>
  void stream_out(u64 start, u64 total, Fill fill) {
    const u64 cap = c_->capacity;
    c_->high_water = cap;
    for (u64 done = 0; done < total;) {
      const u64 tail = start + done;
      // Wait for a good share of the ring, not every free byte, to keep wake-ups few.
      const u64 want = std::min(total - done, cap / 2);
      wait_for(c_->get_seq, c_->put_waiters, [&] { return cap - (tail - c_->head.load()) >= want; }, std::nullopt);
      const u64 n = std::min(total - done, cap - (tail - c_->head.load()));
      fill(at(tail), done, n);
      done += n;
      c_->tail.store(start + done);
      notify(c_->put_seq, c_->get_waiters, INT_MAX);  // the streaming reader among them
    }
  }

  void stream_record(std::span<const std::byte> payload, u64 record) {
    c_->put_streaming.store(1);
    const u64 start = c_->tail.load(std::memory_order_relaxed);
    const u64 index = c_->put_count.load(std::memory_order_relaxed);
    const FrameHeader h = make_frame_header(FrameKind::message, index, payload.size());
    begin_publish(start, start + record, index);
    // The ring is empty here (room_for(capacity)), so the first piece holds the header.
    stream_out(start, record, [&](std::byte* dst, u64 from, u64 n) {
      for (u64 i = 0; i < n;) {  // header, then payload, then zero padding
        const u64 pos = from + i;
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
    });
    end_publish();
    c_->put_streaming.store(0);
  }

  /// The previous writer died holding put_lock: undo or complete what it left.
  void recover_writer() {
    if (c_->pending_end != 0) {
      const u64 tail = c_->tail.load();
      if (tail == c_->pending_start) {
        c_->put_count.store(c_->pending_count);  // nothing of its item became visible
      } else if (tail < c_->pending_end) {
        // It died inside a streamed item: readers drop it; fill in its missing bytes.
        c_->broken.store(c_->pending_count + 1);
        stream_out(tail, c_->pending_end - tail,
                   [](std::byte* dst, u64, u64 n) { std::memset(dst, 0, n); });
      }
      c_->pending_end = 0;
    }
    c_->put_streaming.store(0);
  }

  // ---------------------------------------------------------------- reading

  bool readable() const noexcept { return c_->tail.load() != c_->head.load(); }

  std::optional<Taken> take(const WaitSpec& wait) {
    const auto ready = [this] { return readable(); };
    for (;;) {
      if (ready()) {
        RingLock l = lock_reader(wait);
        if (!l) return std::nullopt;
        if (std::optional<Taken> t = next_item()) {
          t->lock = std::move(l);
          return t;
        }
      }
      if (!wait.block) return std::nullopt;
      if (!wait_for(c_->put_seq, c_->get_waiters, ready, wait.deadline)) return std::nullopt;
    }
  }

  /// Moves head past consumed bytes (and, for an item, counts it) and wakes writers.
  void advance(u64 head, std::optional<u64> index) noexcept {
    c_->head.store(head);
    if (index) c_->get_count.store(*index + 1);
    notify(c_->get_seq, c_->put_waiters, INT_MAX);  // writers wait for different amounts
  }

  /// The next item, skipping padding and broken items; nothing if none is left.
  /// Called with get_lock held.
  std::optional<Taken> next_item() {
    for (;;) {
      const u64 head = c_->head.load(std::memory_order_relaxed);
      if (head == c_->tail.load()) return std::nullopt;
      const FrameHeader h = parse_frame_header({at(head), frame_header_size});
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
      if (record > c_->capacity) {
        t.copy = read_streamed(head, h);
        t.payload = t.copy.span();
        t.consumed = true;
      } else {
        t.payload = {at(head) + frame_header_size, static_cast<std::size_t>(h.size)};
      }
      if (c_->broken.load() == h.id + 1) {  // its writer died in it
        c_->broken.store(0);
        if (!t.consumed) advance(t.end, t.index);
        continue;
      }
      return t;
    }
  }

  /// Copies a streamed item out as its writer puts it in, freeing ring space as it goes.
  Bytes read_streamed(u64 head, const FrameHeader& h) {
    c_->get_streaming.store(1);
    const u64 end = head + record_size(static_cast<std::size_t>(h.size));
    c_->skip_index = h.id;
    c_->skip_end = end;
    Bytes out(static_cast<std::size_t>(h.size));
    const u64 payload_start = head + frame_header_size;
    u64 pos = payload_start;
    advance(pos, std::nullopt);
    while (pos < end) {
      wait_for(c_->put_seq, c_->get_waiters, [&] { return c_->tail.load() != pos; }, std::nullopt);
      const u64 n = std::min(c_->tail.load(), end) - pos;
      const u64 from = pos - payload_start;
      if (from < h.size) std::memcpy(out.data() + from, at(pos), std::min(n, h.size - from));
      pos += n;
      advance(pos, std::nullopt);
    }
    c_->get_count.store(h.id + 1);
    c_->skip_end = 0;
    c_->get_streaming.store(0);
    return out;
  }

  /// The previous reader died holding get_lock: drop the rest of its streamed item.
  void recover_reader() {
    if (c_->skip_end != 0) {
      u64 pos = c_->head.load();
      while (pos < c_->skip_end) {
        wait_for(c_->put_seq, c_->get_waiters, [&] { return c_->tail.load() != pos; }, std::nullopt);
        pos = std::min(c_->tail.load(), c_->skip_end);
        advance(pos, std::nullopt);
      }
      c_->get_count.store(c_->skip_index + 1);
      if (c_->broken.load() == c_->skip_index + 1) c_->broken.store(0);
      c_->skip_end = 0;
    }
    c_->get_streaming.store(0);
  }

  void finish(Taken& t) noexcept {
    if (!t.consumed) advance(t.end, t.index);
    // Pass the baton: more items and sleepers, so one more reader need not wait for a put.
    if (readable() && c_->get_waiters.load() != 0) futex_wake(c_->put_seq, 1);
    t.lock.unlock();
  }

  SharedMapping control_;
  Control* c_;
  MirrorMapping ring_;
};

}  // namespace mproc::detail
