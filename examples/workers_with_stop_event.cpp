// Manager and workers with a stop Event: a manager puts tasks on a shared task list
// and sets `stop` when it has no more; one worker per core but one (or --workers N)
// takes tasks until the list is empty AND stop is set. The Python version's workers
// poll the queue with get_nowait() in a loop; here they sleep on a Condition that the
// manager notifies when it adds a task or sets stop, so an idle worker costs nothing.
// A SharedDict counts the tasks each worker did. The Python version's 10 tasks of 2 s
// become 6 tasks of 0.2 s.
#include <mproc/mproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct Shared {
  mproc::Manager manager;
  mproc::SharedList<int> tasks = manager.list<int>();
  mproc::SharedDict<std::string, int> done_by = manager.dict<std::string, int>();
  mproc::Event stop;
  mproc::Condition changed{mproc::Lock()};  // "a task was added, or stop was set"
};

// Shared's members are handles: the worker's copy is the same list, dict, event and condition.
void worker(Shared& shared) {
  for (;;) {
    int job = 0;
    {
      std::unique_lock guard(shared.changed);
      shared.changed.wait([&] { return !shared.tasks.empty() || shared.stop.is_set(); });
      if (shared.tasks.empty()) return;  // empty and stopped: go home
      job = shared.tasks.pop(0);
    }
    std::int64_t random_operation = 0;  // the Python version's sum((job) ^ i for i in range(500000))
    for (std::int64_t i = 0; i < 500000; ++i) random_operation += job ^ i;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    shared.done_by.update(mproc::current_process().name(), [](std::optional<int> n) { return n.value_or(0) + 1; });
    std::cout << mproc::current_process().name() << " finished task " << job << " (" << random_operation << ")"
              << std::endl;
  }
}

int main(int argc, char** argv) {
  int workers = std::max(1, static_cast<int>(mproc::cpu_count()) - 1);
  if (argc == 3 && std::string(argv[1]) == "--workers") workers = std::stoi(argv[2]);
  constexpr int jobs = 6;

  const auto start = std::chrono::steady_clock::now();
  Shared shared;
  std::vector<mproc::Process> team;
  for (int i = 1; i <= workers; ++i) {
    team.emplace_back(mproc::ProcessOptions{.name = "worker-" + std::to_string(i)}, worker, shared);
  }
  for (auto& w : team) w.start();

  for (int i = 0; i < jobs; ++i) {  // add_jobs()
    std::lock_guard guard(shared.changed);
    shared.tasks.append(i);
    shared.changed.notify();
  }
  {  // terminate(): no more tasks; workers finish what is listed, then go home
    std::lock_guard guard(shared.changed);
    shared.stop.set();
    shared.changed.notify_all();
  }
  for (auto& w : team) w.join();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  int total = 0;
  for (const auto& [name, n] : shared.done_by.items()) {
    std::cout << name << " did " << n << " task(s)" << std::endl;
    total += n;
  }
  std::cout << "all " << total << " of " << jobs << " tasks done by " << workers << " workers in " << elapsed << " s, "
            << shared.tasks.size() << " left" << std::endl;
}
