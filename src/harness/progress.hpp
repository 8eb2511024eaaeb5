#pragma once
// Progress of a sweep on stderr: a live bar with case i/N and the ETA on a terminal, plain
// lines otherwise (CI logs, pipes), or nothing.
#include <chrono>
#include <cstdio>
#include <string>

namespace aiopt {

enum class ProgressMode { automatic, always, never };

class Progress {
 public:
  // `automatic` draws the live bar when `out` is a terminal and writes plain lines otherwise.
  Progress(std::size_t total, ProgressMode mode, std::FILE* out = stderr);

  void begin(std::size_t index, const std::string& label);  // index counts from 0
  void end(std::size_t index, const std::string& label, const std::string& outcome);
  void finish();  // ends the live line

 private:
  std::string eta(std::size_t done) const;
  std::size_t total_;
  bool live_ = false;
  bool enabled_ = true;
  std::FILE* out_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace aiopt
