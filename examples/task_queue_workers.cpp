// A manager plans tasks and hands them to workers through a task Queue; one worker
// per core but one (or --workers N). Workers are Process subclasses that override
// run(), as in the Python version. Its 10 tasks of 2 s on 11 workers become 6 tasks
// of 0.2 s here, so with 3 workers they take about 0.4 s instead of 1.2 s.
//
// The Python version stops its workers with an Event and polls the queue with
// get_nowait in a loop; here each worker blocks in get() and the stop signal is one
// end-of-work sentinel per worker on the same Queue, which needs no polling.
#include <mproc/mproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using Task = std::optional<int>;  // std::nullopt: no more work, go home
using Result = std::pair<int, std::int64_t>;

class Worker : public mproc::Process {
 public:
  Worker(int id, mproc::Queue<Task> tasks, mproc::Queue<Result> results)
      : Process(mproc::ProcessOptions{.name = "worker-" + std::to_string(id)}), tasks_(tasks), results_(results) {}

  void run() override {
    for (Task job = tasks_.get(); job; job = tasks_.get()) {
      std::int64_t random_operation = 0;  // the Python version's sum((job) ^ i for i in range(500000))
      for (std::int64_t i = 0; i < 500000; ++i) random_operation += *job ^ i;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      std::cout << mproc::current_process().name() << " finished task " << *job << std::endl;
      results_.put({*job, random_operation});
    }
  }

 private:
  mproc::Queue<Task> tasks_;
  mproc::Queue<Result> results_;
};

class Manager {
 public:
  explicit Manager(int workers) {
    for (int i = 1; i <= workers; ++i) workers_.emplace_back(i, task_queue_, results_);
    for (auto& w : workers_) w.start();
  }
  /// Assigns the jobs (the Python version's add_jobs()).
  void add_jobs(int n) {
    for (int i = 0; i < n; ++i) task_queue_.put(i);
  }
  /// No more jobs: each worker finishes what is queued, then goes home (terminate()).
  std::map<int, std::int64_t> terminate(int jobs) {
    for (std::size_t i = 0; i < workers_.size(); ++i) task_queue_.put(std::nullopt);
    std::map<int, std::int64_t> done;
    for (int i = 0; i < jobs; ++i) done.insert(results_.get());
    for (auto& w : workers_) w.join();
    return done;
  }

 private:
  mproc::Queue<Task> task_queue_;
  mproc::Queue<Result> results_;
  std::vector<Worker> workers_;
};

int main(int argc, char** argv) {
  int workers = std::max(1, static_cast<int>(mproc::cpu_count()) - 1);
  if (argc == 3 && std::string(argv[1]) == "--workers") workers = std::stoi(argv[2]);
  constexpr int jobs = 6;

  const auto start = std::chrono::steady_clock::now();
  Manager manager(workers);
  manager.add_jobs(jobs);
  const std::map<int, std::int64_t> done = manager.terminate(jobs);
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::cout << "results:";
  for (const auto& [job, value] : done) std::cout << ' ' << job << ':' << value;
  std::printf("\n%d tasks done by %d workers in %.2f s (%.1f s one after another)\n", jobs, workers, elapsed,
              jobs * 0.2);
}
