// Must not compile: map calls F with one argument per input, but this F takes two;
// the error must point to starmap.
#include <mproc/pool.hpp>

#include <vector>

int add(int a, int b) { return a + b; }

void run() {
  mproc::Pool pool(add);
  (void)pool.map(std::vector<int>{1, 2, 3});
}
