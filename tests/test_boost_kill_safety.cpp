// Why mproc keeps its own shared memory rather than Boost.Interprocess's, shown by
// running both: 4 processes mutate a list and a map in shared memory while one of
// them is SIGKILLed at a random instant, again and again, a replacement taking its
// place each time. Three sides run the same workload:
// - Boost.Interprocess: a vector and a map in a managed_shared_memory segment, each
//   under an interprocess_mutex (bench/boost_baseline.hpp, BoostLocks);
// - the same with robust pthread mutexes, for the containers and plugged into the
//   segment's allocator (RobustLocks);
// - an mproc Manager's SharedList and SharedDict.
// After every kill, each live process (the replacement too) must finish an operation
// and then pause; a checker process (forked, so that a corrupt structure can crash or
// trap it without harm) checks both containers and the segment, and the processes go
// on. A hang (nobody can take a lock any more) or a corruption ends the round: the
// processes are killed and the side starts again on a fresh segment. The Boost sides'
// hangs and corruptions are counted and printed, as the evidence; mproc's must be zero.
//
// Every process runs operation after operation j = 0, 1, ... as incarnation i (a number
// no other process of the side had), with keys key_of(i, j):
//   list: append key_of(i, j); then, if it holds list_cap items or more, clear it;
//   map:  set key_of(i, j) to value_of(it), read it back, and erase its own key of
//         `window` operations before (which must be there);
// and publishes how many operations it finished. From those counts alone the checker
// knows what the containers must hold: in the list, each process's keys in order with
// no gap, up to its last finished append (a clear takes them all); in the map, each
// process's last `window` keys, with the right values, and none that it erased. A
// killed process may have left its last operation half done: either way is right.

#include "reliability_support.hpp"  // first: it registers the /dev/shm listener

#include "boost_baseline.hpp"

#include <mproc/detail/os/child.hpp>
#include <mproc/detail/os/futex.hpp>
#include <mproc/detail/shm/shared_mapping.hpp>
#include <mproc/manager.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using mproc::detail::Child;
using mproc_bench::BoostGuarded;
using mproc_bench::BoostLocks;
using mproc_bench::BoostMap;
using mproc_bench::BoostSegment;
using mproc_bench::BoostVector;
using mproc_bench::RobustLocks;
using Clock = std::chrono::steady_clock;

constexpr int workers = 4;
// Under AddressSanitizer (g++'s, as the sanitizer build uses) every fork costs several
// times as much: half the kills keep the run about as long.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kills_per_side = 100;
#else
constexpr int kills_per_side = 200;
#endif
constexpr int max_incarnations = 2048;
constexpr std::size_t list_cap = 256;
constexpr std::uint64_t window = 32;
// The longest random wait before a kill.
constexpr auto max_wait = std::chrono::microseconds(5000);
// A hang: no operation finished for no_progress_limit, or every running process asleep
// with none finished over deadlock_samples looks sample_every apart (each waits for a
// lock whose holder is dead, or for a wake-up that was lost: see asleep_on_free_lock).
// The looks span 300 ms, three of mproc's lock-wait slices (100 ms): a lost wake-up that
// a slice's re-check ends is not a hang, whatever the load on the machine.
constexpr auto no_progress_limit = std::chrono::seconds(5);
constexpr auto sample_every = std::chrono::milliseconds(25);
constexpr int deadlock_samples = 12;
// Generous: a check takes milliseconds; only a checker trapped in a corrupt structure
// (a cycle) gets there.
constexpr auto check_limit = std::chrono::seconds(10);

std::int64_t key_of(int incarnation, std::uint64_t j) {
  return static_cast<std::int64_t>((static_cast<std::uint64_t>(incarnation) << 32) | j);
}
int incarnation_of(std::int64_t key) { return static_cast<int>(static_cast<std::uint64_t>(key) >> 32); }
std::uint64_t seq_of(std::int64_t key) { return static_cast<std::uint64_t>(key) & 0xffffffffu; }
std::int64_t value_of(std::int64_t key) {
  return static_cast<std::int64_t>((static_cast<std::uint64_t>(key) * 0x9E3779B97F4A7C15u) >> 1);
}

