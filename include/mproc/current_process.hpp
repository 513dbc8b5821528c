#pragma once
// mproc::current_process(): who am I? "MainProcess" in the program's first process,
// a Process's name in its child ("Process-1", or the name it was given), and
// "ForkPoolWorker-<n>" in a Pool's worker, as in Python.

#include <sys/types.h>
#include <unistd.h>

#include <string>
#include <utility>

namespace mproc {

/// What the running process knows about itself.
class CurrentProcess {
 public:
  /// This process's name: "MainProcess", or the name of the Process (or pool
  /// worker) that runs here.
  const std::string& name() const noexcept { return name_; }
  /// This process's id.
  pid_t pid() const noexcept { return ::getpid(); }
  /// Whether this process was started as a daemon.
  bool daemon() const noexcept { return daemon_; }

  /// Called in a freshly forked child (by Process, and by the Pool for its workers)
  /// to take on its name. identity is the child's place in the tree of processes
  /// ("2", "2:1"), used to name the processes it starts in turn.
  void become_child(std::string name, bool daemon, std::string identity) {
    name_ = std::move(name);
    daemon_ = daemon;
    identity_ = std::move(identity);
    started_ = 0;
  }

  /// The identity and default name ("Process-2", "Process-2:1" in a child of
  /// Process-2) of the next process this one makes, as Python counts them.
  std::pair<std::string, std::string> next_child(const std::string& prefix = "Process") {
    const std::string identity = (identity_.empty() ? "" : identity_ + ":") + std::to_string(++started_);
    return {identity, prefix + "-" + identity};
  }

 private:
  std::string name_ = "MainProcess";
  bool daemon_ = false;
  std::string identity_;
  int started_ = 0;
};

namespace detail {

/// This process's record (a copy of the parent's in a child, until become_child).
inline CurrentProcess& this_process() noexcept {
  static CurrentProcess self;
  return self;
}

/// For code that forks its own children (the Pool): gives the new child its name.
/// Call it in the child, first thing after fork. identity, from the parent's
/// this_process().next_child(prefix), names the processes the child starts in turn.
inline void set_current_process(std::string name, bool daemon, std::string identity = "") {
  this_process().become_child(std::move(name), daemon, std::move(identity));
}

}  // namespace detail

/// The running process's name, pid and daemon flag.
inline const CurrentProcess& current_process() noexcept { return detail::this_process(); }

}  // namespace mproc
