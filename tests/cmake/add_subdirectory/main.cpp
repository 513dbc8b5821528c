// A consumer of mproc's source tree (add_subdirectory): a real Pool program over a
// lambda with captured state. Prints "consumer ok" only if pool.map is right.
#include <mproc/mproc.hpp>

#include <iostream>
#include <string>
#include <vector>

int main() {
  const std::string suffix = "!";
  mproc::Pool pool([suffix](std::string word) { return word + suffix; }, {.processes = 2});
  const auto shouted = pool.map(std::vector<std::string>{"map", "works"});
  const bool right = shouted == std::vector<std::string>{"map!", "works!"};
  std::cout << (right ? "consumer ok" : "consumer: wrong results from pool.map") << '\n';
  return right ? 0 : 1;
}
