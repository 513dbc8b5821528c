// Must not compile: a SharedDict keyed by a struct with padding, whose equal values
// may encode to different bytes (the dict compares keys by their encodings). The
// error must say why and what to use instead.
#include <mproc/manager.hpp>

struct Padded {
  char tag;
  int id;  // three bytes of padding before it
};

bool has(mproc::Manager& mgr) { return mgr.dict<Padded, int>().contains(Padded{'a', 1}); }
