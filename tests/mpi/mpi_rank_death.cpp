// A serving rank dies in the middle of a map: killed by a signal, or (argument
// "exit") leaving through std::exit inside F without finalizing MPI. The job must end
// with an error that names the rank, never hang: mpirun (Open MPI) ends the whole
// job, and the ctests expect a failing exit and mpirun's report.
#include <mproc/mpi.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

int main(int argc, char** argv) {
  static const bool by_exit = argc > 1 && std::strcmp(argv[1], "exit") == 0;
  mproc::mpi::Pool pool([](int x) {
    if (x == 7 && by_exit) std::exit(0);
    if (x == 7) {
      std::signal(SIGKILL, SIG_DFL);
      std::raise(SIGKILL);
    }
    return x;
  });
  if (!pool.is_master()) return 0;
  std::vector<int> xs(100);
  std::iota(xs.begin(), xs.end(), 0);
  const std::vector<int> back = pool.map(xs);
  std::printf("map returned %zu results although a rank died\n", back.size());
  return 0;
}
