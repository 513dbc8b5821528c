// A pipeline of processes joined by Queues. generate_numbers puts 1..20,
// add_random adds a random int from [10, 20] to each, numbers_list collects them, and
// the main process turns the list into a set. Each stage stops at an end sentinel
// (std::nullopt, the Python version's "end"), and a logger process prints the log lines of all
// the others whole, tagged and in the order they were logged. Unlike the Python version's
// stages, which spin on `if not queue.empty()`, these block in get().
#include <mproc/mproc.hpp>

#include <chrono>
#include <iostream>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <vector>

using Item = std::optional<int>;  // std::nullopt ends a stage

int main() {
  const mproc::Queue<Item> numbers;              // NUMBERS_QUEUE
  const mproc::Queue<Item> randints;             // RANDINT_QUEUE
  const mproc::Queue<std::vector<int>> collected;  // the Python version's shared list, sent back once
  const mproc::LogQueue logs;                    // LOGGER_QUEUE

  mproc::Process logger(mproc::ProcessOptions{.name = "print_logs"}, [logs] {
    logs.serve([](const mproc::LogRecord& r) { std::cout << mproc::format_log_line(r) << std::flush; });
  });
  mproc::Process generate(mproc::ProcessOptions{.name = "generate_numbers"}, [numbers, logs] {
    logs.log("Number generation Started");
    for (int x = 1; x <= 20; ++x) {
      numbers.put(x);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the Python version sleeps 5 s
    }
    numbers.put(std::nullopt);
  });
  mproc::Process add_random(mproc::ProcessOptions{.name = "add_random"}, [numbers, randints, logs] {
    logs.log("Number addition Started");
    std::mt19937 rng(std::random_device{}());  // seeded here: a fork copies the parent's generator
    std::uniform_int_distribution<int> randint(10, 20);
    for (Item x = numbers.get(); x; x = numbers.get()) {
      logs.log("add_random - ", *x);
      randints.put(*x + randint(rng));
    }
    randints.put(std::nullopt);
  });
  mproc::Process numbers_list(mproc::ProcessOptions{.name = "numbers_list"}, [randints, collected, logs] {
    logs.log("list conversion Started");
    std::vector<int> final_list;
    for (Item x = randints.get(); x; x = randints.get()) {
      logs.log("appending - ", *x);
      final_list.push_back(*x);
    }
    collected.put(final_list);
  });

  for (mproc::Process* p : {&logger, &generate, &add_random, &numbers_list}) p->start();
  const std::vector<int> final_list = collected.get();
  for (mproc::Process* p : {&generate, &add_random, &numbers_list}) p->join();
  logs.stop();  // the logger's end sentinel, after every other line
  logger.join();

  bool in_order = final_list.size() == 20;
  for (std::size_t i = 0; in_order && i < final_list.size(); ++i) {
    const int added = final_list[i] - static_cast<int>(i + 1);
    in_order = added >= 10 && added <= 20;
  }
  const std::set<int> final_set(final_list.begin(), final_list.end());
  std::cout << "collected " << final_list.size()
            << " numbers, each x + randint(10, 20) in order: " << (in_order ? "yes" : "no") << "\nset of "
            << final_set.size() << " distinct numbers:";
  for (int x : final_set) std::cout << ' ' << x;
  std::cout << std::endl;
  return in_order ? 0 : 1;
}
