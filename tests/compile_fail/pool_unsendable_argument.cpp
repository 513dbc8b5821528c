// Must not compile: F's parameter type cannot be sent to a worker. The one error
// must say so and name the type (NoSerialize).
#include <mproc/pool.hpp>

#include <string>

struct NoSerialize {  // not trivially copyable, no cereal serialize()
  std::string text;
};

int length(NoSerialize n) { return static_cast<int>(n.text.size()); }

void make_pool() {
  mproc::Pool pool(length);
  (void)pool;
}