/// One process's progress, on a cache line of its own.
struct alignas(64) Incarnation {
  std::atomic<std::uint64_t> done{0};          // operations finished
  std::atomic<std::uint32_t> paused_for{0};    // the last pause request it is paused for
  std::atomic<std::uint32_t> killed{0};        // the supervisor killed it (maybe in an operation)
};

/// What the supervisor, the processes and the checker share (outside the segment under test).
struct Board {
  std::atomic<std::uint32_t> pause{0};  // futex word: a pause request's number, 0 to run
  std::atomic<std::uint32_t> acks{0};   // futex word: bumped by each process that pauses
  std::atomic<std::uint32_t> stop{0};   // the processes leave before their next operation
  char finding[512]{};                  // the checker's first finding; empty if none
  Incarnation incarnations[max_incarnations];
};

/// What the checker knows: the incarnations of this round (first..end-1), how many
/// operations each had finished, and which were killed, maybe in an operation. The
/// others are paused or stopped between two operations.
struct Expect {
  int first = 0;
  int end = 0;
  std::vector<std::uint64_t> done;
  std::vector<bool> killed;

  bool valid(int i) const { return i >= first && i < end; }
  std::uint64_t done_by(int i) const { return done[index(i)]; }
  bool was_killed(int i) const { return killed[index(i)]; }
  /// Whether operation j of i may have left a trace: it finished, or i was killed in it.
  bool may_have_run(int i, std::uint64_t j) const { return j < done_by(i) || (j == done_by(i) && was_killed(i)); }

 private:
  std::size_t index(int i) const { return static_cast<std::size_t>(i - first); }
};

/// The first problem in a list's items, or "".
std::string check_list_items(const std::vector<std::int64_t>& items, const Expect& e) {
  if (items.size() > list_cap + workers) return "list: more items than it can hold";
  std::map<int, std::uint64_t> last;  // incarnation -> its last seq seen
  for (std::int64_t x : items) {
    const int i = incarnation_of(x);
    const std::uint64_t j = seq_of(x);
    if (!e.valid(i)) return "list: an item nobody wrote";
    if (!e.may_have_run(i, j)) return "list: an item its process never appended";
    const auto it = last.find(i);
    if (it != last.end() && j != it->second + 1) return "list: a process's items out of order, repeated or with a gap";
    last[i] = j;
  }
  // A process's items run up to its last finished append: a clear after that append
  // would have taken them all.
  for (const auto& [i, j] : last) {
    if (j + 1 < e.done_by(i)) return "list: an append that had finished is missing";
  }
  return "";
}

/// The first problem in a map's (key, value) pairs, or "".
std::string check_map_items(const std::vector<std::pair<std::int64_t, std::int64_t>>& items, const Expect& e) {
  std::map<int, std::set<std::uint64_t>> seqs;
  for (const auto& [k, v] : items) {
    const int i = incarnation_of(k);
    const std::uint64_t j = seq_of(k);
    if (!e.valid(i)) return "map: a key nobody set";
    if (!e.may_have_run(i, j)) return "map: a key its process never set";
    if (v != value_of(k)) return "map: a wrong value";
    if (!seqs[i].insert(j).second) return "map: a key twice";
    // Operation j + window erases key j.
    if (j + window < e.done_by(i)) return "map: a key that was erased is still there";
  }
  // Keys set by a finished operation and not erased by a started one must be there.
  for (int i = e.first; i < e.end; ++i) {
    const std::uint64_t erase_started = e.done_by(i) + (e.was_killed(i) ? 1 : 0);  // operations begun
    const std::uint64_t from = erase_started > window ? erase_started - window : 0;
    for (std::uint64_t j = from; j < e.done_by(i); ++j) {
      if (seqs[i].count(j) == 0) return "map: a key that was set (and not erased) is missing";
    }
  }
  return "";
}

// A side of the comparison: reset() makes fresh containers (no process running),
// run_operation() is operation j of an incarnation (false if the process found its own
// key missing or wrong), check() reads the containers in the checker, returning what it
// finds wrong in the structures themselves.

template <class Locks>
class BoostSide {
 public:
  using Vector = BoostVector<std::int64_t, Locks>;
  using Map = BoostMap<std::int64_t, std::int64_t, Locks>;

  explicit BoostSide(const char* name) : name_(name) {}
  const char* name() const { return name_; }

