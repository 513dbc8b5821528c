// A serving rank dies (SIGKILL) in the middle of a map: the job must end with an
// error that names the rank, never hang. mpirun (Open MPI) ends the whole job; the
// ctest expects a failing exit and mpirun's report.
#include <mproc/mpi.hpp>

#include <csignal>
#include <cstdio>
#include <numeric>
#include <vector>

int main() {
  mproc::mpi::Pool pool([](int x) {
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
