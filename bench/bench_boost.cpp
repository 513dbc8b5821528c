// mproc's shared state against Boost.Interprocess doing the same jobs in a
// managed_shared_memory segment (bench/boost_baseline.hpp): a Value<int> under its
// Lock against an int under a mutex, SharedList<int>::append against a vector's
// push_back, SharedDict<int, int> set and get against a map's insert and find. Boost is
// timed twice, with its own interprocess_mutex and with robust pthread mutexes, the
// only way its segment survives a killed holder without a hang (tests/
// test_boost_kill_safety.cpp). Each workload runs in 1 process and in 2 contending
// ones; every iteration times the three sides one after the other, in an order that
// rotates, so the machine's load hits each alike. mproc's time is the benchmark's own;
// the counters boost_mutex_per_second and boost_robust_per_second are Boost's rates
// over the same iterations. bench/compare.py holds mproc against the robust figure.
// No Python twin: Python has no Boost.
#include "bench_support.hpp"
#include "boost_baseline.hpp"
#include "processes.hpp"

#include <mproc/manager.hpp>
#include <mproc/shared.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>

namespace {

using mproc_bench::BoostGuarded;
using mproc_bench::BoostLocks;
using mproc_bench::BoostMap;
using mproc_bench::BoostSegment;
using mproc_bench::BoostVector;
using mproc_bench::check;
using mproc_bench::RobustLocks;
using mproc_bench::scaled;

/// Runs target(p) in `processes` processes at once; with 1, in this one. Whether every
/// run was right.
template <class Target>
bool run_in(int processes, const Target& target) {
  if (processes > 1) return mproc_bench::run_in_processes(processes, target);
  Target copy = target;
  if constexpr (std::is_same_v<std::invoke_result_t<Target&, int>, bool>) {
    return copy(0);
  } else {
    copy(0);
    return true;
  }
}

/// Times run() of each side once per iteration, in an order that rotates, and reports
/// mproc's time as the iteration's (UseManualTime) and Boost's two rates as counters.
/// A side is an object with bool run(int processes, double& seconds), which prepares,
/// times only the work and checks the result.
template <class Mproc, class BoostMutex, class BoostRobust>
void time_sides(benchmark::State& state, Mproc& mproc_side, BoostMutex& boost_mutex, BoostRobust& boost_robust,
                double items_per_process, const char* what) {
  const int processes = static_cast<int>(state.range(0));
  std::array<double, 3> seconds{};
  bool ok = true;
  int round = 0;
  for (auto _ : state) {
    const double mproc_before = seconds[0];
    for (int k = 0; k < 3 && ok; ++k) {
      switch ((round + k) % 3) {
        case 0:
          ok = mproc_side.run(processes, seconds[0]);
          break;
        case 1:
          ok = boost_mutex.run(processes, seconds[1]);
          break;
        default:
          ok = boost_robust.run(processes, seconds[2]);
          break;
      }
    }
    ++round;
    state.SetIterationTime(seconds[0] - mproc_before);
  }
  if (!check(state, ok, what)) return;
  const double items = static_cast<double>(state.iterations()) * processes * items_per_process;
  state.counters["boost_mutex_per_second"] = items / seconds[1];
  state.counters["boost_robust_per_second"] = items / seconds[2];
  state.SetItemsProcessed(static_cast<std::int64_t>(items));
}

/// Times work() and adds its seconds to total.
template <class Work>
bool timed(double& total, Work&& work) {
  const auto start = std::chrono::steady_clock::now();
  const bool ok = work();
  total += mproc_bench::seconds_since(start);
  return ok;
}

// A segment big enough for every workload here (address space: pages are used as touched).
constexpr std::size_t segment_bytes = std::size_t{256} << 20;

// ------------------------------------------------------------------ Value + Lock

int increments_per_process() { return static_cast<int>(scaled(1'000'000)); }

struct MprocCounter {
  mproc::Value<int> value{0};
  bool run(int processes, double& seconds) {
    const int n = increments_per_process();
    value.store(0);
    return timed(seconds,
                 [&] {
                   return run_in(processes, [v = value, n](int) mutable {
                     for (int i = 0; i < n; ++i) {
                       std::lock_guard hold(v.get_lock());
                       ++v.value();
                     }
                   });
                 }) &&
           value.load() == processes * n;
  }
};

template <class Locks>
struct BoostCounter {
  BoostSegment<Locks> segment{segment_bytes};
  BoostGuarded<int, Locks>* counter = segment.template make<BoostGuarded<int, Locks>>(0);
  bool run(int processes, double& seconds) {
    const int n = increments_per_process();
    counter->data = 0;
    return timed(seconds,
                 [&] {
                   return run_in(processes, [c = counter, n](int) {
                     for (int i = 0; i < n; ++i) {
                       std::lock_guard hold(c->mutex);
                       ++c->data;
                     }
                   });
                 }) &&
           counter->data == processes * n;
  }
};

// Each increment under the lock: `std::lock_guard hold(v.get_lock()); ++v.value();`
// against the same on an int beside a mutex in a managed segment.
void boost_value_increments(benchmark::State& state) {
  MprocCounter mproc_side;
  BoostCounter<BoostLocks> boost_mutex;
  BoostCounter<RobustLocks> boost_robust;
  time_sides(state, mproc_side, boost_mutex, boost_robust, increments_per_process(),
             "every side counted every increment");
}
BENCHMARK(boost_value_increments)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);

