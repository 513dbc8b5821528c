// Pool.imap_unordered. Like imap, but each result comes as soon
// as it is done, so the order varies from run to run; the set of results does not.
#include <mproc/mproc.hpp>

#include <iostream>
#include <numeric>
#include <set>
#include <vector>

long cube(int number) {
  long total = 0;
  for (long i = 0; i < number; ++i) total += i * i * i;
  return total;
}

int main() {
  std::vector<int> numbers(20);
  std::iota(numbers.begin(), numbers.end(), 0);  // range(20)

  mproc::Pool p(cube);
  std::vector<long> arrived;
  for (long result : p.imap_unordered(numbers)) arrived.push_back(result);
  p.close();
  p.join();

  std::cout << "in completion order:";
  for (long v : arrived) std::cout << ' ' << v;
  std::cout << '\n';

  std::multiset<long> expected;
  for (int n : numbers) expected.insert(cube(n));
  const bool same = std::multiset<long>(arrived.begin(), arrived.end()) == expected;
  std::cout << arrived.size() << " results, " << (same ? "equal" : "NOT equal") << " as a set to cube(0..19)\n";
  return same ? 0 : 1;
}
