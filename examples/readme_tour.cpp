// The README's code, compiled and run by ctest: every block between
// "// [snippet]" and "// [/snippet]" appears verbatim in README.md (checked by the
// readme.snippets test), so the README never shows code that does not build. Each block
// sits between `clang-format off` and `on`: the formatter leaves it as the README shows it.
#include <mproc/mproc.hpp>

#include <cstdio>
#include <iostream>
#include <map>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

// clang-format off
// [snippet]
long cube(int n) { return long(n) * n * n; }
// [/snippet]
// clang-format on

// clang-format off
// [snippet]
struct Order {  // a user type: cereal serialization makes it Sendable
  std::string customer;
  std::vector<double> amounts;
  template <class Archive>
  void serialize(Archive& ar) { ar(customer, amounts); }
};

double total(const Order& o) { return std::accumulate(o.amounts.begin(), o.amounts.end(), 0.0); }
// [/snippet]
// clang-format on

int parse(const std::string& s) { return std::stoi(s); }  // throws on bad input

void processes_and_channels() {
  // clang-format off
  // [snippet]
  mproc::Queue<std::string> q;                   // any number of producers and consumers
  mproc::Process producer([q] {
    for (int i = 0; i < 3; ++i) q.put("item " + std::to_string(i));
    q.put("");                                   // the end marker
  });
  producer.start();
  for (std::string s = q.get(); !s.empty(); s = q.get()) std::cout << "got " << s << '\n';
  producer.join();                               // producer.exitcode() == 0

  auto [here, there] = mproc::Pipe<std::vector<int>>();
  mproc::Process echo([](mproc::Connection<std::vector<int>> c) { c.send(c.recv()); }, std::move(there));
  echo.start();
  here.send({1, 2, 3});
  std::vector<int> back = here.recv();           // {1, 2, 3}
  echo.join();
  // [/snippet]
  // clang-format on
  std::cout << "producer exit code " << producer.exitcode().value_or(-1) << ", echoed " << back.size() << " ints\n";
}

void shared_state() {
  // clang-format off
  // [snippet]
  mproc::Value<int> counter(0);                  // shared memory, with its own robust lock
  mproc::Manager mgr;
  auto done = mgr.dict<std::string, int>();      // a dict every process sees
  std::vector<mproc::Process> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([counter, done, w]() mutable {
      for (int i = 0; i < 1000; ++i) counter.update([](int& v) { ++v; });
      done.set("worker " + std::to_string(w), 1000);
    });
  }
  for (auto& p : workers) p.start();
  for (auto& p : workers) p.join();              // counter.load() == 2000, done.size() == 2
  // [/snippet]
  // clang-format on
  std::cout << "counter " << counter.load() << ", dict size " << done.size() << '\n';
}

void quick_start() {
  // clang-format off
  // [snippet]
  mproc::Pool pool(cube);                        // one worker process per core
  std::vector<int> inputs = {1, 2, 3, 4, 5};
  std::vector<long> cubes = pool.map(inputs);    // {1, 8, 27, 64, 125}, in input order
  // [/snippet]
  // clang-format on
  std::cout << "cubes:";
  for (long c : cubes) std::cout << ' ' << c;
  std::cout << '\n';
}

void async_and_lazy() {
  mproc::Pool pool(cube, {.processes = 2});
  // clang-format off
  // [snippet]
  // apply_async: a future; the callback runs in this process when the result arrives.
  mproc::AsyncResult<long> r = pool.apply_async(12, [](const long& v) { std::printf("callback got %ld\n", v); });
  long twelve_cubed = r.get();                   // 1728

  // imap: lazy and in order; the input may be endless, only a window is in flight.
  long sum = 0;
  for (long c : pool.imap(std::vector<int>{1, 2, 3})) sum += c;   // 36
  // [/snippet]
  // clang-format on
  std::printf("apply_async: %ld, imap sum: %ld\n", twelve_cubed, sum);
}

void user_types() {
  // clang-format off
  // [snippet]
  mproc::Pool pool(total, {.processes = 2, .progress = true});
  std::vector<Order> orders = {{"ada", {1.5, 2.5}}, {"bob", {10.0}}};
  std::vector<double> totals = pool.map(orders);  // {4.0, 10.0}
  // [/snippet]
  // clang-format on
  std::printf("totals: %.1f %.1f\n", totals[0], totals[1]);
}

void errors() {
  // clang-format off
  // [snippet]
  mproc::Pool pool(parse, {.processes = 2});
  try {
    pool.map(std::vector<std::string>{"1", "two", "3"});
  } catch (const mproc::RemoteError& e) {        // the worker's exception, type and message
    std::cout << "task failed: " << e.what() << '\n';   // std::invalid_argument: stoi
  }
  // [/snippet]
  // clang-format on
}

int main() {
  quick_start();
  async_and_lazy();
  user_types();
  errors();
  processes_and_channels();
  shared_state();
}
