// Manager: a list shared by two named processes, each appending one
// number. Python's Manager runs a server process and sends every call to it; here the
// list lives in shared memory and append() is a few stores under a lock.
#include <mproc/mproc.hpp>

#include <cstddef>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

std::string format(const std::vector<int>& values) {
  std::ostringstream out;
  out << '[';
  for (std::size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  out << ']';
  return out.str();
}

void worker(mproc::SharedList<int> liste, int x) {
  liste.append(x);
  std::cout << "list by: " << mproc::current_process().name() << ' ' << format(liste.snapshot()) << std::endl;
}

int main() {
  mproc::Manager m;
  auto liste = m.list<int>();

  mproc::Process p1({.name = "worker1"}, worker, liste, 30);
  mproc::Process p2({.name = "worker2"}, worker, liste, 70);
  p1.start();
  p2.start();
  p1.join();
  p2.join();

  std::cout << "final list: " << format(liste.snapshot()) << std::endl;
}