  void reset() {
    segment_.reset();
    segment_.emplace(std::size_t{16} << 20);
    list_ = segment_->template make<BoostGuarded<Vector, Locks>>(segment_->manager());
    map_ = segment_->template make<BoostGuarded<Map, Locks>>(segment_->manager());
  }

  bool run_operation(int incarnation, std::uint64_t j) {
    const std::int64_t key = key_of(incarnation, j);
    {
      std::lock_guard hold(list_->mutex);
      list_->data.push_back(key);
    }
    {
      std::lock_guard hold(list_->mutex);
      if (list_->data.size() >= list_cap) {
        list_->data.clear();
        list_->data.shrink_to_fit();  // as SharedList::clear, give the memory back
      }
    }
    {
      std::lock_guard hold(map_->mutex);
      map_->data.insert_or_assign(key, value_of(key));
    }
    bool ok;
    {
      std::lock_guard hold(map_->mutex);
      const auto it = map_->data.find(key);
      ok = it != map_->data.end() && it->second == value_of(key);
    }
    if (j >= window) {
      std::lock_guard hold(map_->mutex);
      ok = map_->data.erase(key_of(incarnation, j - window)) == 1 && ok;
    }
    return ok;
  }

  /// Reads both containers, checking what Boost's structures promise on the way (with a
  /// bounded walk: a cycle is a finding, not a hang), then the segment's allocator.
  std::string check(std::vector<std::int64_t>& list_items,
                    std::vector<std::pair<std::int64_t, std::int64_t>>& map_items) {
    auto& memory = segment_->memory();
    const Vector& v = list_->data;
    if (v.size() > v.capacity()) return "vector: size above capacity";
    if (v.capacity() > 0 && !memory.belongs_to_segment(v.data())) return "vector: its buffer is outside the segment";
    if (v.size() > list_cap + workers) return "list: more items than it can hold";
    list_items.assign(v.begin(), v.end());

    const Map& m = map_->data;
    const std::size_t size = m.size();
    std::size_t count = 0;
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (++count > size) return "map: walking it does not end after size() nodes";
      if (!memory.belongs_to_segment(&*it)) return "map: a node outside the segment";
      if (!map_items.empty() && it->first <= map_items.back().first) return "map: keys out of order";
      map_items.emplace_back(it->first, it->second);
    }
    if (count != size) return "map: fewer nodes than size()";
    for (const auto& [k, value] : map_items) {
      const auto it = m.find(k);
      if (it == m.end() || it->first != k) return "map: find() misses a key that is there";
    }
    if (!memory.check_sanity()) return "segment: the allocator's check_sanity() fails";
    return "";
  }

  std::uint64_t repairs() const { return 0; }

 private:
  const char* name_;
  std::optional<BoostSegment<Locks>> segment_;
  BoostGuarded<Vector, Locks>* list_ = nullptr;
  BoostGuarded<Map, Locks>* map_ = nullptr;
};

class MprocSide {
 public:
  const char* name() const { return "mproc Manager"; }

  void reset() {
    list_.reset();
    dict_.reset();
    manager_.emplace();
    list_.emplace(manager_->list<std::int64_t>());
    dict_.emplace(manager_->dict<std::int64_t, std::int64_t>());
  }

  bool run_operation(int incarnation, std::uint64_t j) {
    const std::int64_t key = key_of(incarnation, j);
    list_->append(key);
    if (list_->size() >= list_cap) list_->clear();
    dict_->set(key, value_of(key));
    bool ok = dict_->get(key) == value_of(key);
    if (j >= window) ok = dict_->erase(key_of(incarnation, j - window)) && ok;
    return ok;
  }

  std::string check(std::vector<std::int64_t>& list_items,
                    std::vector<std::pair<std::int64_t, std::int64_t>>& map_items) {
    list_items = list_->snapshot();
    map_items = dict_->items();
    if (list_->size() != list_items.size()) return "list: size() disagrees with its items";
    if (dict_->size() != map_items.size()) return "dict: size() disagrees with its items";
    for (const auto& [k, v] : map_items) {
      if (dict_->get(k) != v) return "dict: get() disagrees with items()";
    }
    return "";
  }

  std::uint64_t repairs() const { return list_->owner_deaths() + dict_->owner_deaths(); }

 private:
  std::optional<mproc::Manager> manager_;
  std::optional<mproc::SharedList<std::int64_t>> list_;
  std::optional<mproc::SharedDict<std::int64_t, std::int64_t>> dict_;
};

