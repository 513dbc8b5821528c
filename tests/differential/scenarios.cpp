// The mproc side of the differential check against Python: each scenario does with
// mproc what tests/differential/scenarios.py does with Python's multiprocessing (fork
// start method), and prints one line per observable event in the same format;
// tests/differential/compare.py runs both and compares the lines. Usage:
// differential_scenarios <scenario>.
//
// Where the two APIs differ in shape (an mproc Pool is bound to one callable; Event::wait()
// returns nothing), the scenario says how it prints the same observable, in a comment.

#include <mproc/mproc.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;

/// How long a scenario waits for something that must happen (as in scenarios.py).
constexpr auto hang = 20s;

// ---- printing, in Python's print() format

std::string text(const std::string& s) { return s; }
std::string text(const char* s) { return s; }
std::string text(bool b) { return b ? "True" : "False"; }
template <class T>
  requires std::is_integral_v<T>
std::string text(T v) {
  return std::to_string(v);
}
std::string text(const std::optional<int>& v) { return v ? std::to_string(*v) : "None"; }
template <class T>
std::string text(const std::vector<T>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : " ") + text(e);
  return s;
}

template <class... Ts>
void out(const Ts&... parts) {
  std::string line;
  ((line += (line.empty() ? "" : " ") + text(parts)), ...);
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

std::vector<int> range(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i);
  return v;
}

/// The message of a task's exception (Python's str(e)); mproc's RemoteError also names
/// the C++ type, which Python's ValueError cannot match, so only the message is printed.
std::string message(const mproc::Error& e) {
  if (const auto* remote = dynamic_cast<const mproc::RemoteError*>(&e)) return remote->message();
  return e.what();
}

long square(int x) { return long(x) * x; }
long add(int a, int b) { return long(a) * 1000 + b; }

long fails_at_3_and_9(int x) {
  if (x == 3 || x == 9) throw std::invalid_argument("item " + std::to_string(x));
  return long(x) * x;
}
long fails_at_2_and_5(int x) {
  if (x == 2 || x == 5) throw std::invalid_argument("item " + std::to_string(x));
  return long(x) * x;
}

// ---------------------------------------------------------------- Pool ordering

void pool_map() {
  mproc::Pool pool(square, {.processes = 2});
  out("map", pool.map(range(20)));
  for (std::size_t cs : {1, 3, 7, 50}) out("map chunksize", cs, pool.map(range(20), cs));
  out("map empty", pool.map(std::vector<int>{}).size());
}

void pool_imap() {
  mproc::Pool pool(square, {.processes = 2});
  for (std::size_t cs : {1, 4}) {
    auto it = pool.imap(range(15), cs);
    int i = 0;
    while (auto r = it.next()) out("imap chunksize", cs, "item", i++, *r);
    out("imap chunksize", cs, "end");
  }
}

void pool_imap_unordered() {
  mproc::Pool pool(square, {.processes = 2});
  for (std::size_t cs : {1, 5}) {
    std::vector<long> got;
    for (long r : pool.imap_unordered(range(30), cs)) got.push_back(r);
    out("imap_unordered chunksize", cs, "count", got.size());
    std::sort(got.begin(), got.end());
    out("imap_unordered chunksize", cs, "set", got);
  }
}

void pool_starmap() {
  mproc::Pool pool(add, {.processes = 2});
  std::vector<std::pair<int, int>> pairs;
  for (int i = 0; i < 12; ++i) pairs.emplace_back(i, 10 * i);
  out("starmap", pool.starmap(pairs));
  out("starmap chunksize 5", pool.starmap(pairs, 5));
}

// ---------------------------------------------------------------- errors in imap and map

