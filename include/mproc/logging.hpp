#pragma once
// Logging from many processes: every line whole, tagged with its process's name,
// printed by one listener in the order the lines were logged (the idea of Python's
// QueueHandler and QueueListener).
//
//   mproc::LogListener listener;          // in the main process, before starting children
//   mproc::log("got ", x, " items");      // anywhere: "[Process-2] got 5 items"
//
// LogListener serves the lines on a thread of the process that makes it and
// installs itself as the destination of mproc::log() there and in every process
// forked after it. Destroy it after the processes (and this process's other
// threads) that log to it have ended: it prints everything logged before it was
// destroyed, then stops. A copy a child inherited stops nothing when the child's
// statics are destroyed (std::exit). Without a listener,
// mproc::log() writes each line straight to stderr with one write(), which keeps
// short lines whole but promises no order.
//
// The parts are a LogQueue (a Queue of LogRecords that any process logs into) and
// its serve() loop, which may also run in a logger process of its own:
//
//   mproc::LogQueue logs;
//   mproc::Process logger([logs] { logs.serve(); });   // a logger process, as in Python's logging recipes
//   logger.start();  ...  logs.log("working");  ...  logs.stop();  logger.join();

#include <mproc/codec.hpp>
#include <mproc/current_process.hpp>
#include <mproc/detail/os/fd.hpp>
#include <mproc/detail/os/fork_gate.hpp>
#include <mproc/queue.hpp>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <new>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace mproc {

/// One logged line and who logged it.
struct LogRecord {
  /// The logging process's name (current_process().name()).
  std::string process;
  /// The logging process's id.
  std::int64_t pid = 0;
  /// The line, without a trailing newline.
  std::string message;
};

template <>
struct Codec<LogRecord> {
  static void encode(detail::Writer& w, const LogRecord& r) {
    detail::encode_value(w, r.process);
    detail::encode_value(w, r.pid);
    detail::encode_value(w, r.message);
  }
  static LogRecord decode(detail::Reader& r) {
    LogRecord rec;
    rec.process = detail::decode_value<std::string>(r);
    rec.pid = detail::decode_value<std::int64_t>(r);
    rec.message = detail::decode_value<std::string>(r);
    return rec;
  }
};

/// "[name] message\n"; each line of a message with newlines gets the tag, so that
/// every line printed says where it came from.
inline std::string format_log_line(const LogRecord& record) {
  std::string out;
  out.reserve(record.process.size() + record.message.size() + 4);
  std::string_view rest = record.message;
  for (;;) {
    const std::size_t nl = rest.find('\n');
    out.append("[").append(record.process).append("] ").append(rest.substr(0, nl)).append("\n");
    if (nl == std::string_view::npos || nl + 1 == rest.size()) return out;  // a final newline ends the last line
    rest.remove_prefix(nl + 1);
  }
}

/// The default sink: the formatted line to stderr in one write().
inline void write_log_line(const LogRecord& record) {
  const std::string line = format_log_line(record);
  (void)detail::write_all(STDERR_FILENO, line.data(), line.size());
}

/// Where served lines go.
using LogSink = std::function<void(const LogRecord&)>;

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  if constexpr (sizeof...(Parts) == 1 && (std::is_convertible_v<const Parts&, std::string_view> && ...)) {
    return std::string(std::string_view(parts...));
  } else {
    std::ostringstream out;
    (out << ... << parts);
    return std::move(out).str();
  }
}

}  // namespace detail

/// A queue of log lines shared by the processes forked after it was made. Copies
/// are handles to the same queue.
class LogQueue {
 public:
  /// Sends one line (the parts streamed together with operator<<), tagged with this
  /// process's name.
  template <class... Parts>
  void log(const Parts&... parts) const {
    const CurrentProcess& self = current_process();
    queue_.put(LogRecord{self.name(), self.pid(), detail::concat(parts...)});
  }

  /// Hands each line to sink, in the order they were logged, until a stop() line.
  /// Run it in one process or thread per stop().
  void serve(const LogSink& sink = write_log_line) const {
    for (;;) {
      LogRecord record = queue_.get();
      if (record.pid == stop_pid) return;
      sink(record);
    }
  }

  /// Ends a serve() loop once the lines logged before this call are served.
  void stop() const { queue_.put(LogRecord{"", stop_pid, ""}); }

  /// The underlying queue.
  const Queue<LogRecord>& queue() const noexcept { return queue_; }

 private:
  static constexpr std::int64_t stop_pid = 0;  // no process has pid 0
  Queue<LogRecord> queue_;
};

namespace detail {

/// The LogQueue mproc::log() writes to in this process, if any (any thread may log
/// while another makes or destroys a listener).
inline std::atomic<const LogQueue*>& default_log_queue() noexcept {
  static std::atomic<const LogQueue*> queue{nullptr};
  return queue;
}

}  // namespace detail

/// Serves a LogQueue on a thread of this process, and makes it the destination of
/// mproc::log() here and in processes forked while it lives.
class LogListener {
 public:
  /// Starts serving; lines go to sink (default: stderr, "[name] message").
  explicit LogListener(LogSink sink = write_log_line) : previous_(detail::default_log_queue().load()) {
    // The thread starts with every signal blocked, so signals stay with the user's threads.
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    std::atomic<bool> joined{false};
    try {
      new (&thread_) std::thread([this, sink = std::move(sink), &joined] {
        const detail::ForkGate::Member gate;  // sanitized builds: no fork lands inside the sink's malloc
        joined = true;
        joined.notify_one();
        logs_.serve(sink);
      });
    } catch (...) {
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
      throw;
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    joined.wait(false);  // the thread's start-up allocations are over before this one may fork
    detail::default_log_queue().store(&logs_);
  }
  LogListener(const LogListener&) = delete;
  LogListener& operator=(const LogListener&) = delete;
  /// Serves every line logged so far, then stops the thread. In a process forked
  /// while it lived (a static listener, in a child that calls std::exit), it only
  /// stops being this process's destination: the thread and its queue serve the
  /// process that made it.
  ~LogListener() {
    detail::default_log_queue().store(previous_);
    if (owner_ != ::getpid()) return;
    logs_.stop();
    thread_.join();
    thread_.~thread();
  }

  /// The queue this listener serves.
  const LogQueue& queue() const noexcept { return logs_; }

 private:
  LogQueue logs_;
  const LogQueue* previous_;
  pid_t owner_ = ::getpid();
  // Destroyed by hand, in the owner only: in a forked child the thread does not
  // exist, and join, detach or the destructor of its copy would touch whatever glibc
  // reuses its descriptor for.
  union {
    std::thread thread_;
  };
};

/// Logs one line (the parts streamed together) tagged with this process's name: to
/// the LogListener that is live here (or was when this process was forked), else
/// straight to stderr.
template <class... Parts>
void log(const Parts&... parts) {
  if (const LogQueue* logs = detail::default_log_queue().load()) {
    logs->log(parts...);
  } else {
    const CurrentProcess& self = current_process();
    write_log_line(LogRecord{self.name(), self.pid(), detail::concat(parts...)});
  }
}

}  // namespace mproc
