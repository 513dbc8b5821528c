#pragma once
// Frames: the one envelope every message between mproc processes travels in (pool
// tasks and results, Queue and Pipe messages, MPI messages). A fixed 24-byte header
// (magic, kind, id, payload size) and the payload. Parsing validates every field.

#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/errors.hpp>

#include <sys/uio.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>

namespace mproc::detail {

enum class FrameKind : std::uint8_t {
  task = 1,         // parent -> worker: a chunk of encoded arguments
  result = 2,       // worker -> parent: the chunk's outcomes
  ready = 3,        // worker -> parent: the initializer ran, tasks may come
  init_failed = 4,  // worker -> parent: the initializer threw (payload: type, message)
  message = 5,      // one Queue or Pipe item
  stop = 6,         // end of a stream (a worker leaves once it ran what came before; an MPI rank's release)
  padding = 7,      // filler in a Queue's ring: the reader skips to the end of the lap
  started = 8,      // worker -> parent: it started a chunk, as the parent asked (WorkerSlot::watch)
};
inline constexpr std::uint8_t max_frame_kind = 8;

inline constexpr std::uint32_t frame_magic = 0x4352504d;  // "MPRC" in memory order
/// A payload bigger than this is certainly a corrupt header, not a real message.
inline constexpr std::uint64_t max_frame_payload = std::uint64_t{1} << 40;

/// Header flag: the payload is not in the stream but in a shared-memory lane
/// (lane.hpp); `size` is still its length.
inline constexpr std::uint8_t frame_flag_in_lane = 0x1;
/// Header flag on a worker's outcome: it exits after this one (memory limit).
inline constexpr std::uint8_t frame_flag_retiring = 0x2;

struct FrameHeader {
  std::uint32_t magic = frame_magic;
  FrameKind kind{};
  std::uint8_t flags = 0;
  std::uint16_t reserved = 0;
  std::uint64_t id = 0;
  std::uint64_t size = 0;
};
static_assert(sizeof(FrameHeader) == 24);
inline constexpr std::size_t frame_header_size = sizeof(FrameHeader);

/// How many payload bytes follow the header in the stream itself.
inline std::size_t inline_payload_size(const FrameHeader& h) noexcept {
  return (h.flags & frame_flag_in_lane) != 0 ? 0 : static_cast<std::size_t>(h.size);
}

/// Validates a header read from untrusted bytes.
inline FrameHeader parse_frame_header(std::span<const std::byte> bytes) {
  if (bytes.size() < frame_header_size) throw ProtocolError("mproc: truncated frame header");
  FrameHeader h;
  std::memcpy(&h, bytes.data(), frame_header_size);
  if (h.magic != frame_magic) throw ProtocolError("mproc: bad frame magic (not an mproc stream)");
  const auto kind = static_cast<std::uint8_t>(h.kind);
  if (kind == 0 || kind > max_frame_kind) {
    throw ProtocolError("mproc: unknown frame kind " + std::to_string(kind));
  }
  if (h.reserved != 0) throw ProtocolError("mproc: frame header reserved field is not zero");
  if (h.size > max_frame_payload) {
    throw ProtocolError("mproc: frame payload size " + std::to_string(h.size) + " is beyond any real message");
  }
  return h;
}

inline FrameHeader make_frame_header(FrameKind kind, std::uint64_t id, std::uint64_t size, std::uint8_t flags = 0) {
  FrameHeader h;
  h.kind = kind;
  h.flags = flags;
  h.id = id;
  h.size = size;
  return h;
}

/// A complete frame: its header and a view of its payload (empty if the payload is
/// in a lane).
struct FrameView {
  FrameHeader header;
  std::span<const std::byte> payload;
};

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
/// Usage: fill the space from prepare(), commit() what was read, then take next()
/// frames until it returns nothing, and release() each before asking again.
class FrameAssembler {
 public:
  /// Space for the next read: at least min_read bytes, and the rest of a frame whose
  /// header is known, so a large payload lands in place without regrowing. The size
  /// in a header is not trusted with memory: beyond max_prealloc, room grows only as
  /// fast as the payload actually arrives (a corrupt size that the stream never
  /// backs is a ProtocolError at its end, not a huge allocation first).
  std::span<std::byte> prepare(std::size_t min_read = 64 * 1024) {
    std::size_t want = min_read;
    if (has_pending_) {
      const auto frame_end = frame_header_size + inline_payload_size(pending_);
      if (frame_end > unread()) want = std::max(want, std::min(frame_end - unread(), std::max(unread(), max_prealloc)));
    }
    buf_.reserve_more(want);
    return {buf_.data() + buf_.size(), want};
  }
  void commit(std::size_t n) { buf_.resize(buf_.size() + n); }

