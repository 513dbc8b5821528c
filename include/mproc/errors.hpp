#pragma once
// Every exception mproc throws, in one place. All derive from mproc::Error, so
// `catch (const mproc::Error&)` catches anything the library raises.

#include <csignal>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace mproc {

/// Base of every mproc exception.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// An exception thrown by user code in another process (a Pool task, for instance).
/// what() reads "<type>: <message>"; type_name() and message() give the parts.
class RemoteError : public Error {
 public:
  RemoteError(std::string type_name, std::string message)
      : Error(type_name + ": " + message), type_name_(std::move(type_name)), message_(std::move(message)) {}
  /// The demangled type of the original exception, e.g. "std::invalid_argument".
  const std::string& type_name() const noexcept { return type_name_; }
  /// The original exception's what(), or an empty string for a non-std exception.
  const std::string& message() const noexcept { return message_; }

 private:
  std::string type_name_;
  std::string message_;
};

/// A worker process died (a signal, std::exit, abort) while running a task.
/// Exactly one of signal() and exit_code() is set.
class WorkerLost : public Error {
 public:
  WorkerLost(const std::string& what, std::optional<int> signal, std::optional<int> exit_code)
      : Error(what), signal_(signal), exit_code_(exit_code) {}
  /// The signal that killed the worker, if one did.
  std::optional<int> signal() const noexcept { return signal_; }
  /// The worker's exit status, if it exited.
  std::optional<int> exit_code() const noexcept { return exit_code_; }

 private:
  std::optional<int> signal_;
  std::optional<int> exit_code_;
};

/// A deadline passed: a task ran past PoolOptions::task_timeout, or a result was
/// not ready within AsyncResult::get(timeout).
class TimeoutError : public Error {
 public:
  using Error::Error;
};

/// A call on a Pool after close() or terminate(), or a task dropped by terminate().
class PoolClosed : public Error {
 public:
  using Error::Error;
};

/// An argument or a call that makes no sense in the object's current state, such as
/// join() before close(), or successful() before the result is ready (Python's ValueError).
class ValueError : public Error {
 public:
  using Error::Error;
};

/// Bytes that do not decode: a malformed or truncated frame or payload.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

/// An operating-system call failed; what() names the call and errno's text.
class OSError : public Error {
 public:
  OSError(const std::string& call, int err) : Error(call + ": " + std::strerror(err)), errno_(err) {}
  /// The errno value the call failed with.
  int error_code() const noexcept { return errno_; }

 private:
  int errno_;
};

/// An MPI call failed (only when the communicator's error handler returns errors;
/// MPI's default aborts the job instead). what() names the call and MPI's text.
class MpiError : public Error {
 public:
  MpiError(const std::string& what, int code) : Error(what), code_(code) {}
  /// The MPI error code the call returned.
  int error_code() const noexcept { return code_; }

 private:
  int code_;
};

/// Nothing to receive: Queue::get_nowait on an empty queue, or get(timeout) timed out.
class Empty : public Error {
 public:
  using Error::Error;
};

/// No room: Queue::put_nowait on a full bounded queue, or put(timeout) timed out.
class Full : public Error {
 public:
  using Error::Error;
};

/// The other end is gone: recv on a closed and drained Pipe or Queue.
class EOFError : public Error {
 public:
  using Error::Error;
};

/// A shared-memory segment has no room left for the operation. The segment and the
/// container the operation was on are unchanged and stay usable.
class SharedMemoryFull : public Error {
 public:
  using Error::Error;
};

/// A handle to shared state (a Manager container, Value, Array, lock or event)
/// arrived in a process that cannot map its memory any more: every process that
/// could hand it over (the one that made it, the one that sent it) has exited or
/// dropped it.
class SharedMemoryGone : public Error {
 public:
  using Error::Error;
};

/// An index out of range, as in Python (SharedList::at, pop, set; Array::at).
class IndexError : public Error {
 public:
  using Error::Error;
};

/// A Barrier was aborted, reset, or broken by a timeout while a party waited on it
/// (Python's threading.BrokenBarrierError).
class BrokenBarrierError : public Error {
 public:
  using Error::Error;
};

}  // namespace mproc