void next_outcomes(mproc::IMap<long> it, int n) {
  for (int i = 0; i < n; ++i) {
    try {
      const auto r = it.next();
      if (!r) {
        out("item", i, "end too early");
        return;
      }
      out("item", i, "value", *r);
    } catch (const mproc::Error& e) {
      out("item", i, "error", message(e));
    }
  }
  try {
    out(it.next() ? "more items than inputs" : "end");
  } catch (const mproc::Error& e) {
    out("more items than inputs:", message(e));
  }
}

void pool_imap_error() {
  mproc::Pool pool(fails_at_3_and_9, {.processes = 2});
  next_outcomes(pool.imap(range(12)), 12);
  std::vector<long> values;
  std::vector<std::string> errors;
  auto it = pool.imap_unordered(range(12));
  for (;;) {
    try {
      const auto r = it.next();
      if (!r) break;
      values.push_back(*r);
    } catch (const mproc::Error& e) {
      errors.push_back(message(e));
    }
  }
  std::sort(values.begin(), values.end());
  std::sort(errors.begin(), errors.end());
  out("imap_unordered values", values);
  out("imap_unordered errors", errors);
}

void pool_map_error() {
  for (const bool later_first : {false, true}) {
    const std::string label = later_first ? "the later item fails first" : "the earlier item fails first";
    const int slow = later_first ? 3 : 9;  // fails a second after the other (see the twin)
    // An mproc Pool is bound to one F: the call the twin makes on the same pool after
    // the failure uses the same function, as here.
    mproc::Pool pool(
        [slow](int x) -> long {
          if (x == slow) std::this_thread::sleep_for(1s);
          if (x == 3 || x == 9) throw std::invalid_argument("item " + std::to_string(x));
          return long(x) * x;
        },
        {.processes = 2});
    try {
      (void)pool.map(range(12), 1);
      out("map,", label + ": no exception");
    } catch (const mproc::Error& e) {
      out("map,", label + ": raised", message(e));
    }
    out("map after the failure", pool.map(std::vector<int>{100, 101, 102}));
  }
}

void pool_free_worker() {
  // With chunksize 1, Python's items wait in the pool's queue until a worker is free to
  // take one: a worker busy with a long item holds nothing else, so the other worker
  // runs everything after it.
  mproc::Value<int> finished(0);  // made before the pool, as in the twin
  mproc::Pool pool(
      [finished](int x) mutable -> long {
        if (x == 0) {
          const auto deadline = std::chrono::steady_clock::now() + hang;
          while (finished.load() < 9 && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(5ms);
          }
          return finished.load();
        }
        finished.update([](int& v) { ++v; });
        return -1;
      },
      {.processes = 2});
  const auto got = pool.map(range(10), 1);
  out("item 0 saw the other items finish:", got[0] == 9, "finished", finished.load());
}

// ---------------------------------------------------------------- apply_async callbacks

void pool_apply_callbacks() {
  // One worker: results arrive in submission order, as in the twin.
  std::mutex mutex;
  std::vector<std::string> events;
  auto record = [&](const std::string& e) {
    std::lock_guard guard(mutex);
    events.push_back(e);
  };
  mproc::Pool pool(fails_at_2_and_5, {.processes = 1});
  std::vector<mproc::AsyncResult<long>> results;
  for (int i = 0; i < 8; ++i) {
    results.push_back(pool.apply_async(
        i, [&](const long& v) { record("callback " + std::to_string(v)); },
        [&](const mproc::Error& e) { record("error_callback " + message(e)); }));
  }
  for (std::size_t i = 0; i < results.size(); ++i) {
    try {
      out("get", i, "value", results[i].get(hang));
    } catch (const mproc::Error& e) {
      out("get", i, "error", message(e));
    }
    out("successful", i, results[i].successful());
  }
  {
    std::lock_guard guard(mutex);
    for (const auto& e : events) out(e);
  }
  std::vector<long> seen;  // written on the pool's thread, read after get() returned
  auto r = pool.apply_async(7, [&](const long& v) { seen.push_back(v); });
  const long v = r.get(hang);
  out("get", v, "callback already ran", seen == std::vector<long>{49});
  std::vector<std::string> seen_error;
  auto failing = pool.apply_async(5, nullptr, [&](const mproc::Error& e) { seen_error.push_back(message(e)); });
  try {
    (void)failing.get(hang);
  } catch (const mproc::Error& e) {
    out("get raised", message(e), "error_callback already ran", seen_error == std::vector<std::string>{"item 5"});
  }
  std::vector<long> done;
  auto all = pool.map_async(std::vector<int>{0, 1, 3, 4}, [&](const std::vector<long>& v) { done = v; });
  (void)all.wait_for(hang);
  out("map_async callback", done);
  std::vector<std::string> failed;
  auto some = pool.map_async(range(8), nullptr, [&](const mproc::Error& e) { failed.push_back(message(e)); });
  (void)some.wait_for(hang);
  out("map_async error_callback", failed);
}

