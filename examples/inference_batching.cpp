// An asynchronous inference system of three modules, each a
// process that starts processes of its own, joined by Queues:
//   A (network)     A.send hands requests to B's processes; A.receive collects results.
//   B (processing)  b_pool processes do the CPU-heavy preparation and pass items on to C.
//   C (inference)   c_pool receivers feed one cache process, which batches up to 128
//                   items or whatever came within 1 s; one predict process builds the
//                   model inside itself (a model made in the parent would not survive
//                   the fork) and runs each batch; C sends the results back to A.
// The Python version runs forever; here A sends 1000 requests, waits until every result is
// back (the last, partial batch is sent on by C's 1 s timer, as nothing more comes),
// then end markers (std::nullopt) flow down the pipeline, every process finishes,
// and A prints a summary. Log lines from every process go through one LogListener.
#include <mproc/mproc.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using Text = std::optional<std::string>;
using Batch = std::optional<std::vector<std::string>>;

constexpr int b_pool_size = 2;
constexpr int c_pool_size = 6;

/// Every module's input queue (the Python version's WholeQueue registry).
struct WholeQueue {
  mproc::Queue<Text> a;                                                              // results, for A
  std::vector<mproc::Queue<std::optional<int>>> b =
      std::vector<mproc::Queue<std::optional<int>>>(b_pool_size);  // requests
  std::vector<mproc::Queue<Text>> c = std::vector<mproc::Queue<Text>>(c_pool_size);  // prepared items, per receiver
};

/// Starts the given process bodies, each a process named name.i, and joins them.
template <class Body>
void run_processes(const std::string& name, int n, Body body) {
  std::vector<mproc::Process> procs;
  for (int i = 0; i < n; ++i)
    procs.emplace_back(mproc::ProcessOptions{.name = name + "." + std::to_string(i)}, body, i);
  for (auto& p : procs) p.start();
  for (auto& p : procs) p.join();
}

class A : public mproc::Process {
 public:
  A(WholeQueue q, int requests) : Process(mproc::ProcessOptions{.name = "A"}), q_(std::move(q)), requests_(requests) {}

  void run() override {
    mproc::log("do_run process: ", ::getpid());
    const mproc::Queue<int> all_back;  // receive tells send that every result came
    mproc::Process sender(mproc::ProcessOptions{.name = "A.send"}, [&] { send(all_back); });
    mproc::Process receiver(mproc::ProcessOptions{.name = "A.receive"}, [&] { receive(all_back); });
    sender.start();
    receiver.start();
    sender.join();
    receiver.join();
  }

 private:
  void send(const mproc::Queue<int>& all_back) {
    mproc::log("send process: ", ::getpid());
    for (int count = 0; count < requests_; ++count) {
      std::this_thread::sleep_for(500us);  // requests arrive over time (the Python version: 1 ms)
      q_.b[static_cast<std::size_t>(count % b_pool_size)].put_nowait(count);
    }
    (void)all_back.get();  // no end markers before then: only the timer can flush the last batch
    for (const auto& b : q_.b) b.put(std::nullopt);
  }

  void receive(const mproc::Queue<int>& all_back) {
    mproc::log("receive process: ", ::getpid());
    std::vector<int> seen(static_cast<std::size_t>(requests_));
    int received = 0;
    const std::string prefix = "modelpredict_receive_component_";
    for (Text r = q_.a.get(); r; r = q_.a.get()) {
      if (++received == requests_) all_back.put(1);
      if (r->rfind(prefix, 0) == 0) ++seen.at(std::stoul(r->substr(prefix.size())));
    }
    const bool once = std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; });
    std::cout << "A: sent " << requests_ << " requests, received " << received
              << " results, each exactly once: " << (once ? "yes" : "no") << std::endl;
  }

  WholeQueue q_;
  int requests_;
};

class B : public mproc::Process {
 public:
  explicit B(WholeQueue q) : Process(mproc::ProcessOptions{.name = "B"}), q_(std::move(q)) {}

  void run() override {
    mproc::log("do_run process: ", ::getpid());
    run_processes("B.component", b_pool_size, [this](int i) { component(i); });
  }

 private:
  void component(int i) {
    mproc::log("component process: ", ::getpid());
    const mproc::Queue<std::optional<int>>& requests = q_.b[static_cast<std::size_t>(i)];
    for (std::optional<int> info = requests.get(); info; info = requests.get()) {
      const std::string componext_info = "component_" + std::to_string(*info);  // the heavy preparation
      q_.c[static_cast<std::size_t>(*info % c_pool_size)].put(componext_info);
    }
    for (const auto& c : q_.c) c.put(std::nullopt);  // every receiver hears from every component
  }

