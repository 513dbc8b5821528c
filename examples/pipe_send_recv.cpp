// Pipe: a child sends ["Hello", "World", None] through one end of a
// duplex Pipe; the parent receives it from the other. The child's end is moved into
// the Process, so the parent holds only its own.
#include <mproc/mproc.hpp>

#include <iostream>
#include <optional>
#include <string>
#include <vector>

using Message = std::vector<std::optional<std::string>>;  // None is std::nullopt

void foo(mproc::Connection<Message> conn) {
  conn.send({"Hello", "World", std::nullopt});
  conn.close();
}

int main() {
  auto [parent, child] = mproc::Pipe<Message>();
  mproc::Process p(foo, std::move(child));
  p.start();
  const Message got = parent.recv();
  std::cout << '[';
  for (std::size_t i = 0; i < got.size(); ++i) std::cout << (i ? ", " : "") << (got[i] ? "'" + *got[i] + "'" : "None");
  std::cout << ']' << std::endl;
  p.join();
}