// ---------------------------------------------------------------- Queue

void queue_fifo() {
  mproc::Queue<std::pair<int, int>> q;
  constexpr int n = 300;
  std::vector<mproc::Process> procs;
  for (int p = 0; p < 3; ++p) {
    procs.emplace_back([q, p] {
      for (int i = 0; i < n; ++i) q.put({p, i});
    });
  }
  for (auto& p : procs) p.start();
  std::map<int, std::vector<int>> got;
  for (int k = 0; k < 3 * n; ++k) {
    const auto [p, i] = q.get(hang);
    got[p].push_back(i);
  }
  for (auto& p : procs) {
    p.join();
    out("producer exitcode", p.exitcode());
  }
  for (int p = 0; p < 3; ++p) out("producer", p, "items", got[p].size(), "in order", got[p] == range(n));
  out("qsize", q.size());
}

template <class F>
void either(F&& f, const std::string& name, const char* done, const char* empty_or_full) {
  try {
    f();
    out(name + ":", done);
  } catch (const mproc::Empty&) {
    out(name + ":", empty_or_full);
  } catch (const mproc::Full&) {
    out(name + ":", empty_or_full);
  }
}

void queue_empty_full() {
  mproc::Queue<int> q(3);
  out("empty", q.empty(), "qsize", q.size(), "full", q.full());
  either([&] { (void)q.get_nowait(); }, "get_nowait", "an item", "Empty");
  either([&] { (void)q.get(50ms); }, "get(timeout)", "an item", "Empty");
  for (int i = 0; i < 3; ++i) {
    q.put_nowait(i);
    out("put_nowait", i, "qsize", q.size());
  }
  out("full", q.full());
  either([&] { q.put_nowait(3); }, "put_nowait 3", "put", "Full");
  either([&] { q.put(3, 50ms); }, "put(3, timeout)", "put", "Full");
  out("qsize", q.size());
  const int first = q.get_nowait();  // the twin uses a blocking get here (Python's feeder thread)
  out("get_nowait", first, "qsize", q.size());
  q.put_nowait(3);
  out("put_nowait 3 after a get, qsize", q.size());
  for (int i = 0; i < 3; ++i) out("get(timeout)", q.get(hang));
  either([&] { (void)q.get_nowait(); }, "get_nowait", "an item", "Empty");
  out("empty", q.empty(), "qsize", q.size(), "full", q.full());
}

// ---------------------------------------------------------------- Event

void event() {
  mproc::Event e;
  out("is_set", e.is_set());
  out("wait(0.05)", e.wait_for(50ms));
  mproc::Queue<bool> results;
  mproc::Process child([e, results]() mutable { results.put(e.wait_for(hang)); });
  child.start();
  e.set();
  out("child's wait returned", results.get(hang));
  child.join();
  out("is_set", e.is_set());
  e.wait();  // returns nothing, and only once the flag is set: Python's wait() returns True then
  out("wait() returned", true);
  out("wait(0.05)", e.wait_for(50ms));
  e.set();
  out("set twice, is_set", e.is_set());
  e.clear();
  out("cleared, is_set", e.is_set());
  out("wait(0.05)", e.wait_for(50ms));
}

