// Mistakes after which some rank would wait for the others forever: the job must
// end with mproc's message instead of hanging. One per argument; the ctests expect
// a failing exit and the message.
//
//   open_pool      every rank makes a second pool while the master's first is open
//   type_mismatch  the serving ranks make a pool of another F than the master's
//   bad_frame      a serving rank gets a frame that is not a task (a throw escaping
//                  serve_tasks, as a bad_alloc or an MPI error would)
#include <mproc/mpi.hpp>

#include <cstdio>
#include <cstring>
#include <functional>

namespace {

long square(int x) { return long{x} * x; }

void open_pool() {
  mproc::mpi::Pool first(square);
  mproc::mpi::Pool second(square);  // the serving ranks are still inside first's constructor
  if (second.is_master()) std::printf("a second pool while the first is open: %ld\n", second.apply(3));
}

void type_mismatch(int rank) {
  if (rank == 0) {
    mproc::mpi::Pool pool{std::function<long(int)>(square)};
    std::printf("the master's pool of another F: %ld\n", pool.apply(3));
  } else {
    mproc::mpi::Pool pool(square);
  }
}

void bad_frame(int rank) {
  using namespace mproc::detail;
  Comm comm = Comm::dup(MPI_COMM_WORLD);
  if (rank == 1) {
    auto fn = square;
    serve_or_abort(fn, {}, comm);
    std::printf("rank 1 returned from serving after a bad frame\n");
  } else if (rank == 0) {
    MPI_Message message;
    MPI_Status status;
    mproc::Bytes buffer;
    MPI_Mprobe(1, mpi_tag_frame, comm.get(), &message, &status);
    receive_frame(comm.get(), message, status, buffer);  // ready
    send_empty_frame(comm.get(), 1, FrameKind::result);  // a master never sends that
  }
  MPI_Barrier(comm.get());  // rank 1 never comes: its abort ends the job
}

}  // namespace

int main(int argc, char** argv) {
  mproc::mpi::Environment mpi(argc, argv);
  const char* mode = argc > 1 ? argv[1] : "";
  if (std::strcmp(mode, "open_pool") == 0) open_pool();
  else if (std::strcmp(mode, "type_mismatch") == 0) type_mismatch(mpi.rank());
  else if (std::strcmp(mode, "bad_frame") == 0) bad_frame(mpi.rank());
  else {
    std::fprintf(stderr, "usage: %s open_pool|type_mismatch|bad_frame\n", argv[0]);
    return 2;
  }
  std::printf("rank %d went on\n", mpi.rank());
  return 0;
}