  /// Whether a whole frame is buffered. Throws ProtocolError on a bad header.
  bool has_frame() {
    const std::size_t avail = unread();
    if (avail < frame_header_size) return false;
    if (!has_pending_) {
      pending_ = parse_frame_header({buf_.data() + start_, avail});
      has_pending_ = true;
    }
    return avail - frame_header_size >= inline_payload_size(pending_);
  }

  /// The next complete frame, or nothing if more bytes are needed. Throws
  /// ProtocolError on a bad header.
  std::optional<FrameView> next() {
    if (!has_frame()) return std::nullopt;
    const std::size_t size = inline_payload_size(pending_);
    FrameView frame{pending_, {buf_.data() + start_ + frame_header_size, size}};
    start_ += frame_header_size + size;
    has_pending_ = false;
    return frame;
  }
  /// Drops the frames already taken (their views become invalid). What is left moves
  /// to the front only once the frames taken outweigh it, so a reader that takes many
  /// small frames from one big read copies each byte about once, not once per frame.
  void release() {
    if (start_ == buf_.size()) {
      buf_.clear();
      start_ = 0;
    } else if (start_ >= unread()) {
      buf_.consume_front(start_);
      start_ = 0;
    }
  }
  /// Bytes received that do not yet form a whole frame.
  std::size_t unread() const noexcept { return buf_.size() - start_; }
  /// Drops the bytes of a frame that can never be whole (its stream ended).
  void drop_unread() noexcept {
    buf_.clear();
    start_ = 0;
    has_pending_ = false;
  }

 private:
  static constexpr std::size_t max_prealloc = std::size_t{4} << 20;

  Bytes buf_;
  std::size_t start_ = 0;
  // The parsed header of the frame at start_ (a plain member and a flag rather than
  // an optional, which g++ 12 misreads as maybe-uninitialised once inlined).
  FrameHeader pending_{};
  bool has_pending_ = false;
};

/// Reads frames from a blocking descriptor.
class FrameReader {
 public:
  explicit FrameReader(int fd) noexcept : fd_(fd) {}

  /// The next frame, or nothing at end of file. A stream that ends inside a frame is a
  /// ProtocolError, once: its bytes are dropped, and the next call finds the end of
  /// file (as Python's recv raises EOFError once no whole message remains). The view
  /// stays valid until the next call.
  std::optional<FrameView> read() {
    assembler_.release();
    for (;;) {
      if (auto frame = assembler_.next()) return frame;
      const auto space = assembler_.prepare();
      const ssize_t n = read_some(fd_, space.data(), space.size());
      if (n == 0) {
        if (assembler_.unread() != 0) {
          assembler_.drop_unread();
          throw ProtocolError("mproc: stream ended inside a frame");
        }
        return std::nullopt;
      }
      if (n < 0) throw OSError("read (descriptor is non-blocking)", EAGAIN);
      assembler_.commit(static_cast<std::size_t>(n));
    }
  }
  /// Whether a whole frame is already buffered, so read() will not block.
  bool has_buffered_frame() { return assembler_.has_frame(); }

 private:
  int fd_;
  FrameAssembler assembler_;
};

/// Writes one frame to a blocking descriptor with a single writev where possible.
/// Returns false if the reader is gone.
inline bool write_frame(int fd, const FrameHeader& header, std::span<const std::byte> payload) {
  iovec iov[2] = {{const_cast<FrameHeader*>(&header), frame_header_size},
                  {const_cast<std::byte*>(payload.data()), payload.size()}};
  std::size_t total = frame_header_size + payload.size();
  int first = 0;
  while (total > 0) {
    const ssize_t w = ::writev(fd, iov + first, 2 - first);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE) return false;
      throw OSError("writev", errno);
    }
    auto done = static_cast<std::size_t>(w);
    total -= done;
    while (first < 2 && done >= iov[first].iov_len) {
      done -= iov[first].iov_len;
      ++first;
    }
    if (first < 2) {
      iov[first].iov_base = static_cast<std::byte*>(iov[first].iov_base) + done;
      iov[first].iov_len -= done;
    }
  }
  return true;
}

}  // namespace mproc::detail
