#pragma once
// mproc::Process: Python's multiprocessing.Process, on fork.
//
//   mproc::Process p(cube, 5);                      // a target and its arguments
//   mproc::Process q(mproc::ProcessOptions{.name = "worker-1", .daemon = true}, target, args...);
//   struct MyProc : mproc::Process { void run() override { ... } };
//   p.start(); p.join();  bool done = p.join(std::chrono::seconds(2));
//   std::optional<int> code = p.exitcode();
//
// The target and its arguments are stored by value (moved or copied in, like
// std::thread) and reach the child through fork: nothing is encoded, so any movable
// type works, and a Connection moved in is handed over (see pipe.hpp). The parent
// drops its copy of them when start() returns.
//
// exitcode(): nullopt while running; 0 when run() returns; N after std::exit(N) in
// the child; 1 after an uncaught exception (its type, message and the process's
// name go to stderr); -N after signal N.
//
// Lifetime, as in Python where it can be:
// - A started Process is always reaped: by join(), or by its destructor, which
//   joins a non-daemon (waits for it to finish) and terminates a daemon (SIGTERM,
//   then SIGKILL after 1 s). During stack unwinding from an exception, the
//   destructor terminates a non-daemon too, rather than wait on a child that may be
//   waiting for the failed parent.
// - When the program exits normally (main returns, std::exit) while Processes are
//   alive, daemons are terminated and the others joined, as Python does.
// - Children started from the main thread die with their parent (PR_SET_PDEATHSIG,
//   SIGKILL) if it is killed, so a Ctrl-C or a crash leaves no orphan. The kernel
//   ties that signal to the thread that forked, so children started from another
//   thread do not get it (they would die when that thread ends).
// - Process objects may be moved (into a std::vector, say) even while running, but
//   not copied. A target that captures `this` of a Process subclass breaks when the
//   object moves; override run() instead.

#include <mproc/current_process.hpp>
#include <mproc/detail/os/child.hpp>
#include <mproc/detail/os/deadline.hpp>
#include <mproc/detail/os/pid.hpp>
#include <mproc/detail/wire/type_name.hpp>  // describe_current_exception
#include <mproc/errors.hpp>

#include <sys/prctl.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace mproc {

class Process;

namespace detail {

/// A Process's target and arguments, type-erased.
class ProcessTarget {
 public:
  virtual ~ProcessTarget() = default;
  virtual void call() = 0;
  /// In the child: tells the arguments that want to know (Connections) that they
  /// were handed to it.
  virtual void handed_to_child() noexcept = 0;
};

template <class F, class... Args>
concept process_target = std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&...> ||
                         std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&&...>;

template <class F, class... Args>
class BoundTarget final : public ProcessTarget {
 public:
  template <class G, class... Xs>
  explicit BoundTarget(G&& f, Xs&&... xs) : f_(std::forward<G>(f)), args_(std::forward<Xs>(xs)...) {}

  void call() override {
    // Lvalues when the target takes them (references, copies); otherwise the stored
    // arguments are moved in (a move-only Connection taken by value).
    if constexpr (std::is_invocable_v<F&, Args&...>) std::apply(f_, args_);
    else std::apply(f_, std::move(args_));
  }
  void handed_to_child() noexcept override {
    std::apply([](auto&... arg) { (tell(arg), ...); }, args_);
  }

 private:
  template <class A>
  static void tell(A& arg) noexcept {
    if constexpr (requires { arg.handed_to_child(); }) arg.handed_to_child();
  }
  F f_;
  std::tuple<Args...> args_;
};

/// The Processes this process started and has not reaped yet, for the exit handler.
/// Never destroyed (Processes with static storage may outlive any static), and a
/// forked child starts with an empty one (the parent's mutex may have been held by
/// another thread at the fork).
class LiveProcesses {
 public:
  static LiveProcesses& get() {
    static LiveProcesses* live = new LiveProcesses(nullptr);
    if (live->pid_ != detail::current_pid()) live = new LiveProcesses(live);  // the parent's, inherited: set it aside
    return *live;
  }
  void add(Process* p) {
    std::lock_guard lock(m_);
    list_.push_back(p);
  }
  void remove(Process* p) noexcept {
    std::lock_guard lock(m_);
    list_.erase(std::remove(list_.begin(), list_.end(), p), list_.end());
  }
  void replace(Process* from, Process* to) noexcept {
    std::lock_guard lock(m_);
    std::replace(list_.begin(), list_.end(), from, to);
  }
  std::vector<Process*> snapshot() {
    std::lock_guard lock(m_);
    return list_;
  }

 private:
  explicit LiveProcesses(LiveProcesses* inherited) noexcept : inherited_(inherited) {}

  pid_t pid_ = detail::current_pid();
  std::mutex m_;
  std::vector<Process*> list_;
  [[maybe_unused]] LiveProcesses* inherited_;  // kept reachable, never used
};

void finish_processes_at_exit() noexcept;

}  // namespace detail

