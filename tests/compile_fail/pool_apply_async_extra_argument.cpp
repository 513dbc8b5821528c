// Must not compile: F takes one argument, so the 5 is an argument too many (it must
// not be taken for a chunksize or anything else).
#include <mproc/pool.hpp>

long square(int x) { return long{x} * x; }

void run() {
  mproc::Pool pool(square);
  (void)pool.apply_async(3, 5);
}
