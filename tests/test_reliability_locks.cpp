// A lock holder killed: the next locker does not hang. Lock, RLock, the Manager's
// containers, Condition and Event waiters and Queue readers and writers are each
// covered with a process killed in the act (test_sync, test_manager, test_queue); here
// the holder is a Pool task, killed while other tasks queue on the same lock, and a
// task that dies inside Value::update, which leaves the value as it was.

#include "reliability_support.hpp"

#include <mproc/mproc.hpp>

#include <csignal>
#include <mutex>
#include <vector>

using mproc_test::iota_vector;

namespace {

/// How long a task waits for the victim to be in place: only reached if the pool
/// never runs the victim, which is then the failure the checks report.
constexpr auto victim_wait = mproc_test::hang_limit;

}  // namespace

TEST_CASE("a Pool task killed while holding an mproc::Lock does not hang the tasks that take it next") {
  // The tasks after the victim take the lock only once the victim holds it, so some
  // task always takes it after the death (else the other worker could finish them
  // all first, and nobody would find the dead holder's lock).
  mproc::Lock lock;
  mproc::Value<int> entered(0, lock);  // counted under the lock
  mproc::Value<int> takeovers(0, lock);
  mproc::Event victim_holds_it;
  mproc::Pool pool(
      [lock, entered, takeovers, victim_holds_it](int x) mutable {
        if (x > 7) (void)victim_holds_it.wait_for(victim_wait);
        std::lock_guard guard(lock);
        if (lock.owner_died()) ++takeovers.value();
        ++entered.value();
        if (x == 7) {
          victim_holds_it.set();
          mproc_test::die_by_signal(SIGKILL);  // holding the lock
        }
        return x;
      },
      {.processes = 2, .chunksize = 1});
  auto results = pool.imap(iota_vector(40));
  int ok = 0, lost = 0;
  for (int i = 0; i < 40; ++i) {
    try {
      const auto r = results.next();
      REQUIRE(r);
      CHECK(*r == i);
      ++ok;
    } catch (const mproc::WorkerLost&) {
      CHECK(i == 7);
      ++lost;
    }
  }
  CHECK(ok == 39);
  CHECK(lost == 1);
  CHECK(entered.load() == 40);
  CHECK(takeovers.load() == 1);  // exactly one locker found the dead holder's lock
  CHECK(lock.owner_deaths() == 1);
}

TEST_CASE("a Pool task killed inside Value::update leaves the Value usable by the next tasks") {
  // As above: the tasks after the victim update the value only once the victim is
  // inside its update, so one of them always locks after the death.
  mproc::Value<long> total(0);
  mproc::Event victim_inside;
  mproc::Pool pool(
      [total, victim_inside](int x) mutable {
        if (x > 3) (void)victim_inside.wait_for(victim_wait);
        total.update([x, &victim_inside](long& v) {
          v += x;
          if (x == 3) {
            victim_inside.set();
            mproc_test::die_by_signal(SIGKILL);  // inside the critical section
          }
        });
        return x;
      },
      {.processes = 2, .chunksize = 1, .retries = 0});
  auto results = pool.imap(iota_vector(20));
  int lost = 0;
  for (int i = 0; i < 20; ++i) {
    try {
      (void)results.next();
    } catch (const mproc::WorkerLost&) {
      ++lost;
    }
  }
  CHECK(lost == 1);
  // 0 + 1 + ... + 19 but the 3: update() writes the value back only once f returned,
  // so the task that died inside it changed nothing.
  CHECK(total.load() == 187);
  CHECK(total.get_lock().owner_deaths() == 1);
}
