// Must not compile: map_async's chunksize comes right after the inputs, before the
// callbacks.
#include <mproc/pool.hpp>

#include <vector>

long square(int x) { return long{x} * x; }

void run() {
  mproc::Pool pool(square);
  (void)pool.map_async(std::vector<int>{1, 2}, [](const std::vector<long>&) {}, 4);
}
