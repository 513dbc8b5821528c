// Pool.map_async with a callback. The callback gets the whole
// result list once every item is done; get() then returns the same list.
#include <mproc/mproc.hpp>

#include <iostream>
#include <numeric>
#include <vector>

long cube(int number) {
  long total = 0;
  for (long i = 0; i < number; ++i) total += i * i * i;
  return total;
}

void custom_callback(const std::vector<long>& result) {
  std::cout << "Got result: [";
  for (std::size_t i = 0; i < result.size(); ++i) std::cout << (i ? ", " : "") << result[i];
  std::cout << "]" << std::endl;
}

int main() {
  std::vector<int> numbers(5);
  std::iota(numbers.begin(), numbers.end(), 0);  // range(5)

  mproc::Pool p(cube);
  auto result = p.map_async(numbers, custom_callback);
  // get() returns after the callback has run, as in Python.
  for (long value : result.get()) std::cout << value << '\n';
  p.close();
  p.join();
}
