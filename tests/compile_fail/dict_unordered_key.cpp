// Must not compile: a SharedDict keyed by an unordered container, whose equal values
// may iterate (and so encode) in different orders.
#include <mproc/manager.hpp>

#include <unordered_set>

bool has(mproc::Manager& mgr) {
  return mgr.dict<std::unordered_set<int>, int>().contains(std::unordered_set<int>{1, 2});
}
