#include "terminal_progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace iu {

TerminalProgress::TerminalProgress(bool quiet, bool verbose)
    : live_(!quiet && isatty(STDERR_FILENO)), notes_(live_ || verbose) {}

void TerminalProgress::Step(absl::string_view step) {
  step_ = std::string(step);
  detail_.clear();
  Draw();
}

void TerminalProgress::Detail(absl::string_view detail) {
  detail_ = std::string(detail);
  // At most ~10 redraws a second: pip can print thousands of lines.
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ > std::chrono::milliseconds(100)) Draw();
}

void TerminalProgress::Note(absl::string_view message) {
  if (!notes_) return;
  if (drawn_) std::fputs("\r\033[K", stderr);
  std::fprintf(stderr, "inferenceutils: %.*s\n", static_cast<int>(message.size()), message.data());
  drawn_ = false;
  Draw();
}

void TerminalProgress::Finish() {
  if (drawn_) std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  drawn_ = false;
}

void TerminalProgress::Draw() {
  if (!live_ || step_.empty()) return;
  last_draw_ = std::chrono::steady_clock::now();
  double elapsed = std::chrono::duration<double>(last_draw_ - start_).count();
  std::string line = absl::StrFormat("[%5.1fs] %s", elapsed, step_);
  if (!detail_.empty()) absl::StrAppend(&line, ": ", detail_);
  winsize ws{};
  size_t width = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10 ? ws.ws_col : 100;
  if (line.size() > width - 1) line = line.substr(0, width - 2) + "…";
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace iu