// ---------------------------------------------------------------- Condition

bool wait_until_arrived(mproc::Condition& cond, const mproc::Value<int>& arrived, int n) {
  const auto deadline = std::chrono::steady_clock::now() + hang;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard guard(cond);
      if (arrived.value() == n) return true;
    }
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

void condition() {
  mproc::Condition cond;        // with an RLock of its own, as Python's default
  mproc::Value<int> arrived(0);  // guarded by cond's lock, as the twin's lock=False Value
  mproc::Queue<int> woke;
  std::vector<mproc::Process> kids;
  for (int i = 0; i < 3; ++i) {
    kids.emplace_back([cond, arrived, woke, i]() mutable {
      {
        std::unique_lock guard(cond);
        arrived.value() += 1;
        cond.wait();
      }
      woke.put(i);
    });
  }
  for (auto& k : kids) k.start();
  out("all three waiting", wait_until_arrived(cond, arrived, 3));
  {
    std::lock_guard guard(cond);
    cond.notify();
  }
  (void)woke.get(hang);
  out("notify() woke one");
  try {
    (void)woke.get(300ms);
    out("notify() woke a second one");
  } catch (const mproc::Empty&) {
    out("and no other");
  }
  {
    std::lock_guard guard(cond);
    cond.notify(2);
  }
  (void)woke.get(hang);
  (void)woke.get(hang);
  out("notify(2) woke two");
  std::vector<std::optional<int>> codes;
  for (auto& k : kids) {
    k.join();
    codes.push_back(k.exitcode());
  }
  out("waiters' exitcodes", codes[0], codes[1], codes[2]);

  mproc::Value<int> level(0);
  arrived.value() = 0;
  mproc::Queue<std::pair<bool, int>> results;
  mproc::Process child([cond, level, arrived, results]() mutable {
    std::unique_lock guard(cond);
    arrived.value() += 1;
    const bool ok = cond.wait_for(hang, [&] { return level.value() >= 3; });
    results.put({ok, level.value()});
  });
  child.start();
  out("wait_for waiting", wait_until_arrived(cond, arrived, 1));
  for (int k = 1; k <= 3; ++k) {
    std::lock_guard guard(cond);
    level.value() = k;
    cond.notify_all();
  }
  const auto [ok, at] = results.get(hang);
  out("wait_for returned", ok, "at level", at);
  child.join();
  std::unique_lock guard(cond);
  // C++ argument order: wait_for(timeout, predicate) (README, Condition).
  out("wait_for(false predicate, 0.05)", cond.wait_for(50ms, [] { return false; }));
  out("wait(0.05)", cond.wait_for(50ms));
  out("wait_for(true predicate, 0.05)", cond.wait_for(50ms, [] { return true; }));
}

// ---------------------------------------------------------------- Barrier

