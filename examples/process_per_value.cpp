// Process: cube() runs in one process per value, each printing its pid
// and current_process().name(). Calling run() instead of start() runs the target
// right here, in the main process, as the Python version shows.
#include <mproc/mproc.hpp>

#include <unistd.h>

#include <iostream>
#include <vector>

void cube(int x) {
  const int value = x * x * x;
  std::cout << "Process ID: " << ::getpid() << " Process Name: " << mproc::current_process().name() << " x: " << x
            << " value: " << value << std::endl;
}

int main() {
  std::vector<mproc::Process> process_list;
  for (int value : {1, 2, 3, 4, 5}) {
    process_list.emplace_back(cube, value);  // target and its argument
    process_list.back().start();
  }
  for (auto& process : process_list) process.join();

  // run() instead of start(): no new process.
  for (int value : {1, 2, 3, 4, 5}) mproc::Process(cube, value).run();
}
