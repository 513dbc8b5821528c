// Queue: a producer puts ten random values and then None (std::nullopt)
// as the end marker; a consumer takes them until it sees the marker.
#include <mproc/mproc.hpp>

#include <chrono>
#include <iostream>
#include <optional>
#include <random>
#include <thread>

double random_value() {
  thread_local std::mt19937 rng(std::random_device{}());
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

void producer(const mproc::Queue<std::optional<double>>& queue) {
  std::cout << "Producer is running" << std::endl;
  for (int i = 0; i < 10; ++i) {
    const double value = random_value();
    std::this_thread::sleep_for(std::chrono::duration<double>(value / 20));  // the Python version sleeps value s
    std::cout << "Producer generated: " << value << std::endl;
    queue.put(value);
  }
  queue.put(std::nullopt);  // all done
  std::cout << "Producer finished" << std::endl;
}

void consumer(const mproc::Queue<std::optional<double>>& queue) {
  std::cout << "Consumer is running" << std::endl;
  int items = 0;
  for (std::optional<double> item = queue.get(); item; item = queue.get()) {
    const double new_val = *item * random_value();
    std::cout << ">from producer: " << *item << " and new value: " << new_val << std::endl;
    ++items;
  }
  std::cout << "Consumer finished after " << items << " items" << std::endl;
}

int main() {
  mproc::Queue<std::optional<double>> queue;
  mproc::Process consumer_p(consumer, queue);
  consumer_p.start();
  mproc::Process producer_p(producer, queue);
  producer_p.start();
  producer_p.join();
  consumer_p.join();
}
