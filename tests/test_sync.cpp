// Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier across
// processes: blocking, timeouts, holders that die, and handles sent to a Pool
// started before the objects existed. Children report through their exit codes;
// nothing here waits on time except the timeouts under test.

#include "shared_state_support.hpp"  // first: it configures Catch2

#include "blocked_support.hpp"

#include <mproc/pool.hpp>
#include <mproc/shared.hpp>
#include <mproc/sync.hpp>

#include <catch2/catch.hpp>

#include <sys/syscall.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <semaphore>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

using namespace std::chrono_literals;
using mproc_test::exit_code;
using mproc_test::spawn;

TEST_CASE("Lock: another process cannot take it while it is held") {
  mproc::Lock lock;
  lock.lock();
  auto busy = spawn([&] { return lock.try_lock() ? 1 : 0; });
  CHECK(exit_code(busy) == 0);
  lock.unlock();
  auto free = spawn([&] {
    if (!lock.try_lock()) return 1;
    lock.unlock();
    return 0;
  });
  CHECK(exit_code(free) == 0);
}

TEST_CASE("Lock: try_lock_for times out while another process holds it, lock() waits for it") {
  mproc::Lock lock;
  mproc::Event held, release;
  auto holder = spawn([&] {
    std::lock_guard guard(lock);
    held.set();
    release.wait();
    return 0;
  });
  held.wait();
  CHECK_FALSE(lock.try_lock_for(20ms));
  CHECK_FALSE(lock.try_lock_until(std::chrono::system_clock::now() + 20ms));
  CHECK_FALSE(lock.acquire(false));
  release.set();
  {
    std::unique_lock guard(lock);  // blocks until the holder lets go
    CHECK(guard.owns_lock());
    CHECK_FALSE(lock.owner_died());
  }
  CHECK(exit_code(holder) == 0);
  std::scoped_lock both(lock);
}

TEST_CASE("Lock: misuse throws instead of deadlocking") {
  mproc::Lock lock;
  lock.lock();
  CHECK_THROWS_AS(lock.lock(), mproc::ValueError);
  CHECK_THROWS_AS(lock.try_lock_for(1s), mproc::ValueError);
  CHECK_FALSE(lock.try_lock());
  lock.unlock();
  CHECK_THROWS_AS(lock.unlock(), mproc::ValueError);
  std::thread other([&] { CHECK(lock.acquire()); });
  other.join();
  CHECK_THROWS_AS(lock.release(), mproc::ValueError);  // held by the other thread (now gone)
}

TEST_CASE("Lock: a holder killed with SIGKILL does not hang the next locker, who sees owner_died") {
  mproc::Lock lock;
  mproc_test::die_holding([&] { lock.lock(); });
  {
    std::lock_guard guard(lock);
    CHECK(lock.owner_died());
    CHECK(lock.owner_deaths() == 1);
  }
  lock.lock();
  CHECK_FALSE(lock.owner_died());
  lock.unlock();

  mproc_test::die_holding([&] { lock.lock(); });
  CHECK(lock.try_lock_for(10s));  // the timed path recovers too
  CHECK(lock.owner_died());
  CHECK(lock.owner_deaths() == 2);
  lock.unlock();
}

TEST_CASE("RLock: its holder may relock and others wait until every level is released") {
  mproc::RLock lock;
  auto try_elsewhere = [&] {
    auto child = spawn([&] {
      if (!lock.try_lock()) return 1;
      lock.unlock();
      return 0;
    });
    return exit_code(child) == 0;
  };
  lock.lock();
  CHECK(lock.try_lock());
  CHECK(lock.try_lock_for(1s));
  lock.unlock();
  lock.unlock();
  CHECK_FALSE(try_elsewhere());
  lock.unlock();
  CHECK(try_elsewhere());
  CHECK_THROWS_AS(lock.unlock(), mproc::ValueError);
}

TEST_CASE("RLock: a holder dead at depth three leaves a lock one unlock() frees") {
  mproc::RLock lock;
  mproc_test::die_holding([&] {
    lock.lock();
    lock.lock();
    lock.lock();
  });
  lock.lock();
  CHECK(lock.owner_died());
  lock.unlock();
  auto child = spawn([&] { return lock.try_lock() ? 0 : 1; });
  CHECK(exit_code(child) == 0);
}