/// What happened to one side.
struct Tally {
  std::string name;
  int kills = 0;
  int dead_holders = 0;    // processes asleep on a lock whose holder is dead
  int lost_wakeups = 0;    // processes asleep on a lock that is free (see asleep_on_free_lock)
  int stalls = 0;          // no operation finished for no_progress_limit, someone running
  int corrupt_checks = 0;  // the checker found a broken container or segment, crashed or was trapped
  int crashes = 0;         // a process died on its own, threw, or found its own key missing or wrong
  int rounds = 0;          // fresh segments
  std::uint64_t operations = 0;
  std::uint64_t repairs = 0;  // half-done operations mproc finished or undid
  std::map<std::string, int> findings;
  double seconds = 0;

  int hangs() const { return dead_holders + lost_wakeups + stalls; }
  int corruptions() const { return corrupt_checks + crashes; }
  void found(const std::string& what) { ++findings[what]; }
  std::string describe() const {
    char text[512];
    std::snprintf(text, sizeof text,
                  "%s: %d kills, %d hangs (%d on a dead holder's lock, %d asleep on a free lock, %d with no progress), "
                  "%d corruptions (%d found by the checker, %d in the processes); %d segments, %llu operations, %.1f s",
                  name.c_str(), kills, hangs(), dead_holders, lost_wakeups, stalls, corruptions(), corrupt_checks,
                  crashes, rounds, static_cast<unsigned long long>(operations), seconds);
    std::string out = text;
    if (repairs > 0) out += ", " + std::to_string(repairs) + " half-done operations repaired";
    for (const auto& [what, n] : findings) out += "\n    " + std::to_string(n) + " x " + what;
    return out;
  }
};

/// Whether process pid sleeps in a futex wait on a word that now reads 0: a free
/// mutex. A robust pthread mutex can leave a waiter so when the waiter its unlock
/// woke is killed before it takes the mutex, and a third process takes it meanwhile
/// without waiting (so without marking it contended): that one's unlock wakes nobody,
/// and the kernel, finding the mutex held when the woken one dies, passes the wake-up
/// on to nobody either. The waiter sleeps until some other process contends.
bool asleep_on_free_lock(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  std::ifstream syscall(proc + "/syscall");  // "202 0x<futex word> ...": blocked in futex()
  long number = -1;
  std::uintptr_t address = 0;
  syscall >> number >> std::hex >> address;
  if (!syscall || number != SYS_futex) return false;
  std::ifstream memory(proc + "/mem", std::ios::binary);
  std::uint32_t word = 1;
  memory.seekg(static_cast<std::streamoff>(address));
  memory.read(reinterpret_cast<char*>(&word), sizeof word);
  return memory && word == 0;
}

/// Restores the default action of the signals the test runner catches, in a forked
/// process: a crash there is this test's data, not a failure of the runner.
void default_crash_signals() {
  for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE}) std::signal(sig, SIG_DFL);
}

/// The kill loop on one side.
template <class Side>
class Run {
 public:
  explicit Run(Side& side) : side_(side), board_(new(mapping_.data()) Board) { tally_.name = side.name(); }
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;
  ~Run() { kill_all(); }

