#pragma once
// One number as text through a printf format ("%.2fx", "%+.1f%%"): the phrases of reports
// ("7.9x faster", "+0.4% perplexity") need printf's control of digits, which iostreams lack.
#include <cstdio>
#include <string>

namespace aiopt {

inline std::string printed(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

}  // namespace aiopt