TEST_CASE("Semaphore: processes beyond its count wait until a unit is released") {
  mproc::Semaphore sem(2);
  mproc::Semaphore taken(0);
  mproc::Event release;
  std::vector<mproc::detail::Child> holders;
  for (int i = 0; i < 2; ++i) {
    holders.push_back(spawn([&] {
      sem.acquire();
      taken.release();
      release.wait();
      sem.release();
      return 0;
    }));
  }
  taken.acquire();
  taken.acquire();
  CHECK(sem.get_value() == 0);
  CHECK_FALSE(sem.try_acquire());
  CHECK_FALSE(sem.try_acquire_for(20ms));
  CHECK_FALSE(sem.acquire(20ms));
  release.set();
  CHECK(sem.acquire());  // waits for a holder's release
  for (auto& h : holders) CHECK(exit_code(h) == 0);
  CHECK(sem.get_value() == 1);
  {
    std::lock_guard guard(sem);
    CHECK(sem.get_value() == 0);
  }
  CHECK(sem.get_value() == 1);
  sem.release(3);
  CHECK(sem.get_value() == 4);
  CHECK_THROWS_AS(mproc::Semaphore(-1), mproc::ValueError);
}

TEST_CASE("BoundedSemaphore: releasing above the initial value throws ValueError") {
  mproc::BoundedSemaphore sem(2);
  CHECK_THROWS_AS(sem.release(), mproc::ValueError);
  sem.acquire();
  auto child = spawn([&] {
    sem.release();
    return mproc_test::throws<mproc::ValueError>([&] { sem.release(); }) ? 0 : 1;
  });
  CHECK(exit_code(child) == 0);
  CHECK(sem.get_value() == 2);
}

TEST_CASE("a waiter killed inside Event::wait or Condition::wait does not block the next one") {
  // glibc's process-shared pthread condition hangs the next broadcast after a waiter
  // died inside pthread_cond_wait; mproc's conditions must not.
  mproc::Event event;
  mproc::Lock lock;
  mproc::Condition cond(lock);
  mproc::Value<int> go(0, lock);
  for (int round = 0; round < 2; ++round) {
    auto victim = spawn([&] {
      if (round == 0) {
        event.wait();
      } else {
        std::unique_lock guard(cond);
        cond.wait([&] { return go.value() == 1; });
      }
      return 0;
    });
    mproc_test::wait_until_blocked(victim.pid());
    victim.kill(SIGKILL);
    REQUIRE(exit_code(victim) == -SIGKILL);
    auto next = spawn([&] {
      if (round == 0) return event.wait_for(60s) ? 0 : 1;
      std::unique_lock guard(cond);
      return cond.wait_for(60s, [&] { return go.value() == 1; }) ? 0 : 1;
    });
    mproc_test::wait_until_blocked(next.pid());
    if (round == 0) {
      event.set();
    } else {
      std::lock_guard guard(cond);
      go.value() = 1;
      cond.notify_all();
    }
    CHECK(exit_code(next) == 0);
  }
}

// Fault hook for the tests below: the first of a test's children to reach
// death_point dies there (SIGKILL). The count is in shared memory, since each child
// has its own copy of everything else.
mproc::Value<int>* reached_death_point = nullptr;
const char* death_point = nullptr;
void first_one_dies(const char* where) {
  if (std::strcmp(where, death_point) == 0 && std::atomic_ref<int>(reached_death_point->value()).fetch_add(1) == 0) {
    ::kill(::getpid(), SIGKILL);
  }
}

// The child's exit code, or -1 if it has not ended within the bound: a wake-up that
// is lost turns into a failure rather than a hang (the Child's destructor kills it).
// Nothing here waits on the bound when the wake-up comes.
int exit_code_within(mproc::detail::Child& child, std::chrono::seconds bound = 10s) {
  const auto& status = child.wait(mproc::detail::Deadline::after(bound));
  return status ? status->python_exitcode() : -1;
}

TEST_CASE("Semaphore: a waiter killed right after release() woke it leaves the unit to the others") {
  mproc::Semaphore sem(0);
  mproc::Value<int> reached(0);
  reached_death_point = &reached;
  death_point = "condition.relock";  // the first waiter to wake dies before it takes the unit
  std::vector<mproc::detail::Child> waiters;
  for (int i = 0; i < 2; ++i) {
    waiters.push_back(spawn([&] {
      mproc_test::FaultHook die_first(first_one_dies);
      sem.acquire();  // no timeout: a timed wait would find the unit when it gave up
      return 0;
    }));
  }
  for (auto& w : waiters) mproc_test::wait_until_blocked(w.pid());
  sem.release();
  std::multiset<int> codes;
  for (auto& w : waiters) codes.insert(exit_code_within(w));
  CHECK(codes == std::multiset<int>{-SIGKILL, 0});
  CHECK(sem.get_value() == 0);
}

