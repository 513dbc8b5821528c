// Pool.imap, the lazy map. Results are asked for one at a time
// with next(), or by iterating; either way they come in input order.
#include <mproc/mproc.hpp>

#include <iostream>
#include <numeric>
#include <vector>

long cube(int number) {
  long total = 0;
  for (long i = 0; i < number; ++i) total += i * i * i;
  return total;
}

int main() {
  std::vector<int> numbers(5);
  std::iota(numbers.begin(), numbers.end(), 0);  // range(5)

  mproc::Pool p(cube);
  auto r = p.imap(numbers);
  std::cout << *r.next() << '\n';  // next() is empty only once every result was taken
  std::cout << *r.next() << '\n';
  std::cout << *r.next() << '\n';
  std::cout << "___\n";
  for (long result : p.imap(numbers)) std::cout << result << '\n';
  p.close();
  p.join();
}