  Tally go() {
    const auto start = Clock::now();
    std::mt19937 rng(12345);
    start_round();
    while (tally_.kills < kills_per_side) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % static_cast<unsigned>(max_wait.count())));
      Slot& slot = slots_[rng() % workers];
      board_->incarnations[slot.incarnation].killed.store(1);
      slot.child.kill(SIGKILL);
      const auto status = slot.child.wait(mproc::detail::Deadline::after(mproc_test::hang_limit));
      REQUIRE(status.has_value());
      ++tally_.kills;
      if (status->signal != SIGKILL) {  // it had died on its own first
        crashed(*status);
        continue;
      }
      spawn(slot);
      if (!pause_all()) continue;
      const bool sound = check();
      resume();
      if (!sound) end_round();
    }
    stop_round();
    tally_.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    tally_.repairs = side_.repairs();
    return tally_;
  }

 private:
  struct Slot {
    Child child;
    int incarnation = -1;
  };

  void start_round() {
    side_.reset();
    ++tally_.rounds;
    board_->stop.store(0);
    first_ = next_;
    for (auto& slot : slots_) spawn(slot);
  }

  void spawn(Slot& slot) {
    REQUIRE(next_ < max_incarnations);
    const int incarnation = next_++;
    slot.incarnation = incarnation;
    const pid_t parent = ::getpid();
    slot.child = mproc_test::spawn([this, incarnation, parent] {
      (void)::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) return 0;
      default_crash_signals();
      try {
        return work(incarnation);
      } catch (...) {
        return 4;
      }
    });
  }

  /// A process's loop: operations until told to stop, pausing between two when asked,
  /// once it has finished an operation since the request.
  int work(int incarnation) {
    Incarnation& me = board_->incarnations[incarnation];
    std::uint32_t noticed = 0;  // the last pause request seen
    std::uint64_t noticed_at = 0;
    for (std::uint64_t j = 0;; ++j) {
      for (;;) {
        if (board_->stop.load(std::memory_order_acquire) != 0) return 0;
        const std::uint32_t request = board_->pause.load(std::memory_order_acquire);
        if (request == 0) break;
        if (request != noticed) {
          noticed = request;
          noticed_at = j;
        }
        if (j == noticed_at) break;  // one operation first
        if (me.paused_for.exchange(request) != request) {
          board_->acks.fetch_add(1, std::memory_order_release);
          mproc::detail::futex_wake(board_->acks);
        }
        (void)mproc::detail::futex_wait(board_->pause, request, mproc::detail::Deadline::after(mproc_test::hang_limit));
      }
      if (!side_.run_operation(incarnation, j)) return 3;
      me.done.store(j + 1, std::memory_order_release);
    }
  }

  /// After a kill: asks every live process to finish an operation and pause, and waits
  /// until they all have. On a hang or a crash, counts it, starts a new round and
  /// returns false.
  bool pause_all() {
    const std::uint32_t request = ++pause_requests_;
    board_->pause.store(request, std::memory_order_release);
    auto last_progress = Clock::now();
    std::uint64_t last_total = total_done();
    int asleep = 0;
    for (;;) {
      const std::uint32_t acks = board_->acks.load(std::memory_order_acquire);
      if (std::all_of(slots_.begin(), slots_.end(), [&](const Slot& s) { return paused(s, request); })) return true;
      if (mproc::detail::futex_wait(board_->acks, acks, mproc::detail::Deadline::after(sample_every))) continue;
      for (auto& slot : slots_) {
        if (slot.child.try_reap()) {
          resume();
          crashed(*slot.child.status());
          return false;
        }
      }
      const std::uint64_t total = total_done();
      if (total != last_total) {
        last_total = total;
        last_progress = Clock::now();
        asleep = 0;
      } else {
        asleep = all_running_asleep(request) ? asleep + 1 : 0;
      }
      if (asleep >= deadlock_samples || Clock::now() - last_progress > no_progress_limit) {
        if (asleep < deadlock_samples) ++tally_.stalls;
        else if (std::any_of(slots_.begin(), slots_.end(),
                             [&](const Slot& s) { return !paused(s, request) && asleep_on_free_lock(s.child.pid()); }))
          ++tally_.lost_wakeups;
        else ++tally_.dead_holders;
        resume();
        end_round();
        return false;
      }
    }
  }

  bool paused(const Slot& s, std::uint32_t request) const {
    return board_->incarnations[s.incarnation].paused_for.load(std::memory_order_acquire) == request;
  }

  /// Whether every process not yet paused sleeps (in a futex: waiting for a lock).
  bool all_running_asleep(std::uint32_t request) const {
    return std::all_of(slots_.begin(), slots_.end(), [&](const Slot& s) {
      if (paused(s, request)) return true;
      const auto stat = mproc_test::proc_stat(s.child.pid());
      return stat && stat->state == 'S';
    });
  }

  void resume() {
    board_->pause.store(0, std::memory_order_release);
    mproc::detail::futex_wake(board_->pause);
  }

  std::uint64_t total_done() const {
    std::uint64_t total = 0;
    for (int i = first_; i < next_; ++i) total += board_->incarnations[i].done.load(std::memory_order_relaxed);
    return total;
  }

  /// Checks the containers in a forked checker, every process paused, stopped or dead;
  /// false (counted) on a finding.
  bool check() {
    board_->finding[0] = '\0';
    Child checker = mproc_test::spawn([this] {
      (void)::prctl(PR_SET_PDEATHSIG, SIGKILL);
      default_crash_signals();
      Expect e;
      e.first = first_;
      e.end = next_;
      for (int i = first_; i < next_; ++i) {
        e.done.push_back(board_->incarnations[i].done.load(std::memory_order_acquire));
        e.killed.push_back(board_->incarnations[i].killed.load() != 0);
      }
      std::vector<std::int64_t> list_items;
      std::vector<std::pair<std::int64_t, std::int64_t>> map_items;
      std::string finding;
      try {
        finding = side_.check(list_items, map_items);
      } catch (const std::exception& ex) {
        finding = std::string("an exception reading the containers: ") + ex.what();
      }
      if (finding.empty()) finding = check_list_items(list_items, e);
      if (finding.empty()) finding = check_map_items(map_items, e);
      std::snprintf(board_->finding, sizeof board_->finding, "%s", finding.c_str());
      return 0;
    });
    const auto status = checker.wait(mproc::detail::Deadline::after(check_limit));
    std::string finding;
    if (!status) {
      checker.kill(SIGKILL);
      checker.wait();
      finding = "the checker was trapped (a cycle?)";
    } else if (!status->clean()) {
      finding = "the checker died: " + status->describe();
    } else {
      finding = board_->finding;
    }
    if (finding.empty()) return true;
    ++tally_.corrupt_checks;
    tally_.found(finding);
    return false;
  }

  void crashed(const mproc::detail::ExitStatus& status) {
    ++tally_.crashes;
    if (status.exit_code == 3) tally_.found("a process found its own key missing or wrong");
    else if (status.exit_code == 4) tally_.found("a process got an exception");
    else tally_.found("a process died: " + status.describe());
    end_round();
  }

  void end_round() {
    kill_all();
    tally_.operations += total_done();
    start_round();
  }

  /// The end: the processes stop between two operations, and a last check.
  void stop_round() {
    board_->stop.store(1);
    resume();
    const auto deadline = Clock::now() + no_progress_limit;
    bool stopped = true;
    for (auto& slot : slots_) {
      const auto status = slot.child.wait(mproc::detail::Deadline::at(deadline));
      if (!status) {
        ++tally_.stalls;
        stopped = false;
        break;
      }
      if (!status->clean()) {
        ++tally_.crashes;
        tally_.found("a process died: " + status->describe());
        stopped = false;
      }
    }
    kill_all();
    if (stopped) (void)check();
    tally_.operations += total_done();
  }

  void kill_all() {
    for (auto& slot : slots_) {
      if (slot.child.running()) {
        slot.child.kill(SIGKILL);
        slot.child.wait();
      }
    }
  }

  Side& side_;
  mproc::detail::SharedMapping mapping_{sizeof(Board)};
  Board* board_;
  std::array<Slot, workers> slots_;
  int next_ = 0;   // the next incarnation number
  int first_ = 0;  // the first incarnation of this round
  std::uint32_t pause_requests_ = 0;
  Tally tally_;
};