TEST_CASE("Condition: a waiter that notify() woke and that is killed before it returns passes the wake-up on") {
  mproc::Lock lock;
  mproc::Condition cond(lock);
  mproc::Value<int> waiting(0, lock), ready(0, lock);  // guarded by the condition's lock
  mproc::Value<int> reached(0);
  reached_death_point = &reached;
  death_point = "condition.relock";  // the waiter that notify() woke dies before it returns
  std::vector<mproc::detail::Child> waiters;
  for (int i = 0; i < 2; ++i) {
    waiters.push_back(spawn([&] {
      mproc_test::FaultHook die_first(first_one_dies);
      std::unique_lock guard(cond);
      ++waiting.value();
      cond.wait([&] { return ready.value() == 1; });
      return 0;
    }));
  }
  // Both inside wait() (counted under the lock, then asleep) before the one notify.
  while (waiting.load() < 2) std::this_thread::sleep_for(1ms);
  for (auto& w : waiters) mproc_test::wait_until_blocked(w.pid());
  {
    std::lock_guard guard(cond);
    ready.value() = 1;
    cond.notify();
  }
  std::multiset<int> codes;
  for (auto& w : waiters) codes.insert(exit_code_within(w));
  CHECK(codes == std::multiset<int>{-SIGKILL, 0});
}

TEST_CASE("Condition: a process killed holding the lock before its notify does not leave the waiters asleep") {
  mproc::Lock lock;
  mproc::Condition cond(lock);
  mproc::Value<int> ready(0, lock);
  auto waiter = spawn([&] {
    std::unique_lock guard(cond);
    cond.wait([&] { return ready.value() == 1; });
    return cond.owner_died() ? 0 : 2;  // it took the lock over from the dead process
  });
  mproc_test::wait_until_blocked(waiter.pid());
  mproc_test::die_holding([&] {
    lock.lock();
    ready.value() = 1;  // the notify that would follow never comes
  });
  CHECK(exit_code_within(waiter) == 0);
}

TEST_CASE("Event: a waiter that set() woke returns true even if clear() came before it ran") {
  // threading.Event's promise: set() wakes every waiter, whatever the flag is by the
  // time a waiter runs again.
  mproc::Event event;
  auto forever = spawn([&] {
    event.wait();
    return 0;
  });
  auto timed = spawn([&] { return event.wait_for(3s) ? 0 : 1; });
  mproc_test::wait_until_blocked(forever.pid());
  mproc_test::wait_until_blocked(timed.pid());
  // Stopped, the waiters cannot run between the set() and the clear(); once
  // continued they find the flag down again.
  forever.kill(SIGSTOP);
  timed.kill(SIGSTOP);
  event.set();
  event.clear();
  forever.kill(SIGCONT);
  timed.kill(SIGCONT);
  CHECK(exit_code_within(forever) == 0);
  CHECK(exit_code_within(timed) == 0);
  CHECK_FALSE(event.is_set());
  CHECK_FALSE(event.wait_for(1ms));  // a set() before a wait began does not count
}

TEST_CASE("Event: a waiter stopped (SIGSTOP) anywhere in wait() never holds up set() or clear() in another process") {
  // The waiter enters and leaves wait_for() all the time, so the stops land at every
  // point of it. When wait() took a lock, a stop inside it left set() waiting for the
  // lock until the waiter was continued: here, forever.
  mproc::Event event;
  auto waiter = spawn([&] {
    for (;;) (void)event.wait_for(0us);
    return 0;
  });
  for (int round = 0; round < 2000; ++round) {
    waiter.kill(SIGSTOP);
    int status = 0;
    REQUIRE(::waitpid(waiter.pid(), &status, WUNTRACED) == waiter.pid());
    REQUIRE(WIFSTOPPED(status));
    event.set();
    event.clear();
    waiter.kill(SIGCONT);
    std::this_thread::sleep_for(std::chrono::microseconds(round % 7 * 30));
  }
  waiter.kill(SIGKILL);
  CHECK(exit_code(waiter) == -SIGKILL);
}

TEST_CASE("Event: a setter killed between its store and its wake-up does not leave the waiters asleep") {
  mproc::Event event;
  auto waiter = spawn([&] {
    event.wait();
    return 0;
  });
  mproc_test::wait_until_blocked(waiter.pid());
  mproc::Value<int> reached(0);
  reached_death_point = &reached;
  death_point = "event.wake";
  auto setter = spawn([&] {
    mproc_test::FaultHook die_first(first_one_dies);
    event.set();
    return 0;
  });
  CHECK(exit_code(setter) == -SIGKILL);
  CHECK(exit_code_within(waiter) == 0);
  CHECK(event.is_set());
}

