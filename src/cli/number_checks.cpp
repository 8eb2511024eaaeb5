#include "cli/number_checks.hpp"

#include <cmath>
#include <string>

namespace aiopt::cli {

namespace {

CLI::Validator number_at_least(double lowest, bool inclusive, const std::string& allowed) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        double value = 0.0;
        std::size_t used = 0;
        try {
          value = std::stod(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        const bool ok = used == text.size() && std::isfinite(value) && (inclusive ? value >= lowest : value > lowest);
        return ok ? std::string() : "'" + text + "' is not allowed; use " + allowed;
      },
      allowed);
}

}  // namespace

CLI::Validator positive_number() { return number_at_least(0.0, false, "a number > 0"); }
CLI::Validator non_negative_number() { return number_at_least(0.0, true, "a number >= 0"); }

}  // namespace aiopt::cli
