// Pool.apply. apply runs one call in a worker and blocks until
// its result is back. cube prints the worker's pid, which is not the pid of this
// process: the call ran in a worker.
#include <mproc/mproc.hpp>

#include <unistd.h>

#include <iostream>

long cube(int number) {
  // endl flushes, so lines from the worker and from main come out in order even
  // when stdout is a pipe.
  std::cout << "number: " << number << " ; process id: " << ::getpid() << std::endl;
  long total = 0;
  for (long i = 0; i < number; ++i) total += i * i * i;
  return total;
}

int main() {
  mproc::Pool p(cube);
  long result = p.apply(50);
  std::cout << "result: " << result << std::endl;
  result = p.apply(10);
  std::cout << "result: " << result << std::endl;
  p.close();
  std::cout << "end (main process id: " << ::getpid() << ")" << std::endl;
}
