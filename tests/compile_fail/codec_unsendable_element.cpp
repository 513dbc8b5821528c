// Must not compile: a vector of a type that cannot be sent. The one error must say
// so and name the element type (NoSerialize), not just the vector.
#include <mproc/codec.hpp>

#include <string>
#include <vector>

struct NoSerialize {  // not trivially copyable, no cereal serialize()
  std::string text;
};

mproc::Bytes encode_all(const std::vector<NoSerialize>& items) { return mproc::encode(items); }
