// The initializer runs wherever tasks run: on each serving rank, or on the master
// when the tasks run there (one rank, serial mode, MPROC_SERIAL). The ctests run
// this with 1 rank, in serial mode and with 3 ranks, and expect the same line, which
// also holds the local pool's results from the same initializer.
#include <mproc/mpi.hpp>

#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

namespace {

int offset = 0;  // the "model" the initializer loads
void load_model() { offset = 100; }
int predict(int x) { return x + offset; }

}  // namespace

int main(int argc, char** argv) {
  mproc::mpi::Environment mpi(argc, argv);
  std::vector<int> inputs(10);
  std::iota(inputs.begin(), inputs.end(), 1);
  mproc::mpi::Pool pool(predict, {.initializer = load_model});
  if (!pool.is_master()) return 0;
  const std::vector<int> results = pool.map(inputs, 1);
  mproc::Pool local(predict, {.processes = 2, .initializer = load_model});
  std::string text;
  bool initialized = true;
  for (int r : results) {
    text += " " + std::to_string(r);
    initialized = initialized && r > 100;
  }
  std::printf("mpirun -n %d%s: initialized: %s, results:%s, same as the local pool: %s\n", mpi.size(),
              pool.serial() ? " (serial)" : "", initialized ? "yes" : "no", text.c_str(),
              results == local.map(inputs) ? "yes" : "no");
}
