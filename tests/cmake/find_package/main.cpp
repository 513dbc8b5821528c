// A consumer of an installed mproc: a real Pool program. It prints "consumer ok"
// only if the workers computed the right answer.
#include <mproc/mproc.hpp>

#include <iostream>
#include <vector>

long cube(int x) { return long{x} * x * x; }

int main() {
  mproc::Pool pool(cube, {.processes = 2});
  const std::vector<long> got = pool.map(std::vector<int>{1, 2, 3, 4});
  if (got != std::vector<long>{1, 8, 27, 64}) {
    std::cout << "consumer: wrong results from pool.map\n";
    return 1;
  }
  std::cout << "consumer ok\n";
  return 0;
}