/// How a Process runs. Designated initializers: {.name = "worker-1", .daemon = true}.
struct ProcessOptions {
  /// The process's name; empty means "Process-<n>", numbered as Python does.
  std::string name = {};
  /// A daemon is terminated, not waited for, when its parent exits or its Process
  /// object is destroyed.
  bool daemon = false;
};

/// A child process that runs a target (or an overridden run()) once.
class Process {
 public:
  /// A process whose run() does nothing unless a subclass overrides it.
  Process() : Process(ProcessOptions{}) {}
  /// As Process(), with a name and daemon flag.
  explicit Process(ProcessOptions options) {
    auto [identity, name] = detail::this_process().next_child();
    identity_ = std::move(identity);
    name_ = options.name.empty() ? std::move(name) : std::move(options.name);
    daemon_ = options.daemon;
  }
  /// A process that runs target(args...): a function, a lambda, any callable.
  template <class F, class... Args>
    requires detail::process_target<F, Args...>
  explicit Process(F&& target, Args&&... args)
      : Process(ProcessOptions{}, std::forward<F>(target), std::forward<Args>(args)...) {}
  /// As above, with a name and daemon flag.
  template <class F, class... Args>
    requires detail::process_target<F, Args...>
  Process(ProcessOptions options, F&& target, Args&&... args) : Process(std::move(options)) {
    target_ = std::make_unique<detail::BoundTarget<std::decay_t<F>, std::decay_t<Args>...>>(
        std::forward<F>(target), std::forward<Args>(args)...);
  }

  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  /// Moves the process, running or not; other becomes an unstarted husk.
  Process(Process&& other) noexcept { take(other); }
  /// Finishes this process as the destructor would, then takes other's.
  Process& operator=(Process&& other) noexcept {
    if (this != &other) {
      finish();
      take(other);
    }
    return *this;
  }
  /// Reaps a started process: joins a non-daemon, terminates a daemon (see above).
  virtual ~Process() { finish(); }

  /// What the child runs: the target given at construction. Override it in a
  /// subclass instead of passing a target. Calling it directly runs it here.
  virtual void run() {
    if (target_) target_->call();
  }

  /// Forks the child, which runs run() and exits. Throws ValueError if called twice.
  void start() {
    check_not_closed("start");
    if (pid_ != 0) throw ValueError("mproc: Process.start: a process can only be started once");
    if (owner_ != detail::current_pid()) {
      throw ValueError("mproc: Process.start: can only start a Process made by this process");
    }
    static const bool exit_handler = (std::atexit(detail::finish_processes_at_exit), true);
    (void)exit_handler;
    const pid_t parent = detail::current_pid();
    const bool main_thread = detail::current_tid() == parent;
    child_ = std::make_unique<detail::Child>(detail::fork_child({}, [&] { return child_main(parent, main_thread); }));
    pid_ = child_->pid();
    target_.reset();  // the parent's copy of the target and arguments, handed-over Connections too
    detail::LiveProcesses::get().add(this);
    registered_ = true;
  }