bool wait_for_waiting(const mproc::Barrier& b, std::size_t n) {
  const auto deadline = std::chrono::steady_clock::now() + hang;
  while (std::chrono::steady_clock::now() < deadline) {
    if (b.n_waiting() == n) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

void barrier() {
  mproc::Barrier b(3);
  out("parties", b.parties(), "n_waiting", b.n_waiting(), "broken", b.broken());
  mproc::Queue<long> results;
  std::vector<mproc::Process> kids;
  for (int i = 0; i < 2; ++i)
    kids.emplace_back([b, results]() mutable { results.put(static_cast<long>(b.wait(hang))); });
  for (auto& k : kids) k.start();
  out("two waiting", wait_for_waiting(b, 2));
  const long mine = static_cast<long>(b.wait(hang));
  std::vector<long> theirs = {results.get(hang), results.get(hang)};
  std::sort(theirs.begin(), theirs.end());
  out("the last to arrive got index", mine);
  out("the others got", theirs);
  std::vector<long> all = theirs;
  all.push_back(mine);
  std::sort(all.begin(), all.end());
  out("indices are a permutation of 0..2", all == std::vector<long>{0, 1, 2});
  for (auto& k : kids) k.join();
  out("n_waiting after", b.n_waiting(), "broken", b.broken());

  mproc::Barrier b2(2);
  mproc::Queue<std::string> said;
  mproc::Process child([b2, said]() mutable {
    try {
      (void)b2.wait(hang);
      said.put("passed");
    } catch (const mproc::BrokenBarrierError&) {
      said.put("BrokenBarrierError");
    }
  });
  child.start();
  out("one waiting", wait_for_waiting(b2, 1));
  b2.abort();
  out("the waiting party got", said.get(hang));
  child.join();
  out("broken after abort", b2.broken());
  try {
    (void)b2.wait(hang);
    out("wait on a broken barrier passed");
  } catch (const mproc::BrokenBarrierError&) {
    out("wait on a broken barrier: BrokenBarrierError");
  }
  b2.reset();
  out("broken after reset", b2.broken());

  mproc::Barrier b3(2);
  try {
    (void)b3.wait(50ms);
    out("wait(0.05) alone passed");
  } catch (const mproc::BrokenBarrierError&) {
    out("wait(0.05) alone: BrokenBarrierError");
  }
  out("broken after the timeout", b3.broken());
}

// ---------------------------------------------------------------- Process exit codes

void process_exitcode() {
  const std::vector<std::pair<const char*, std::function<void()>>> targets = {
      {"return", [] {}},
      {"exit(3)", [] { std::exit(3); }},
      {"exception",
       [] {
         std::freopen("/dev/null", "w", stderr);  // the printed exception is not an observable here
         throw std::runtime_error("boom");
       }},
      {"abort", [] { std::abort(); }},
  };
  for (const auto& [name, target] : targets) {
    mproc::Process p(target);
    p.start();
    p.join();
    out(name, "exitcode", p.exitcode());
  }
  for (const char* name : {"terminate", "kill"}) {
    mproc::Process p([] { std::this_thread::sleep_for(hang); });
    p.start();
    out(name, "exitcode before", p.exitcode(), "alive", p.is_alive());
    if (std::string(name) == "terminate") p.terminate();
    else p.kill();
    p.join();
    out(name, "exitcode", p.exitcode(), "alive", p.is_alive());
  }
  mproc::Process p([] { std::this_thread::sleep_for(hang); });
  p.start();
  (void)p.join(50ms);
  out("join(0.05) alive", p.is_alive());
  p.kill();
  p.join();
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, void (*)()> scenarios = {
      {"pool_map", pool_map},
      {"pool_imap", pool_imap},
      {"pool_imap_unordered", pool_imap_unordered},
      {"pool_starmap", pool_starmap},
      {"pool_imap_error", pool_imap_error},
      {"pool_map_error", pool_map_error},
      {"pool_free_worker", pool_free_worker},
      {"pool_apply_callbacks", pool_apply_callbacks},
      {"queue_fifo", queue_fifo},
      {"queue_empty_full", queue_empty_full},
      {"event", event},
      {"condition", condition},
      {"barrier", barrier},
      {"process_exitcode", process_exitcode},
  };
  const auto it = argc == 2 ? scenarios.find(argv[1]) : scenarios.end();
  if (it == scenarios.end()) {
    std::fprintf(stderr, "usage: differential_scenarios <scenario>; scenarios:");
    for (const auto& [name, run] : scenarios) std::fprintf(stderr, " %s", name.c_str());
    std::fprintf(stderr, "\n");
    return 2;
  }
  try {
    it->second();
  } catch (const std::exception& e) {
    std::printf("uncaught exception: %s\n", e.what());
    return 1;
  }
  return 0;
}
