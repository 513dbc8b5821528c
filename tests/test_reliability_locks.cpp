// A lock holder killed: the next locker does not hang. Lock, RLock, the Manager's
// containers, Condition and Event waiters and Queue readers and writers are each
// covered with a process killed in the act (test_sync, test_manager, test_queue); here
// the holder is a Pool task, killed while other tasks queue on the same lock, and a
// task that dies inside Value::update, which leaves the value as it was. And a waiter
// killed between its wake-up and taking the lock, held there with ptrace.

#include "reliability_support.hpp"  // first: it configures Catch2

#include "blocked_support.hpp"

#include <mproc/mproc.hpp>

#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <chrono>
#include <csignal>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using mproc_test::iota_vector;

namespace {

/// How long a task waits for the victim to be in place: only reached if the pool
/// never runs the victim, which is then the failure the checks report.
constexpr auto victim_wait = mproc_test::hang_limit;

/// Waits for a ptrace stop of pid (a child this process traces).
void wait_traced_stop(pid_t pid) {
  int status = 0;
  REQUIRE(::waitpid(pid, &status, __WALL) == pid);
  REQUIRE(WIFSTOPPED(status));
}

/// Blocks until pid sleeps in a futex wait (restarted or not) or is in a ptrace
/// stop (a lock wait cut into slices may have ended one meanwhile).
void wait_until_asleep_or_traced(pid_t pid) {
  const std::string task = "/proc/" + std::to_string(pid);
  for (bool ended = false; !mproc_test::blocked_in(task, {SYS_futex, SYS_restart_syscall}, ended);) {
    REQUIRE_FALSE(ended);
    if (const auto s = mproc_test::proc_stat(pid); s && s->state == 't') return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

/// Makes pid, asleep in a lock's futex wait, stop (ptrace) on its way out of the
/// wait: once woken, before it can take the lock.
void stop_when_woken(pid_t pid) {
  REQUIRE(::ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_TRACESYSGOOD) == 0);
  REQUIRE(::ptrace(PTRACE_INTERRUPT, pid, 0, 0) == 0);
  wait_traced_stop(pid);  // out of the wait, which it restarts when resumed
  REQUIRE(::ptrace(PTRACE_SYSCALL, pid, 0, 0) == 0);
  wait_traced_stop(pid);  // entering the wait again
  REQUIRE(::ptrace(PTRACE_SYSCALL, pid, 0, 0) == 0);
  wait_until_asleep_or_traced(pid);  // asleep; it stops when the wait returns
}

/// The lost wake-up of glibc's robust mutex: the waiter that unlock() woke is killed
/// before it takes the lock, and meanwhile another process took the lock without
/// the mark that says others wait, so its unlock() wakes nobody. Here the lock is
/// free again and the other waiter, which takes it, must not sleep on. take() locks
/// and unlocks; false if it could not lock.
template <class Lockable, class Take>
void check_no_waiter_left_asleep(Lockable& lock, Take take) {
  lock.lock();
  auto woken = mproc_test::spawn([&] { return take() ? 0 : 1; });
  mproc_test::wait_until_blocked(woken.pid());
  stop_when_woken(woken.pid());
  auto other_waiter = mproc_test::spawn([&] { return take() ? 0 : 1; });
  mproc_test::wait_until_blocked(other_waiter.pid());  // asleep behind the first
  lock.unlock();                                         // wakes the first waiter only
  wait_traced_stop(woken.pid());
  lock.lock();  // as a newcomer would: it finds the lock free
  woken.kill(SIGKILL);
  REQUIRE(mproc_test::exit_code(woken) == -SIGKILL);
  lock.unlock();
  // It takes the lock within a slice; the bound only turns a waiter left asleep into
  // a failure rather than a hang.
  const auto& status = other_waiter.wait(mproc::detail::Deadline::after(std::chrono::seconds(10)));
  REQUIRE(status.has_value());
  CHECK(status->python_exitcode() == 0);
}

}  // namespace

TEST_CASE(
    "a lock waiter killed between its wake-up and taking the lock leaves no other waiter asleep on the free lock") {
  mproc::Lock lock;
  SECTION("Lock::lock") {
    check_no_waiter_left_asleep(lock, [&] {
      lock.lock();
      lock.unlock();
      return true;
    });
  }
  SECTION("RLock::lock") {
    mproc::RLock rlock;
    check_no_waiter_left_asleep(rlock, [&] {
      rlock.lock();
      rlock.unlock();
      return true;
    });
  }
  SECTION("Lock::try_lock_for") {
    check_no_waiter_left_asleep(lock, [&] {
      if (!lock.try_lock_for(std::chrono::seconds(60))) return false;
      lock.unlock();
      return true;
    });
  }
  SECTION("Value::update") {
    mproc::Value<int> value(0, lock);
    check_no_waiter_left_asleep(lock, [&] {
      value.update([](int& v) { ++v; });
      return true;
    });
    CHECK(value.load() == 1);  // the killed waiter never got to it
  }
}

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