  /// Waits until the process ends. Throws ValueError if it was never started.
  void join() {
    check_mine("join");
    child_->wait();
    reaped();
  }
  /// Waits at most timeout for the process to end (not at all if negative, forever if
  /// too long for the clock); returns whether it has.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    check_mine("join");
    child_->wait(detail::Deadline::after(timeout));
    if (child_->running()) return false;
    reaped();
    return true;
  }

  /// Whether the process has started and not yet ended.
  bool is_alive() {
    check_not_closed("is_alive");
    if (!child_ || owner_ != detail::current_pid()) return false;
    child_->try_reap();
    if (child_->running()) return true;
    reaped();
    return false;
  }
  /// nullopt while running (or never started); else as described at the top.
  std::optional<int> exitcode() {
    check_not_closed("exitcode");
    if (!child_ || owner_ != detail::current_pid()) return std::nullopt;
    const auto& status = child_->try_reap();
    if (!status) return std::nullopt;
    reaped();
    return status->python_exitcode();
  }

  /// Sends SIGTERM (Python's terminate()). Does nothing once the process has ended.
  void terminate() {
    check_mine("terminate");
    child_->kill(SIGTERM);
  }
  /// Sends SIGKILL (Python's kill()). Does nothing once the process has ended.
  void kill() {
    check_mine("kill");
    child_->kill(SIGKILL);
  }
  /// Releases the Process (Python's close()) and closes its sentinel; ValueError if
  /// it is still running. Afterwards every call but name(), pid() and daemon()
  /// throws ValueError.
  void close() {
    if (child_ && owner_ == detail::current_pid()) {
      child_->try_reap();
      if (child_->running()) {
        throw ValueError("mproc: Process.close: the process is still running; join() or terminate() it first");
      }
      reaped();
      child_.reset();
    }
    target_.reset();
    closed_ = true;
  }

  /// The process's name.
  const std::string& name() const noexcept { return name_; }
  /// Renames the process; takes effect in the child if called before start().
  void name(std::string new_name) { name_ = std::move(new_name); }
  /// Whether the process is a daemon.
  bool daemon() const noexcept { return daemon_; }
  /// Sets the daemon flag; only before start() (ValueError after).
  void daemon(bool on) {
    if (pid_ != 0) throw ValueError("mproc: Process.daemon: cannot change the daemon flag of a started process");
    daemon_ = on;
  }
  /// The child's process id; 0 before start().
  pid_t pid() const noexcept { return pid_; }
  /// A descriptor that becomes readable when the process ends (a pidfd; Python's
  /// sentinel), for poll() together with other descriptors. As in Python it stays
  /// open, the same descriptor, until close() or the destructor, join() or not; -1
  /// before start() (and in a copy of the object inherited by a forked child).
  /// ValueError after close().
  int sentinel() const {
    check_not_closed("sentinel");
    return child_ && owner_ == detail::current_pid() ? child_->pidfd() : -1;
  }

 private:
  friend void detail::finish_processes_at_exit() noexcept;

  int child_main(pid_t parent, bool main_thread) {
    try {
      if (main_thread) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) return 1;  // the parent died before prctl took effect
      }
      detail::this_process().become_child(name_, daemon_, identity_);
      if (target_) target_->handed_to_child();
      run();
      return 0;
    } catch (...) {
      const detail::ExceptionInfo info = detail::describe_current_exception();
      std::fprintf(stderr, "mproc: uncaught exception in process \"%s\" (pid %d): %s%s%s\n", name_.c_str(),
                   static_cast<int>(detail::current_pid()), info.type.c_str(), info.message.empty() ? "" : ": ",
                   info.message.c_str());
      return 1;
    }
  }

  void check_not_closed(const char* what) const {
    if (closed_) throw ValueError(std::string("mproc: Process.") + what + ": the process object is closed");
  }
  /// The process must be started, by this very process.
  void check_mine(const char* what) const {
    check_not_closed(what);
    if (!child_) throw ValueError(std::string("mproc: Process.") + what + ": the process was never started");
    if (owner_ != detail::current_pid()) {
      throw ValueError(std::string("mproc: Process.") + what + ": can only be called in the process that started it");
    }
  }

  void reaped() noexcept {
    if (registered_) detail::LiveProcesses::get().remove(this);
    registered_ = false;
  }

  /// Terminates, then kills after a grace period, and reaps.
  void stop() noexcept {
    try {
      child_->kill(SIGTERM);
      child_->wait(detail::Deadline::after(std::chrono::seconds(1)));
      child_->kill(SIGKILL);
      child_->wait();
    } catch (...) {
    }
    reaped();
  }

  void finish() noexcept {
    if (!child_) return;
    if (owner_ != detail::current_pid()) {
      // A copy inherited by a forked child: the process is not this one's to reap,
      // and its pidfd is not open here.
      (void)child_.release();
      return;
    }
    if (child_->running()) {
      if (daemon_ || std::uncaught_exceptions() > uncaught_) {
        stop();
      } else {
        try {
          child_->wait();
        } catch (...) {
        }
      }
    }
    reaped();
    child_.reset();
  }

  void take(Process& other) noexcept {
    name_ = std::move(other.name_);
    identity_ = std::move(other.identity_);
    daemon_ = other.daemon_;
    closed_ = other.closed_;
    owner_ = other.owner_;
    uncaught_ = other.uncaught_;
    target_ = std::move(other.target_);
    child_ = std::move(other.child_);
    pid_ = std::exchange(other.pid_, 0);
    registered_ = std::exchange(other.registered_, false);
    if (registered_) detail::LiveProcesses::get().replace(&other, this);
  }

  std::string name_;
  std::string identity_;
  bool daemon_ = false;
  bool closed_ = false;
  bool registered_ = false;
  pid_t pid_ = 0;  // the child's, once started
  pid_t owner_ = detail::current_pid();  // the process that made this object: it alone starts, joins, reaps
  int uncaught_ = std::uncaught_exceptions();
  std::unique_ptr<detail::ProcessTarget> target_;
  std::unique_ptr<detail::Child> child_;
};

namespace detail {

/// At normal exit, like Python: terminate the daemons still running, then join
/// every child still running.
inline void finish_processes_at_exit() noexcept {
  try {
    const std::vector<Process*> live = LiveProcesses::get().snapshot();
    for (Process* p : live) {
      if (p->daemon_ && p->child_ && p->owner_ == detail::current_pid()) p->stop();
    }
    for (Process* p : live) {
      if (!p->daemon_ && p->child_ && p->owner_ == detail::current_pid()) {
        p->child_->wait();
        p->reaped();
      }
    }
  } catch (...) {
  }
}

}  // namespace detail
}  // namespace mproc