template <class Side>
Tally run_side(Side& side) {
  Run<Side> run(side);
  Tally tally = run.go();
  std::printf("%s\n", tally.describe().c_str());
  std::fflush(stdout);
  return tally;
}

}  // namespace

TEST_CASE("Processes SIGKILLed at random: Boost.Interprocess's containers hang or break, mproc's Manager does not") {
  BoostSide<BoostLocks> boost_mutex("Boost.Interprocess, interprocess_mutex");
  BoostSide<RobustLocks> boost_robust("Boost.Interprocess, robust mutexes");
  MprocSide mproc_side;

  const Tally with_mutex = run_side(boost_mutex);
  const Tally with_robust = run_side(boost_robust);
  const Tally with_mproc = run_side(mproc_side);
  INFO(with_mutex.describe());
  INFO(with_robust.describe());
  INFO(with_mproc.describe());

  // Every side went through its kills, and its processes did work between them.
  for (const Tally* t : {&with_mutex, &with_robust, &with_mproc}) {
    CHECK(t->kills == kills_per_side);
    CHECK(t->operations > static_cast<std::uint64_t>(kills_per_side));
  }
  // Boost's counts are the evidence, whatever they are; mproc's must be zero.
  CHECK(with_mproc.hangs() == 0);
  CHECK(with_mproc.corruptions() == 0);
}
