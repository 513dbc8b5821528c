#pragma once
// mproc::Queue<T>: Python's multiprocessing.Queue. A multi-producer, multi-consumer
// FIFO shared by the process that makes it and every process forked after that
// (mproc::Process children, Pool workers through F's captures).
//
//   mproc::Queue<int> q;              // unbounded
//   mproc::Queue<int> bounded(100);   // put blocks while 100 items wait
//   q.put(1); int x = q.get();        // q.get(std::chrono::seconds(1)) throws mproc::Empty on timeout
//
// Items travel encoded (see codec.hpp) through a ring buffer in shared memory, not a
// pipe: put() needs no feeder thread to avoid blocking when nobody reads yet, and
// size() is exact whenever no put or get is under way. Each producer's items arrive
// in the order it put them; nothing is lost or duplicated, and a process that dies
// inside put() or get() does not hang the others. Any thread of any of these
// processes may put and get.
//
// The ring starts at 1 MiB and grows fourfold (or at once to what an item needs)
// whenever a put finds it full, up to ring_bytes (1 GiB by default). It takes twice
// its size in address space (what `ulimit -v` limits): 2 MiB at first, 2 GiB at the
// most (while it grows, the region it grows from stays mapped until the readers have
// left it). Memory is used as items are queued and given back when the queue
// empties (or, bounded, has room to spare). Only an unbounded queue that never
// empties keeps the pages it swept, up to the ring's size; Queue(0, ring_bytes)
// bounds that. An unbounded queue holds up to ring_bytes of encoded items (less if
// the ring cannot be mapped that big) before put() waits for readers (and
// put_nowait() throws Full). A single item bigger than that streams through the
// ring while a reader takes it: put() waits for one; put_nowait() throws Full at
// once, and put(item, timeout) throws Full if the item is not through in time (the
// queue is then as before: a consumer that had started taking it drops it).
//
// A consumer killed while it takes an item (decoding it, say) leaves the item to the
// next consumer, unless it was bigger than the ring: its bytes are gone, and it is
// dropped, as is such an item whose producer is killed midway.

#include <mproc/codec.hpp>
#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/shm/shared_ring.hpp>
#include <mproc/detail/wire/scratch.hpp>
#include <mproc/errors.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

namespace mproc {

template <class T>
class Queue {
 public:
  /// An unbounded queue.
  Queue() : Queue(0) {}
  /// A queue that holds at most maxsize items (0: unbounded). ring_bytes is the most
  /// the shared ring grows to (memory is used only as items are queued); under a
  /// file-size limit (RLIMIT_FSIZE, `ulimit -f`) at most what fits in it, since the
  /// ring is a file.
  explicit Queue(std::size_t maxsize, std::size_t ring_bytes = detail::SharedRing::default_capacity)
      : state_(std::make_shared<State>(maxsize, ring_bytes)) {
    require_sendable<T>();
  }
  /// Copies are handles to the same queue, so a lambda may capture one by value;
  /// like a shared_ptr, a const handle still puts and gets.
  Queue(const Queue&) = default;
  Queue& operator=(const Queue&) = default;
  Queue(Queue&&) noexcept = default;
  Queue& operator=(Queue&&) noexcept = default;
  ~Queue() = default;

  /// Adds item, waiting while the queue is full.
  void put(const T& item) const { put_with(item, detail::Deadline::forever(), "put"); }
  /// Adds item, waiting at most timeout for room (a negative one is zero, one too
  /// long for the clock is forever); throws Full if there was none. An item bigger
  /// than the ring must also have been taken by a reader within timeout.
  template <class Rep, class Period>
  void put(const T& item, std::chrono::duration<Rep, Period> timeout) const {
    put_with(item, detail::Deadline::after(timeout), "put");
  }
  /// Adds item if there is room now; throws Full otherwise (always for an item bigger
  /// than the ring). Never waits for a reader (it may wait out another producer's
  /// copy of an item into the ring).
  void put_nowait(const T& item) const { put_with(item, detail::Deadline::no_wait(), "put_nowait"); }

  /// Removes and returns the oldest item, waiting for one.
  T get() const { return get_with(detail::Deadline::forever(), "get"); }
  /// Removes and returns the oldest item, waiting at most timeout (as for put); throws
  /// Empty if none came.
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) const {
    return get_with(detail::Deadline::after(timeout), "get");
  }
  /// Removes and returns the oldest item if there is one now; throws Empty otherwise,
  /// also while another consumer is taking one, as Python's does.
  T get_nowait() const { return get_with(detail::Deadline::no_wait(), "get_nowait"); }

  /// The number of items in the queue (Python's qsize()). Exact when no put or get
  /// is in progress in any process; after one killed midway, from the next put or
  /// get on.
  std::size_t size() const noexcept { return state_->ring.size(); }
  /// Whether the queue holds no items.
  bool empty() const noexcept { return size() == 0; }
  /// Whether a bounded queue holds maxsize items (always false when unbounded).
  bool full() const noexcept { return maxsize() != 0 && size() >= maxsize(); }
  /// The bound given at construction; 0 means unbounded.
  std::size_t maxsize() const noexcept { return state_->ring.maxsize(); }

  /// Python's close(): this process will use the queue no more. Afterwards put and
  /// get through any copy of this Queue in this process throw ValueError. Other
  /// processes are unaffected and items already put stay for them; the shared memory
  /// goes when the last process that holds the queue drops it.
  void close() const noexcept { state_->closed.store(true); }
  /// Whether close() was called in this process.
  bool closed() const noexcept { return state_->closed.load(); }

 private:
  struct State {
    State(std::size_t maxsize, std::size_t ring_bytes) : ring(maxsize, ring_bytes) {}
    detail::SharedRing ring;
    std::atomic<bool> closed{false};  // per process: the State is copied by fork
  };

  void check_open(const char* what) const {
    if (closed()) throw ValueError(std::string("mproc: Queue.") + what + ": the queue is closed in this process");
  }

  void put_with(const T& item, detail::Deadline wait, const char* what) const {
    check_open(what);
    detail::ScratchBytes scratch;
    encode_into(scratch.get(), item);
    if (!state_->ring.put(scratch.get().span(), wait)) {
      throw Full(std::string("mproc: Queue.") + what + ": the queue is full" +
                 (wait.is_no_wait() ? "" : " (timed out waiting for room)"));
    }
  }

  T get_with(detail::Deadline wait, const char* what) const {
    check_open(what);
    std::optional<T> out;
    const bool got = state_->ring.get(wait, [&](std::span<const std::byte> bytes) { out.emplace(decode<T>(bytes)); });
    if (!got) {
      throw Empty(std::string("mproc: Queue.") + what + ": the queue is empty" +
                  (wait.is_no_wait() ? "" : " (timed out waiting for an item)"));
    }
    return std::move(*out);
  }

  std::shared_ptr<State> state_;
};

}  // namespace mproc
