#pragma once
// A tqdm-like progress bar on stderr: redrawn in place on a terminal, a plain line
// every few seconds otherwise (so logs and CI output stay readable).

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>

namespace mproc::detail {

class ProgressBar {
 public:
  using clock = std::chrono::steady_clock;

  explicit ProgressBar(std::optional<std::size_t> total, int fd = STDERR_FILENO)
      : total_(total), fd_(fd), tty_(::isatty(fd) == 1), start_(clock::now()), last_draw_(start_) {
    draw(false);
  }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar() { close(); }

  /// Counts n more items done; redraws when enough time has passed.
  void update(std::size_t n = 1) {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    done_ += n;
    const auto now = clock::now();
    if (now - last_draw_ >= (tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(3000))) {
      last_draw_ = now;
      draw(false);
    }
  }

  /// Draws the final state once and ends the line.
  void close() {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    closed_ = true;
    draw(true);
  }

  /// The line as it would be drawn now, e.g.
  /// " 45%|#########           | 450/1000 [00:02<00:03, 180.52 it/s]".
  std::string line() const {
    const double elapsed = std::chrono::duration<double>(clock::now() - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
    char rate_text[32];
    std::snprintf(rate_text, sizeof rate_text, "%.2f it/s", rate);
    if (!total_) {
      return std::to_string(done_) + " [" + clock_text(elapsed) + ", " + rate_text + "]";
    }
    const double frac = *total_ == 0 ? 1.0 : static_cast<double>(done_) / static_cast<double>(*total_);
    constexpr int width = 20;
    const int filled = static_cast<int>(frac * width + 1e-9);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, ' ');
    char pct[8];
    std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(frac * 100 + 1e-9));
    const double eta = rate > 0 ? static_cast<double>(*total_ - std::min(done_, *total_)) / rate : 0.0;
    return std::string(pct) + "|" + bar + "| " + std::to_string(done_) + "/" + std::to_string(*total_) + " [" +
           clock_text(elapsed) + "<" + (rate > 0 ? clock_text(eta) : std::string("?")) + ", " + rate_text + "]";
  }

 private:
  static std::string clock_text(double seconds) {
    const auto s = static_cast<long>(seconds);
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
    return buf;
  }
  void draw(bool final) {
    // One write() per line, so lines from other processes never split it. On a
    // terminal the line is redrawn in place; "\x1b[K" erases what a longer line drawn
    // before left beyond its end.
    std::string text = tty_ ? "\r" + line() + "\x1b[K" + (final ? "\n" : "") : line() + "\n";
    if (!tty_ && !final && done_ == 0 && drawn_) return;
    drawn_ = true;
    (void)!::write(fd_, text.data(), text.size());
  }

  std::mutex mutex_;
  std::optional<std::size_t> total_;
  std::size_t done_ = 0;
  int fd_;
  bool tty_;
  bool closed_ = false;
  bool drawn_ = false;
  clock::time_point start_;
  clock::time_point last_draw_;
};

}  // namespace mproc::detail
