// Must not compile: a const char* converts to long only by an explicit cast (which
// would send the pointer's value); starmap makes implicit conversions only, and the
// error names the position and both types.
#include <mproc/pool.hpp>

#include <utility>
#include <vector>

long add(long a, long b) { return a + b; }

void run() {
  mproc::Pool pool(add);
  (void)pool.starmap(std::vector<std::pair<const char*, int>>{{"five", 5}});
}