TEST_CASE("Condition: notify() and notify_all() without holding the lock throw ValueError") {
  // Python raises RuntimeError ("cannot notify on un-acquired lock").
  mproc::Lock lock;
  mproc::Condition cond(lock);
  CHECK_THROWS_AS(cond.notify(), mproc::ValueError);
  CHECK_THROWS_AS(cond.notify_all(), mproc::ValueError);
  CHECK_THROWS_WITH(cond.notify(), Catch::Contains("does not hold") && Catch::Contains("lock it first"));
  {
    std::lock_guard guard(cond);
    CHECK_NOTHROW(cond.notify());
    CHECK_NOTHROW(cond.notify(0));
    CHECK_NOTHROW(cond.notify_all());
  }
  {
    std::binary_semaphore taken(0), may_unlock(0);
    std::thread other([&] {  // held by another thread of this process
      std::lock_guard guard(lock);
      taken.release();
      may_unlock.acquire();
    });
    taken.acquire();
    CHECK_THROWS_AS(cond.notify(), mproc::ValueError);
    may_unlock.release();
    other.join();
  }
  mproc::Event held, done;
  auto holder = spawn([&] {  // held by another process
    std::lock_guard guard(cond);
    held.set();
    done.wait();
    return 0;
  });
  held.wait();
  CHECK_THROWS_AS(cond.notify(), mproc::ValueError);
  CHECK_THROWS_AS(cond.notify_all(), mproc::ValueError);
  done.set();
  CHECK(exit_code(holder) == 0);

  mproc::Condition rcond;  // with an RLock of its own
  CHECK_THROWS_AS(rcond.notify(), mproc::ValueError);
  rcond.acquire();
  rcond.acquire();
  CHECK_NOTHROW(rcond.notify_all());
  rcond.release();
  CHECK_NOTHROW(rcond.notify(2));
  rcond.release();
  CHECK_THROWS_AS(rcond.notify_all(), mproc::ValueError);
}

TEST_CASE("Event: waiters in other processes wake when it is set and wait_for times out") {
  mproc::Event event;
  CHECK_FALSE(event.is_set());
  CHECK_FALSE(event.wait_for(20ms));
  CHECK_FALSE(event.wait_until(std::chrono::steady_clock::now() + 10ms));
  std::vector<mproc::detail::Child> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.push_back(spawn([&] {
      event.wait();
      return event.is_set() ? 0 : 1;
    }));
  }
  event.set();
  for (auto& w : waiters) CHECK(exit_code(w) == 0);
  CHECK(event.wait_for(0s));
  event.clear();
  CHECK_FALSE(event.is_set());
  auto late = spawn([&] { return event.wait_for(20ms) ? 1 : 0; });
  CHECK(exit_code(late) == 0);
}

TEST_CASE("Condition: a process waits for a predicate another process makes true") {
  mproc::Lock lock;
  mproc::Condition cond(lock);
  mproc::Value<int> stage(0, lock);  // guarded by the condition's lock
  auto child = spawn([&] {
    std::unique_lock guard(cond);
    cond.wait([&] { return stage.value() == 1; });
    stage.value() = 2;
    cond.notify_all();
    return 0;
  });
  {
    std::unique_lock guard(cond);
    CHECK_FALSE(cond.wait_for(10ms, [&] { return stage.value() == 1; }));  // nobody makes it true yet
    stage.value() = 1;
    cond.notify();
    CHECK(cond.wait_for(60s, [&] { return stage.value() == 2; }));
    CHECK_FALSE(cond.wait_for(10ms, [&] { return stage.value() == 3; }));
    CHECK_FALSE(cond.wait_until(std::chrono::steady_clock::now() + 10ms, [] { return false; }));
  }
  CHECK(exit_code(child) == 0);
  CHECK_THROWS_AS(cond.wait(), mproc::ValueError);  // the lock is not held
}

TEST_CASE("Condition: waiting releases every level of its RLock") {
  mproc::Condition cond;  // with an RLock of its own, as in Python
  mproc::Value<int> flag(0);
  cond.acquire();
  cond.acquire();
  auto child = spawn([&] {
    std::lock_guard guard(cond);  // possible only while the parent waits
    flag.store(1);
    cond.notify_all();
    return 0;
  });
  cond.wait([&] { return flag.load() == 1; });
  cond.release();
  cond.release();
  CHECK(exit_code(child) == 0);
  auto free = spawn([&] { return cond.try_lock() ? 0 : 1; });
  CHECK(exit_code(free) == 0);
}

TEST_CASE("Barrier: three processes meet, each with its own arrival index") {
  mproc::Barrier barrier(3);
  mproc::Array<int> index(2, -1);
  std::vector<mproc::detail::Child> parties;
  for (int i = 0; i < 2; ++i) {
    parties.push_back(spawn([&, i] {
      index[static_cast<std::size_t>(i)] = static_cast<int>(barrier.wait());
      return 0;
    }));
  }
  const auto mine = static_cast<int>(barrier.wait());
  for (auto& p : parties) CHECK(exit_code(p) == 0);
  CHECK(std::set<int>{mine, index[0], index[1]} == std::set<int>{0, 1, 2});
  CHECK(barrier.parties() == 3);
  CHECK(barrier.n_waiting() == 0);
}

