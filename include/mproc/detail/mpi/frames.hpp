#pragma once
// Frames over MPI: every message of a pool's communicator is one mproc frame (the
// 24-byte header, then the payload) in one MPI message of bytes, or, past
// max_piece bytes (MPI counts are ints), in pieces: the first on tag_frame, the rest
// right after it on tag_piece from the same sender. The receiver learns the size
// from a matched probe, so nothing is sized in advance.

#include <mproc/detail/mpi/env.hpp>
#include <mproc/detail/mpi/wait.hpp>
#include <mproc/detail/wire/bytes.hpp>
#include <mproc/detail/wire/frame.hpp>
#include <mproc/errors.hpp>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <span>
#include <vector>

namespace mproc::detail {

inline constexpr int mpi_tag_frame = 1;  // a frame, or its first piece
inline constexpr int mpi_tag_piece = 2;  // the next piece of the frame before it
/// The biggest MPI message a frame is sent in.
inline constexpr std::size_t mpi_max_piece = std::size_t{1} << 30;
static_assert(mpi_max_piece <= INT_MAX);

/// Calls send(data, count, tag) for each piece of a frame (header and payload,
/// back to back in `message`), in order.
template <class Send>
void for_each_piece(std::span<const std::byte> message, std::size_t piece, Send&& send) {
  std::size_t at = 0;
  do {
    const std::size_t n = std::min(piece, message.size() - at);
    send(message.data() + at, static_cast<int>(n), at == 0 ? mpi_tag_frame : mpi_tag_piece);
    at += n;
  } while (at < message.size());
}

/// Starts sending a frame; its requests are appended to `requests`, and `message`
/// must stay alive and unchanged until they complete.
inline void isend_frame(MPI_Comm comm, int dest, std::span<const std::byte> message, std::vector<MPI_Request>& requests,
                        std::size_t piece = mpi_max_piece) {
  for_each_piece(message, piece, [&](const std::byte* data, int n, int tag) {
    requests.emplace_back();
    check_mpi(MPI_Isend(data, n, MPI_BYTE, dest, tag, comm, &requests.back()), "MPI_Isend");
  });
}

/// Sends a frame and returns when its buffer may be reused (waiting for a big one to
/// be taken without spinning: mpi/wait.hpp).
inline void send_frame(MPI_Comm comm, int dest, std::span<const std::byte> message, std::size_t piece = mpi_max_piece) {
  std::vector<MPI_Request> requests;
  isend_frame(comm, dest, message, requests, piece);
  mpi_wait_all(requests);
}

/// Receives the frame whose first piece a matched probe found (`message`, `status`)
/// into buffer, with its remaining pieces. The view points into buffer. Throws
/// ProtocolError for bytes that are not a well-formed frame.
inline FrameView receive_frame(MPI_Comm comm, MPI_Message& message, const MPI_Status& status, Bytes& buffer,
                               std::size_t piece = mpi_max_piece) {
  int count = 0;
  check_mpi(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
  if (count < 0) throw ProtocolError("mproc: an MPI message of unknown size");
  buffer.resize(static_cast<std::size_t>(count));
  check_mpi(MPI_Mrecv(buffer.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE), "MPI_Mrecv");
  const FrameHeader header = parse_frame_header(buffer.span());
  if ((header.flags & frame_flag_in_lane) != 0) throw ProtocolError("mproc: an MPI frame claims a shared-memory lane");
  const std::size_t total = frame_header_size + static_cast<std::size_t>(header.size);
  if (buffer.size() != std::min(total, piece)) {
    throw ProtocolError("mproc: an MPI frame's first piece does not match its header's size");
  }
  buffer.resize(total);
  for (std::size_t got = static_cast<std::size_t>(count); got < total;) {
    const int n = static_cast<int>(std::min(piece, total - got));
    MPI_Status st;
    check_mpi(MPI_Recv(buffer.data() + got, n, MPI_BYTE, status.MPI_SOURCE, mpi_tag_piece, comm, &st), "MPI_Recv");
    int received = 0;
    check_mpi(MPI_Get_count(&st, MPI_BYTE, &received), "MPI_Get_count");
    if (received != n) throw ProtocolError("mproc: an MPI frame's piece has the wrong size");
    got += static_cast<std::size_t>(n);
  }
  return FrameView{header, {buffer.data() + frame_header_size, static_cast<std::size_t>(header.size)}};
}

/// A frame with no payload, as one message (ready, stop).
inline void send_empty_frame(MPI_Comm comm, int dest, FrameKind kind, std::uint64_t id = 0) {
  const FrameHeader header = make_frame_header(kind, id, 0);
  send_frame(comm, dest, {reinterpret_cast<const std::byte*>(&header), frame_header_size});
}

}  // namespace mproc::detail
