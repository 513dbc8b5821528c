// Pool.apply_async with a callback. apply_async returns an
// AsyncResult at once; the callback runs in this process when the result arrives.
// close() then join() wait for both tasks and their callbacks.
#include <mproc/mproc.hpp>

#include <unistd.h>

#include <iostream>

long cube(int number) {
  std::cout << "number: " << number << " ; process id: " << ::getpid() << std::endl;
  long total = 0;
  for (long i = 0; i < number; ++i) total += i * i * i;
  return total;
}

void custom_callback(const long& result) { std::cout << "Got result: " << result << std::endl; }

int main() {
  mproc::Pool p(cube);
  mproc::AsyncResult<long> result = p.apply_async(50, custom_callback);
  std::cout << "result: AsyncResult for cube(50)" << std::endl;
  mproc::AsyncResult<long> result2 = p.apply_async(10, custom_callback);
  std::cout << "result: AsyncResult for cube(10)" << std::endl;
  p.close();
  p.join();
  // Both are ready now: join() returns after the last callback has run.
  std::cout << std::boolalpha << "ready: " << result.ready() << ' ' << result2.ready() << ", values: " << result.get()
            << ' ' << result2.get() << std::endl;
  std::cout << "end" << std::endl;
}