TEST_CASE("Barrier: a timeout breaks it for everyone until reset() and abort() breaks it") {
  mproc::Barrier barrier(2);
  CHECK_THROWS_AS(barrier.wait(10ms), mproc::BrokenBarrierError);
  CHECK(barrier.broken());
  CHECK_THROWS_AS(barrier.wait(), mproc::BrokenBarrierError);
  barrier.reset();
  CHECK_FALSE(barrier.broken());
  auto other = spawn([&] { return barrier.wait(60s) <= 1 ? 0 : 1; });
  CHECK(barrier.wait(60s) <= 1);
  CHECK(exit_code(other) == 0);

  mproc::Event waiting;
  auto aborted = spawn([&] {
    waiting.set();
    return mproc_test::throws<mproc::BrokenBarrierError>([&] { barrier.wait(); }) ? 0 : 1;
  });
  waiting.wait();
  barrier.abort();  // whether the child is waiting already or arrives after, it gets BrokenBarrierError
  CHECK(exit_code(aborted) == 0);
  CHECK_THROWS_AS(mproc::Barrier(0), mproc::ValueError);
}

int signal_when_set(mproc::Event go, mproc::Semaphore done, int x) {
  go.wait();
  done.release();
  return x;
}

TEST_CASE("Events and semaphores can be Pool task arguments, even for a Pool started before them") {
  mproc::Pool pool(signal_when_set, {.processes = 2});
  mproc::Event go;
  mproc::Semaphore done(0);
  auto pending = pool.apply_async(go, done, 7);
  CHECK_FALSE(done.try_acquire_for(20ms));  // the worker waits for go
  go.set();
  CHECK(pending.get() == 7);
  CHECK(done.try_acquire());
  std::vector<std::tuple<mproc::Event, mproc::Semaphore, int>> tasks;
  for (int i = 0; i < 20; ++i) tasks.emplace_back(go, done, i);
  CHECK(pool.starmap(tasks).size() == 20);
  CHECK(done.get_value() == 20);
}

TEST_CASE("Handles decode only as what they are") {
  const mproc::Bytes lock = mproc::encode(mproc::Lock());
  CHECK_THROWS_AS(mproc::decode<mproc::RLock>(lock), mproc::ProtocolError);
  CHECK_THROWS_AS(mproc::decode<mproc::Event>(lock), mproc::ProtocolError);
  CHECK_NOTHROW(mproc::decode<mproc::Lock>(lock));
  const mproc::Bytes sem = mproc::encode(mproc::Semaphore(1));
  CHECK_THROWS_AS(mproc::decode<mproc::BoundedSemaphore>(sem), mproc::ProtocolError);
  const mproc::Bytes cond = mproc::encode(mproc::Condition());
  CHECK_NOTHROW(mproc::decode<mproc::Condition>(cond));
  CHECK_THROWS_AS(mproc::decode<mproc::Lock>(mproc::encode(std::string("not a lock"))), mproc::ProtocolError);
}

// The lock the hooks below have other processes take while a waiter is between its
// wake-up and its relock.
mproc::Lock* hook_lock = nullptr;

// Another process takes the lock and dies holding it: the waiter's relock recovers it.
void die_holding_hook_lock(const char* where) {
  if (std::strcmp(where, "condition.relock") != 0) return;
  mproc_test::die_holding([] { hook_lock->lock(); });
}

// As above, then a third process recovers the lock and unlocks it: the waiter's
// relock is a normal one.
void die_holding_then_recover(const char* where) {
  if (std::strcmp(where, "condition.relock") != 0) return;
  die_holding_hook_lock(where);
  auto recoverer = spawn([] {
    hook_lock->lock();
    const bool recovered = hook_lock->owner_died();
    hook_lock->unlock();
    return recovered ? 0 : 1;
  });
  REQUIRE(exit_code(recoverer) == 0);
}

TEST_CASE("Condition: a wait that times out and recovers its lock from a dead holder reports both") {
  mproc::Lock lock;
  mproc::Condition cond(lock);
  hook_lock = &lock;
  std::unique_lock guard(cond);
  {
    mproc_test::FaultHook hook(die_holding_hook_lock);
    CHECK_FALSE(cond.wait_for(1ms));  // timed out: nobody notified
  }
  CHECK(cond.owner_died());
  CHECK(lock.owner_deaths() == 1);
  // A wait whose relock is a normal one clears owner_died(), even when another
  // process recovered the lock in between.
  {
    mproc_test::FaultHook hook(die_holding_then_recover);
    CHECK_FALSE(cond.wait_for(1ms));
  }
  CHECK_FALSE(cond.owner_died());
  CHECK(lock.owner_deaths() == 2);
}

struct Thrown {};

