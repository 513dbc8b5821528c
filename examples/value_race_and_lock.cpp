// Lock: two processes add and subtract 10, fifty times each, on a shared
// Value(1000). Without a lock their read-modify-writes interleave and updates are
// lost (the Python version got 840); with the lock the result is 1000 every time.
#include <mproc/mproc.hpp>

#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>

// One step of the Python version's `x.value += 10`: read, work a moment, write back. The pause
// stands for the time Python spends between the read and the write.
void step(mproc::Value<int>& x, int delta) {
  const int seen = x.value();
  std::this_thread::sleep_for(std::chrono::microseconds(200));
  x.value() = seen + delta;
}

void add(mproc::Value<int> x) {
  for (int i = 0; i < 50; ++i) step(x, +10);
}

void sub(mproc::Value<int> x) {
  for (int i = 0; i < 50; ++i) step(x, -10);
}

void add_locked(mproc::Value<int> x, mproc::Lock lock) {
  for (int i = 0; i < 50; ++i) {
    std::lock_guard guard(lock);  // lock.acquire() ... lock.release()
    step(x, +10);
  }
}

void sub_locked(mproc::Value<int> x, mproc::Lock lock) {
  for (int i = 0; i < 50; ++i) {
    std::lock_guard guard(lock);
    step(x, -10);
  }
}

// Runs two processes on targets a and b with the same arguments, and waits for both.
template <class A, class B, class... Args>
void race(A a, B b, const Args&... args) {
  mproc::Process add_p(a, args...);
  mproc::Process sub_p(b, args...);
  add_p.start();
  sub_p.start();
  add_p.join();
  sub_p.join();
}

int main() {
  mproc::Value<int> x(1000);
  race(add, sub, x);
  std::cout << "without the lock: " << x.load() << " (varies from run to run)" << std::endl;

  mproc::Value<int> y(1000);
  mproc::Lock lock;
  race(add_locked, sub_locked, y, lock);
  std::cout << "with the lock: " << y.load() << std::endl;

  // The short way: Value's own lock around the whole read-modify-write.
  mproc::Value<int> z(1000);
  auto add_update = [](mproc::Value<int> v) {
    for (int i = 0; i < 50; ++i) v.update([](int& n) { n += 10; });
  };
  auto sub_update = [](mproc::Value<int> v) {
    for (int i = 0; i < 50; ++i) v.update([](int& n) { n -= 10; });
  };
  race(add_update, sub_update, z);
  std::cout << "with update(): " << z.load() << std::endl;
}
