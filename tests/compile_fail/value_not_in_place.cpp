// Must not compile: a Value of a type that cannot live in place in shared memory.
// The error must say why and point to the Manager's containers.
#include <mproc/shared.hpp>

#include <string>

int length(const mproc::Value<std::string>& v) { return static_cast<int>(v.load().size()); }