TEST_CASE("A Condition wait that throws still gives the lock back to its caller, every level of it") {
  mproc_test::FaultHook hook([](const char* where) {
    if (std::strcmp(where, "condition.relock") == 0) throw Thrown{};
  });
  mproc::Lock lock;
  mproc::Condition cond(lock);
  {
    std::unique_lock guard(cond);
    CHECK_THROWS_AS(cond.wait_for(0s), Thrown);
    auto other = spawn([&] { return lock.try_lock() ? 1 : 0; });
    CHECK(exit_code(other) == 0);  // held by this thread again
  }  // and unlocked here, as the guard expects
  mproc::Condition rcond;  // with an RLock
  rcond.acquire();
  rcond.acquire();
  CHECK_THROWS_AS(rcond.wait_for(0s), Thrown);
  auto other = spawn([&] { return rcond.try_lock() ? 1 : 0; });
  CHECK(exit_code(other) == 0);
  rcond.release();
  rcond.release();
  CHECK_THROWS_AS(rcond.release(), mproc::ValueError);  // two levels, as before the wait
}

TEST_CASE("A deadline long past (time_point::min()) times out at once, and a wait keeps its lock") {
  const auto long_ago = std::chrono::steady_clock::time_point::min();
  mproc::Lock lock;
  mproc::Condition cond(lock);
  {
    std::unique_lock guard(cond);
    bool contended = true;
    std::thread other([&] { contended = lock.try_lock_until(long_ago); });
    other.join();
    CHECK_FALSE(contended);
    CHECK_FALSE(cond.wait_until(long_ago));
    CHECK_FALSE(cond.wait_until(long_ago, [] { return false; }));
    auto child = spawn([&] { return lock.try_lock() ? 1 : 0; });
    CHECK(exit_code(child) == 0);  // still held by this thread
  }
  CHECK(lock.try_lock_until(long_ago));  // free: taken without waiting
  lock.unlock();
  mproc::Semaphore sem(0);
  CHECK_FALSE(sem.try_acquire_until(long_ago));
  mproc::Event event;
  CHECK_FALSE(event.wait_until(long_ago));
  mproc::Condition rcond;  // with an RLock
  rcond.acquire();
  rcond.acquire();
  CHECK_FALSE(rcond.wait_until(long_ago));
  rcond.release();
  rcond.release();
  CHECK_THROWS_AS(rcond.release(), mproc::ValueError);
}

TEST_CASE("Huge timeouts wait as long as it takes instead of overflowing into the past") {
  mproc::Lock lock;
  mproc::Event event;
  mproc::Semaphore sem(0), held(0), step(0);
  const pid_t parent = ::getpid();
  auto helper = spawn([&] {  // each step acts only once the parent sleeps in its wait
    lock.lock();
    held.release();
    step.acquire();
    mproc_test::wait_until_blocked(parent);
    lock.unlock();
    step.acquire();
    mproc_test::wait_until_blocked(parent);
    event.set();
    step.acquire();
    mproc_test::wait_until_blocked(parent);
    sem.release();
    return 0;
  });
  held.acquire();
  step.release();
  CHECK(lock.try_lock_for(std::chrono::hours::max()));
  lock.unlock();
  step.release();
  CHECK(event.wait_for(std::chrono::seconds::max()));
  step.release();
  CHECK(sem.try_acquire_for(std::chrono::hours::max()));
  CHECK(exit_code(helper) == 0);
}

// The memory of a lock that a thread holds is in glibc's list of that thread's robust
// mutexes. These tests drop the last handle of a held lock in a child, where it is the
// only object of its arena (made right after the cached arenas were let go), so that its
// memory is unmapped there at once; the child then takes another robust mutex from the
// same thread, which writes to the list's head.
void lock_another_robust_mutex() {
  mproc::detail::RobustMutex other;
  (void)other.lock();
  other.unlock();
}

// A child takes *handle's lock with take(), drops its only handle of it and lets its
// arena go, then takes another robust mutex; the child's exit code.
template <class Handle, class Take>
int drop_while_held_in_child(std::unique_ptr<Handle>& handle, Take take) {
  auto child = spawn([&] {
    take(*handle);
    handle.reset();
    mproc_test::drop_cached_segments();
    lock_another_robust_mutex();
    return 0;
  });
  return exit_code_within(child);
}