  WholeQueue q_;
};

/// The model: built inside the predict process (it may hold threads, devices or
/// open files that a fork would not carry over).
class Model {
 public:
  Model() : rng_(std::random_device{}()) {}
  std::vector<std::string> operator()(const std::vector<std::string>& batch) {
    std::this_thread::sleep_for(std::chrono::duration<double>(std::uniform_real_distribution<>(0.02, 0.1)(rng_)));
    return batch;  // a real model would compute something
  }

 private:
  std::mt19937 rng_;
};

class C : public mproc::Process {
 public:
  explicit C(WholeQueue q) : Process(mproc::ProcessOptions{.name = "C"}), q_(std::move(q)) {}

  void run() override {
    mproc::log("do_run process: ", ::getpid());
    const mproc::Queue<Text> cache_queue;
    const mproc::Queue<Batch> infer_queue;
    const mproc::Queue<Batch> result_queue;
    mproc::Process receivers(mproc::ProcessOptions{.name = "C.receivers"}, [&] {
      run_processes("C.receive", c_pool_size, [&](int i) { receive(q_.c[static_cast<std::size_t>(i)], cache_queue); });
    });
    mproc::Process cache_p(mproc::ProcessOptions{.name = "C.cache"}, [&] { cache(cache_queue, infer_queue); });
    mproc::Process predict_p(mproc::ProcessOptions{.name = "C.predict"}, [&] { predict(infer_queue, result_queue); });
    for (auto* p : {&receivers, &cache_p, &predict_p}) p->start();
    for (Batch res = result_queue.get(); res; res = result_queue.get()) {
      for (const std::string& ele : *res) q_.a.put(ele);
    }
    q_.a.put(std::nullopt);
    for (auto* p : {&receivers, &cache_p, &predict_p}) p->join();
  }

 private:
  static void receive(const mproc::Queue<Text>& queue, const mproc::Queue<Text>& cache_queue) {
    for (int ends = 0; ends < b_pool_size;) {
      const Text info = queue.get();
      if (!info) ++ends;
      else cache_queue.put("receive_" + *info);
    }
    cache_queue.put(std::nullopt);
  }

  static void cache(const mproc::Queue<Text>& cache_queue, const mproc::Queue<Batch>& infer_queue) {
    mproc::log("cache process: ", ::getpid());
    std::vector<std::string> caches;
    std::size_t batches = 0, largest = 0, by_timer = 0;
    auto last = std::chrono::steady_clock::now();
    auto flush = [&] {
      if (!caches.empty()) {
        largest = std::max(largest, caches.size());
        ++batches;
        if (caches.size() < 128) ++by_timer;  // the second was up first
        infer_queue.put(caches);
        caches.clear();
      }
      last = std::chrono::steady_clock::now();
    };
    for (int ends = 0; ends < c_pool_size;) {
      Text data;
      try {
        data = cache_queue.get(last + 1s - std::chrono::steady_clock::now());  // no item within the second
      } catch (const mproc::Empty&) {
        flush();
        continue;
      }
      if (!data) {
        ++ends;
        continue;
      }
      caches.push_back(*data);
      if (caches.size() >= 128 || std::chrono::steady_clock::now() - last > 1s) flush();
    }
    flush();  // empty: A waited for every result before the end markers
    infer_queue.put(std::nullopt);
    std::cout << "C.cache: " << batches << " batches, the largest of " << largest << " items, " << by_timer
              << " sent on by the 1 s timer" << std::endl;
  }

  static void predict(const mproc::Queue<Batch>& infer_queue, const mproc::Queue<Batch>& result_queue) {
    mproc::log("predict process: ", ::getpid());
    Model model;  // must be made here, in the child
    for (Batch data = infer_queue.get(); data; data = infer_queue.get()) {
      std::vector<std::string> result = model(*data);
      for (std::string& ele : result) ele = "modelpredict_" + ele;
      result_queue.put(result);
    }
    result_queue.put(std::nullopt);
  }

  WholeQueue q_;
};

int main() {
  mproc::LogListener logs;  // lines from every process, whole and in order
  mproc::log("main process: ", ::getpid());
  const WholeQueue whole_queue;
  A a(whole_queue, 1000);
  B b(whole_queue);
  C c(whole_queue);
  mproc::Process* modules[] = {&a, &b, &c};
  for (mproc::Process* p : modules) p->start();
  for (mproc::Process* p : modules) p->join();
  const bool ok = a.exitcode() == 0 && b.exitcode() == 0 && c.exitcode() == 0;
  std::cout << "modules A, B, C finished: " << (ok ? "yes" : "no") << std::endl;
  return ok ? 0 : 1;
}
