// Process: start, join, join with a timeout, is_alive, daemon,
// terminate, kill and exitcode. Sleeps are a tenth of the Python version's.
#include <mproc/mproc.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

using namespace std::chrono_literals;

void sleeping() {
  std::cout << "Before sleep" << std::endl;
  std::this_thread::sleep_for(200ms);
  std::cout << "After sleep" << std::endl;
}

std::string show(std::optional<int> code) { return code ? std::to_string(*code) : "None"; }

int main() {
  {
    mproc::Process p(sleeping);
    std::cout << "Before start" << std::endl;
    p.start();
    std::cout << "After start" << std::endl;
    p.join();  // without it, "After join" would usually print before the child's lines
    std::cout << "After join" << std::endl;
  }
  {
    mproc::Process p(mproc::ProcessOptions{.daemon = false}, sleeping);
    p.start();
    std::cout << std::boolalpha << "is_alive after start: " << p.is_alive() << std::endl;
    const bool finished = p.join(3s);  // join(timeout=3)
    std::cout << "joined within 3 s: " << finished << ", is_alive: " << p.is_alive() << std::endl;
  }
  {
    // A daemon is terminated when its parent is done with it: this one would sleep
    // for an hour, but the Process going out of scope ends it.
    mproc::Process d(mproc::ProcessOptions{.name = "daemon-1", .daemon = true},
                     [] { std::this_thread::sleep_for(1h); });
    d.start();
    std::cout << d.name() << " daemon: " << d.daemon() << ", pid " << (d.pid() > 0 ? "set" : "unset") << std::endl;
  }
  {
    mproc::Process returns([] {});
    mproc::Process exits([] { std::exit(3); });
    mproc::Process throws([] { throw std::runtime_error("uncaught"); });  // also printed to stderr
    mproc::Process terminated([] { std::this_thread::sleep_for(1h); });
    mproc::Process killed([] { std::this_thread::sleep_for(1h); });
    for (auto* p : {&returns, &exits, &throws, &terminated, &killed}) p->start();
    std::cout << "exitcode while running: " << show(terminated.exitcode()) << std::endl;
    terminated.terminate();  // SIGTERM
    killed.kill();           // SIGKILL
    for (auto* p : {&returns, &exits, &throws, &terminated, &killed}) p->join();
    std::cout << "exitcodes: return " << show(returns.exitcode()) << ", exit(3) " << show(exits.exitcode())
              << ", exception " << show(throws.exitcode()) << ", terminate " << show(terminated.exitcode()) << ", kill "
              << show(killed.exitcode()) << std::endl;
  }
}
