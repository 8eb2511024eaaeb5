#pragma once
// Numbers as text for people. printed(): one number through a printf format ("%.2fx",
// "%+.1f%%"): the phrases of reports ("7.9x faster", "+0.4% perplexity") need printf's control of
// digits, which iostreams lack. byte_text(): a byte count in binary units, as the table and
// Markdown show sizes (JSON and CSV keep the raw count).
#include <cmath>
#include <cstdio>
#include <string>

namespace aiopt {

inline std::string printed(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

// "512 B", "4 KiB", "70.7 MiB", "1.5 GiB": three significant digits at most, trailing zeros
// dropped; `sign` writes "+" before a positive count ("+64 MiB", "-38 MiB"), as change phrases do.
inline std::string byte_text(double bytes, bool sign = false) {
  if (!std::isfinite(bytes)) return "?";
  double v = bytes;
  const char* unit = "B";
  for (const char* larger : {"KiB", "MiB", "GiB", "TiB", "PiB"}) {
    // Never four digits: 1000 KiB reads "0.98 MiB" rather than "1000 KiB".
    if (std::fabs(v) < 999.5) break;
    v /= 1024;
    unit = larger;
  }
  const double a = std::fabs(v);
  const int decimals = unit[0] == 'B' || a >= 99.95 ? 0 : a >= 9.995 ? 1 : 2;
  char buf[64];
  std::snprintf(buf, sizeof buf, sign ? "%+.*f" : "%.*f", decimals, v);
  std::string text = buf;
  if (text.find('.') != std::string::npos) {
    while (text.back() == '0') text.pop_back();
    if (text.back() == '.') text.pop_back();
  }
  return text + " " + unit;
}

}  // namespace aiopt
