// Must not compile: a generic lambda has no single call signature, so the pool
// cannot know which types to decode in the worker.
#include <mproc/pool.hpp>

void make_pool() {
  mproc::Pool pool([](auto x) { return x * 2; });
  (void)pool;
}
