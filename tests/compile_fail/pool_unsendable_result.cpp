// Must not compile: F's result type cannot be sent back from a worker. The one
// error must say so and name the type (NoSerialize).
#include <mproc/pool.hpp>

#include <string>

struct NoSerialize {  // not trivially copyable, no cereal serialize()
  std::string text;
};

NoSerialize make(int n) { return NoSerialize{std::string(static_cast<std::size_t>(n), 'x')}; }

void make_pool() {
  mproc::Pool pool(make);
  (void)pool;
}