// --------------------------------------------------------------------- list append

int appends_per_process() { return static_cast<int>(scaled(500'000)); }

/// Whether items holds 0..n-1 once per process, each process's in its order.
bool holds_every_append(const std::vector<int>& items, int processes, int n) {
  std::vector<int> seen(static_cast<std::size_t>(n), 0);
  bool ok = items.size() == static_cast<std::size_t>(processes) * static_cast<std::size_t>(n);
  for (int x : items) ok = ok && x >= 0 && x < n && ++seen[static_cast<std::size_t>(x)] <= processes;
  return ok;
}

struct MprocList {
  mproc::Manager manager;
  mproc::SharedList<int> list = manager.list<int>();
  bool run(int processes, double& seconds) {
    const int n = appends_per_process();
    const bool ok = timed(seconds, [&] {
      return run_in(processes, [l = list, n](int) mutable {
        for (int i = 0; i < n; ++i) l.append(i);
      });
    });
    const bool right = ok && holds_every_append(list.snapshot(), processes, n);
    list.clear();
    return right;
  }
};

template <class Locks>
struct BoostList {
  using Vector = BoostVector<int, Locks>;
  BoostSegment<Locks> segment{segment_bytes};
  BoostGuarded<Vector, Locks>* list = segment.template make<BoostGuarded<Vector, Locks>>(segment.manager());
  bool run(int processes, double& seconds) {
    const int n = appends_per_process();
    const bool ok = timed(seconds, [&] {
      return run_in(processes, [l = list, n](int) {
        for (int i = 0; i < n; ++i) {
          std::lock_guard hold(l->mutex);
          l->data.push_back(i);
        }
      });
    });
    const bool right = ok && holds_every_append(std::vector<int>(list->data.begin(), list->data.end()), processes, n);
    // As SharedList::clear, give the memory back: every round grows the vector anew.
    list->data.clear();
    list->data.shrink_to_fit();
    return right;
  }
};

// SharedList<int>::append of 0..n-1 against push_back on a boost::interprocess::vector<int>
// under its mutex; each process appends n.
void boost_list_append(benchmark::State& state) {
  MprocList mproc_side;
  BoostList<BoostLocks> boost_mutex;
  BoostList<RobustLocks> boost_robust;
  time_sides(state, mproc_side, boost_mutex, boost_robust, appends_per_process(), "every side holds every append");
}
BENCHMARK(boost_list_append)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);

// ----------------------------------------------------------------- dict insert, get

int inserts_per_process() { return static_cast<int>(scaled(200'000)); }
int lookups_per_process() { return static_cast<int>(scaled(200'000)); }
int lookup_keys() { return static_cast<int>(scaled(100'000)); }

// Process p inserts the keys p*n .. p*n + n-1, each with its square (mod 2^31) as value.
int value_of(int key) { return static_cast<int>((static_cast<std::int64_t>(key) * key) & 0x7fffffff); }

/// The key of process p's i-th lookup, spread over keys 0..keys-1.
int lookup_key(int p, int i, int keys) { return static_cast<int>((static_cast<std::int64_t>(i) * 7919 + p) % keys); }

/// Process p's lookups should find these values in total.
std::int64_t expected_lookup_sum(int p, int n, int keys) {
  std::int64_t sum = 0;
  for (int i = 0; i < n; ++i) sum += value_of(lookup_key(p, i, keys));
  return sum;
}

struct MprocDict {
  mproc::Manager manager;
  mproc::SharedDict<int, int> dict = manager.dict<int, int>();

  bool insert(int processes, double& seconds) {
    const int n = inserts_per_process();
    const bool ok = timed(seconds, [&] {
      return run_in(processes, [d = dict, n](int p) mutable {
        for (int k = p * n; k < (p + 1) * n; ++k) d.set(k, value_of(k));
      });
    });
    bool right = ok && dict.size() == static_cast<std::size_t>(processes) * static_cast<std::size_t>(n);
    for (const auto& [k, v] : dict.items()) right = right && v == value_of(k);
    dict.clear();
    return right;
  }

  void fill(int keys) {
    for (int k = 0; k < keys; ++k) dict.set(k, value_of(k));
  }
  bool lookup(int processes, double& seconds) {
    const int n = lookups_per_process(), keys = lookup_keys();
    return timed(seconds, [&] {
      return run_in(processes, [d = dict, n, keys](int p) {
        std::int64_t sum = 0;
        for (int i = 0; i < n; ++i) sum += d.get(lookup_key(p, i, keys)).value_or(-1);
        return sum == expected_lookup_sum(p, n, keys);
      });
    });
  }
};

template <class Locks>
struct BoostDict {
  using Map = BoostMap<int, int, Locks>;
  BoostSegment<Locks> segment{segment_bytes};
  BoostGuarded<Map, Locks>* dict = segment.template make<BoostGuarded<Map, Locks>>(segment.manager());

  bool insert(int processes, double& seconds) {
    const int n = inserts_per_process();
    const bool ok = timed(seconds, [&] {
      return run_in(processes, [d = dict, n](int p) {
        for (int k = p * n; k < (p + 1) * n; ++k) {
          std::lock_guard hold(d->mutex);
          d->data.insert_or_assign(k, value_of(k));  // Python's d[k] = v, as SharedDict::set
        }
      });
    });
    bool right = ok && dict->data.size() == static_cast<std::size_t>(processes) * static_cast<std::size_t>(n);
    for (const auto& [k, v] : dict->data) right = right && v == value_of(k);
    dict->data.clear();
    return right;
  }

  void fill(int keys) {
    for (int k = 0; k < keys; ++k) dict->data.emplace(k, value_of(k));
  }
  bool lookup(int processes, double& seconds) {
    const int n = lookups_per_process(), keys = lookup_keys();
    return timed(seconds, [&] {
      return run_in(processes, [d = dict, n, keys](int p) {
        std::int64_t sum = 0;
        for (int i = 0; i < n; ++i) {
          std::lock_guard hold(d->mutex);
          const auto it = d->data.find(lookup_key(p, i, keys));
          sum += it == d->data.end() ? -1 : it->second;
        }
        return sum == expected_lookup_sum(p, n, keys);
      });
    });
  }
};

/// A dict side whose run() is insert().
template <class Dict>
struct Inserting : Dict {
  bool run(int processes, double& seconds) { return this->insert(processes, seconds); }
};

/// A dict side filled with lookup_keys() keys once, whose run() is lookup().
template <class Dict>
struct Looking : Dict {
  Looking() { this->fill(lookup_keys()); }
  bool run(int processes, double& seconds) { return this->lookup(processes, seconds); }
};

// SharedDict<int, int>::set of new keys against insert_or_assign on a
// boost::interprocess::map<int, int> under its mutex; each process inserts n keys of
// its own into an empty dict.
void boost_dict_insert(benchmark::State& state) {
  Inserting<MprocDict> mproc_side;
  Inserting<BoostDict<BoostLocks>> boost_mutex;
  Inserting<BoostDict<RobustLocks>> boost_robust;
  time_sides(state, mproc_side, boost_mutex, boost_robust, inserts_per_process(), "every side holds every key");
}
BENCHMARK(boost_dict_insert)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);

// SharedDict<int, int>::get against find on the map under its mutex; each process looks
// up n keys spread over a dict of 10^5.
void boost_dict_lookup(benchmark::State& state) {
  Looking<MprocDict> mproc_side;
  Looking<BoostDict<BoostLocks>> boost_mutex;
  Looking<BoostDict<RobustLocks>> boost_robust;
  time_sides(state, mproc_side, boost_mutex, boost_robust, lookups_per_process(), "every side found every value");
}
BENCHMARK(boost_dict_lookup)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) { return mproc_bench::run(argc, argv); }