TEST_CASE("Dropping the last handle of a lock this thread holds abandons it: the thread locks on, the next locker sees "
          "owner_died()") {
  // Python: `lock.acquire(); del lock`. Before, the thread's next lock crashed in glibc.
  mproc_test::drop_cached_segments();  // what is made next gets an arena of its own
  const auto taken_over = [](auto& lock) {
    REQUIRE(lock.try_lock_for(10s));  // bounded: a lock left held would hang here
    CHECK(lock.owner_died());
    CHECK(lock.owner_deaths() == 1);
    lock.unlock();
    CHECK(lock.try_lock());  // every level was released
    CHECK_FALSE(lock.owner_died());
    lock.unlock();
  };
  SECTION("Lock") {
    auto lock = std::make_unique<mproc::Lock>();
    REQUIRE(drop_while_held_in_child(lock, [](mproc::Lock& l) { l.acquire(); }) == 0);
    taken_over(*lock);
  }
  SECTION("RLock, held at two levels") {
    auto rlock = std::make_unique<mproc::RLock>();
    REQUIRE(drop_while_held_in_child(rlock, [](mproc::RLock& l) {
              l.acquire();
              l.acquire();
            }) == 0);
    taken_over(*rlock);
  }
  SECTION("a Value's get_lock()") {
    auto value = std::make_unique<mproc::Value<int>>(7);
    REQUIRE(drop_while_held_in_child(value, [](mproc::Value<int>& v) {
              v.get_lock().acquire();
              v.value() = 8;
            }) == 0);
    taken_over(value->get_lock());
    CHECK(value->load() == 8);
  }
  SECTION("an Array's get_lock()") {
    auto array = std::make_unique<mproc::Array<int>>(4);
    REQUIRE(drop_while_held_in_child(array, [](mproc::Array<int>& a) { a.get_lock().acquire(); }) == 0);
    taken_over(array->get_lock());
  }
  SECTION("a Condition's own RLock") {
    auto cond = std::make_unique<mproc::Condition>();
    REQUIRE(drop_while_held_in_child(cond, [](mproc::Condition& c) { c.acquire(); }) == 0);
    cond->acquire();
    CHECK(cond->owner_died());
    cond->release();
  }
  SECTION("a Semaphore (acquiring one holds no mutex)") {
    auto sem = std::make_unique<mproc::Semaphore>(1);
    REQUIRE(drop_while_held_in_child(sem, [](mproc::Semaphore& s) { s.acquire(); }) == 0);
    CHECK(sem->get_value() == 0);  // as in Python, the unit taken is not given back
  }
}

TEST_CASE("Dropping the last handle of a lock another thread holds keeps its memory: that thread locks on, its end "
          "hands the lock on") {
  // That thread can never release it (a bug of the program), but glibc's list of its
  // robust mutexes must stay sound; when it ends, the kernel marks the lock as a dead
  // holder's, for the next locker in another process.
  mproc_test::drop_cached_segments();
  auto lock = std::make_unique<mproc::Lock>();
  auto child = spawn([&] {
    std::binary_semaphore held(0), dropped(0);
    std::thread holder([&, &l = *lock] {
      l.acquire();
      held.release();
      dropped.acquire();  // l is gone
      lock_another_robust_mutex();
    });
    held.acquire();
    lock.reset();
    mproc_test::drop_cached_segments();
    dropped.release();
    holder.join();
    return 0;
  });
  REQUIRE(exit_code_within(child) == 0);
  REQUIRE(lock->try_lock_for(10s));
  CHECK(lock->owner_died());
  lock->unlock();
}

// The SIGUSR1 handler of the children below counts, in shared memory, the signals it ran for.
int* handled_signals = nullptr;
void count_signal(int) { std::atomic_ref<int>(*handled_signals).fetch_add(1); }
void count_sigusr1() {
  struct sigaction sa{};
  sa.sa_handler = count_signal;  // no SA_RESTART: an interrupted wait gets EINTR
  ::sigaction(SIGUSR1, &sa, nullptr);
}

