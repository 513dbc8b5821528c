#pragma once
// Waiting on MPI without taking a core from the ranks at work.
//
// MPI gives nothing to block on: no descriptor to poll, and Open MPI's blocking calls
// (MPI_Recv, MPI_Mprobe, MPI_Wait) spin until their message comes. With
// mpi_yield_when_idle the spin calls sched_yield, which still keeps a waiting rank
// running: a map over a master and 2 serving ranks on 2 cores ran at 1.04x the serial
// loop, the master's wait taking a core from a rank at work. So mproc waits by
// testing (MPI_Improbe, MPI_Test) in a loop, at full speed for a spin time (a reply
// that comes within it is seen at MPI's own latency), then sleeping between tests for
// a time that doubles from first_sleep up to max_sleep. This is mproc's one
// sleep-poll, there because MPI offers no way to block: a message is noticed at most
// max_sleep late, while a serving rank has its next chunk queued (two per rank), so a
// late notice delays no work. The spin times are chosen by the waiter: a short one
// where a long wait is likely, a longer one where a reply is due soon (a serving
// rank just idle, tasks predicted to be short), as a sleeping process on a busy
// machine may wait a while for a core once woken.

#include <mproc/detail/mpi/env.hpp>
#include <mproc/errors.hpp>

#include <poll.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>
#include <vector>

namespace mproc::detail {

/// The pauses of one wait: none during its spin time, then doubling up to a cap.
class MpiBackoff {
 public:
  static constexpr std::chrono::nanoseconds short_spin = std::chrono::microseconds(100);
  static constexpr std::chrono::nanoseconds long_spin = std::chrono::milliseconds(1);
  static constexpr std::chrono::nanoseconds first_sleep = std::chrono::microseconds(20);
  static constexpr std::chrono::nanoseconds max_sleep = std::chrono::milliseconds(1);

  explicit MpiBackoff(std::chrono::nanoseconds spin = short_spin) noexcept : spin_(spin) {}

  /// After a test that found nothing: how long to sleep before the next one (zero:
  /// test again at once), at most `cap`.
  std::chrono::nanoseconds next(std::chrono::nanoseconds cap = max_sleep) {
    using Clock = std::chrono::steady_clock;
    const auto now = Clock::now();
    if (!started_) {
      started_ = true;
      start_ = now;
    }
    if (now - start_ < spin_) return std::chrono::nanoseconds(0);
    sleep_ = std::min(sleep_.count() == 0 ? first_sleep : 2 * sleep_, std::max(cap, first_sleep));
    return sleep_;
  }

 private:
  std::chrono::nanoseconds spin_;
  bool started_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::nanoseconds sleep_{0};
};

/// Calls done() until it returns true, sleeping between calls as MpiBackoff says.
template <class Done>
void mpi_wait_until(Done&& done, std::chrono::nanoseconds spin = MpiBackoff::short_spin) {
  MpiBackoff backoff(spin);
  while (!done()) {
    const auto pause = backoff.next();
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
  }
}

/// A pause of an MPI wait that a descriptor may end early (the master's wake-up
/// eventfd): ppoll, as poll's milliseconds are too coarse for it. Returns whether fd
/// became readable.
inline bool pause_unless_readable(int fd, std::chrono::nanoseconds pause) {
  pollfd p{fd, POLLIN, 0};
  const auto s = std::chrono::duration_cast<std::chrono::seconds>(pause);
  const timespec ts{static_cast<time_t>(s.count()), static_cast<long>((pause - s).count())};
  const int r = ::ppoll(&p, 1, &ts, nullptr);
  if (r < 0 && errno != EINTR) throw OSError("ppoll", errno);
  return r > 0 && p.revents != 0;
}

/// MPI_Waitall, without the spin.
inline void mpi_wait_all(std::vector<MPI_Request>& requests) {
  mpi_wait_until([&] {
    int done = 0;
    check_mpi(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE),
              "MPI_Testall");
    return done != 0;
  });
}

/// MPI_Mprobe, without the spin (but for `spin`).
inline void mpi_mprobe(int source, int tag, MPI_Comm comm, MPI_Message& message, MPI_Status& status,
                       std::chrono::nanoseconds spin = MpiBackoff::short_spin) {
  mpi_wait_until(
      [&] {
        int found = 0;
        check_mpi(MPI_Improbe(source, tag, comm, &found, &message, &status), "MPI_Improbe");
        return found != 0;
      },
      spin);
}

}  // namespace mproc::detail
