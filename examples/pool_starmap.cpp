// Pool.starmap and starmap_async. starmap is map for a function
// of several arguments: each input is a tuple (a, b) and the call is multiply(a, b).
// The products are random; the check recomputes a * b here.
#include <mproc/mproc.hpp>

#include <iostream>
#include <random>
#include <tuple>
#include <vector>

double multiply(int a, double b) { return a * b; }

// Counts the results that equal multiply(a, b) for their input.
std::size_t count_correct(const std::vector<std::tuple<int, double>>& items, const std::vector<double>& result) {
  std::size_t correct = 0;
  for (std::size_t i = 0; i < items.size() && i < result.size(); ++i) {
    correct += result[i] == std::get<0>(items[i]) * std::get<1>(items[i]);
  }
  return correct;
}

int main() {
  std::mt19937 gen(std::random_device{}());
  std::uniform_real_distribution<double> random(0.0, 1.0);  // Python's random()
  std::vector<std::tuple<int, double>> items;
  for (int i = 0; i < 10; ++i) items.emplace_back(i, random(gen));

  mproc::Pool p(multiply);
  std::vector<double> result = p.starmap(items);
  std::cout << '[';
  for (std::size_t i = 0; i < result.size(); ++i) std::cout << (i ? ", " : "") << result[i];
  std::cout << "]\n";
  std::cout << "starmap: " << count_correct(items, result) << " of " << items.size() << " equal a * b\n";

  auto async_result = p.starmap_async(items);
  for (double value : async_result.get()) std::cout << value << '\n';
  std::cout << "starmap_async: " << count_correct(items, async_result.get()) << " of " << items.size()
            << " equal a * b\n";
  p.close();
  p.join();
}
