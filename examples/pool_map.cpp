// Pool.map. cube(n) is the sum of i^3 for i < n; mapping it over
// range(5) on a pool of cpu_count() - 1 workers prints [0, 0, 1, 9, 36], as the Python
// version does. The results come back in input order whichever worker ran them.
#include <mproc/mproc.hpp>

#include <algorithm>
#include <iostream>
#include <numeric>
#include <vector>

long cube(int number) {
  long total = 0;
  for (long i = 0; i < number; ++i) total += i * i * i;
  return total;
}

int main() {
  const std::size_t cpus = mproc::cpu_count();
  std::vector<int> numbers(5);
  std::iota(numbers.begin(), numbers.end(), 0);  // range(5)

  // A pool with cpu_count - 1 workers (at least one), as in the Python version.
  mproc::Pool p(cube, {.processes = std::max<std::size_t>(cpus - 1, 1)});
  std::vector<long> result = p.map(numbers);

  std::cout << '[';
  for (std::size_t i = 0; i < result.size(); ++i) std::cout << (i ? ", " : "") << result[i];
  std::cout << "]\n";
  p.close();
  p.join();
}
