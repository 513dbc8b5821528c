// mproc::mpi from an installed mproc; run alone, the pool runs serially on its one rank.
#include <mproc/mpi.hpp>
#include <cstdio>
int twice(int x) { return 2 * x; }
int main() {
  mproc::mpi::Pool pool(twice);
  if (pool.is_master()) std::printf("consumer ok %d\n", pool.apply(21));
}