// Interrupts the child's wait with SIGUSR1 three times, each once the child sleeps in
// it and has handled the signal before; then waits until it sleeps again. False if the
// child ended meanwhile.
bool interrupt_three_times(mproc::detail::Child& child, mproc::Value<int>& handled) {
  const std::string task = "/proc/" + std::to_string(child.pid());
  bool ended = false;
  const auto asleep = [&] {
    while (!mproc_test::blocked_in(task, {SYS_futex}, ended)) {
      if (ended) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  };
  for (int k = 1; k <= 3; ++k) {
    if (!asleep()) return false;
    ::kill(child.pid(), SIGUSR1);
    while (handled.load() < k) {
      (void)mproc_test::blocked_in(task, {}, ended);
      if (ended) return false;
      std::this_thread::sleep_for(1ms);
    }
  }
  return asleep();
}

// A wait in a child, interrupted by three signals: with a timeout of 1 s and nothing to
// end it, it returns false; untimed, or with a timeout of 60 s, it returns true, and
// only once the parent has woken it with wake(). wait(timeout) waits (untimed without
// one) and says whether it got what it waited for; before() readies each wait.
template <class Wait, class Wake, class Before>
void check_waits_through_signals(Wait wait, Wake wake, Before before) {
  mproc::Value<int> handled(0), woken(0);
  handled_signals = &handled.value();
  using Timeout = std::optional<std::chrono::seconds>;
  for (const Timeout timeout : {Timeout(1s), Timeout(), Timeout(60s)}) {
    handled.store(0);
    woken.store(0);
    before();
    auto child = spawn([&] {
      count_sigusr1();
      const bool got = wait(timeout);
      return got == (woken.load() == 1) ? 0 : 1;
    });
    const bool interrupted = interrupt_three_times(child, handled);
    if (timeout != Timeout(1s)) {
      REQUIRE(interrupted);
      woken.store(1);
      wake();
    }  // else the 1 s may pass before the signals on a loaded machine
    CHECK(exit_code_within(child, 60s) == 0);
  }
}

TEST_CASE("A signal handled during a wait does not end it: the wait goes on to its wake-up or its deadline") {
  // Python's waits retry after EINTR with the time left (PEP 475): Condition.wait(2)
  // returns False after 2 s whatever signals come. Before, Condition's waits returned
  // at the first signal, wait_for() with true.
  using Timeout = std::optional<std::chrono::seconds>;
  const auto nothing = [] {};
  SECTION("Condition::wait, Condition::wait_for") {
    mproc::Condition cond;
    check_waits_through_signals(
        [&](Timeout timeout) {
          std::unique_lock guard(cond);
          if (timeout) return cond.wait_for(*timeout);
          cond.wait();
          return true;
        },
        [&] {
          std::lock_guard guard(cond);
          cond.notify();
        },
        nothing);
  }
  SECTION("Event::wait, Event::wait_for") {
    mproc::Event event;
    check_waits_through_signals(
        [&](Timeout timeout) {
          if (timeout) return event.wait_for(*timeout);
          event.wait();
          return true;
        },
        [&] { event.set(); }, [&] { event.clear(); });
  }
  SECTION("Semaphore::acquire, with and without a timeout") {
    mproc::Semaphore sem(0);
    check_waits_through_signals([&](Timeout timeout) { return timeout ? sem.acquire(*timeout) : sem.acquire(); },
                                [&] { sem.release(); }, nothing);
  }
  SECTION("Barrier::wait, with and without a timeout") {
    mproc::Barrier barrier(2);
    check_waits_through_signals(
        [&](Timeout timeout) {
          try {
            (void)(timeout ? barrier.wait(*timeout) : barrier.wait());
            return true;
          } catch (const mproc::BrokenBarrierError&) {
            return false;
          }
        },
        [&] { (void)barrier.wait(); }, [&] { barrier.reset(); });  // a timeout breaks it
  }
  SECTION("Lock::lock, Lock::try_lock_for") {
    mproc::Lock lock;
    check_waits_through_signals(
        [&](Timeout timeout) {
          if (!timeout) lock.lock();
          else if (!lock.try_lock_for(*timeout)) return false;
          lock.unlock();
          return true;
        },
        [&] { lock.unlock(); }, [&] { (void)lock.try_lock(); });  // the parent holds it in each wait
  }
}

// Stops the child (SIGSTOP) and waits until it is stopped.
void stop(mproc::detail::Child& child) {
  child.kill(SIGSTOP);
  siginfo_t info{};
  REQUIRE(::waitid(P_PID, static_cast<id_t>(child.pid()), &info, WSTOPPED | WNOWAIT) == 0);
}

TEST_CASE("Barrier: whichever call takes its lock over from a dead holder breaks it, broken() and n_waiting() too") {
  // wait() did; broken() and n_waiting() took the lock over and left the barrier whole.
  mproc::Barrier barrier(2);
  auto waiter = spawn([&] { return barrier.wait() == 0 ? 0 : 1; });
  mproc_test::wait_until_blocked(waiter.pid());
  stop(waiter);  // stopped, it cannot be the one that takes the lock over
  mproc::Value<int> reached(0);
  reached_death_point = &reached;
  death_point = "condition.notify";  // the last party dies holding the lock, the round done but not announced
  auto last = spawn([&] {
    mproc_test::FaultHook die_first(first_one_dies);
    (void)barrier.wait();
    return 0;
  });
  REQUIRE(exit_code(last) == -SIGKILL);
  SECTION("broken()") { CHECK(barrier.broken()); }
  SECTION("n_waiting()") {
    CHECK(barrier.n_waiting() == 0);
    CHECK(barrier.broken());
  }
  SECTION("wait()") {
    CHECK_THROWS_AS(barrier.wait(), mproc::BrokenBarrierError);
    CHECK(barrier.broken());
  }
  CHECK(barrier.n_waiting() == 0);
  waiter.kill(SIGCONT);
  CHECK(exit_code_within(waiter) == 0);  // its round was complete
}

}  // namespace
