#include "harness/progress.hpp"

#include <unistd.h>

#include <algorithm>

namespace aiopt {

namespace {

std::string clock_text(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

}  // namespace

Progress::Progress(std::size_t total, ProgressMode mode, std::FILE* out)
    : total_(total), out_(out), start_(std::chrono::steady_clock::now()) {
  enabled_ = mode != ProgressMode::never;
  live_ = mode == ProgressMode::always || (mode == ProgressMode::automatic && isatty(fileno(out)));
}

std::string Progress::eta(std::size_t done) const {
  if (done == 0) return "?";
  const double spent =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return clock_text(spent / static_cast<double>(done) * static_cast<double>(total_ - done));
}

void Progress::begin(std::size_t index, const std::string& label) {
  if (!enabled_ || !live_) return;
  constexpr int width = 24;
  const int filled = total_ ? static_cast<int>(width * index / total_) : 0;
  std::string bar(static_cast<std::size_t>(filled), '=');
  bar.resize(width, ' ');
  std::string shown = label.size() > 60 ? label.substr(0, 57) + "..." : label;
  std::fprintf(out_, "\r\033[K[%s] %zu/%zu ETA %s  %s", bar.c_str(), index + 1, total_,
               eta(index).c_str(), shown.c_str());
  std::fflush(out_);
}

void Progress::end(std::size_t index, const std::string& label, const std::string& outcome) {
  if (!enabled_) return;
  if (live_) {
    // Keep a line per case that did not end ok, so failures stay on screen.
    if (outcome.rfind("ok", 0) != 0)
      std::fprintf(out_, "\r\033[K[%zu/%zu] %s: %s\n", index + 1, total_, label.c_str(),
                   outcome.c_str());
    return;
  }
  std::fprintf(out_, "[%zu/%zu] %s: %s (ETA %s)\n", index + 1, total_, label.c_str(),
               outcome.c_str(), eta(index + 1).c_str());
  std::fflush(out_);
}

void Progress::finish() {
  if (enabled_ && live_) {
    std::fprintf(out_, "\r\033[K");
    std::fflush(out_);
  }
}

}  // namespace aiopt
