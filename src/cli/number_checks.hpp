#pragma once
// Checks of numeric flags. CLI11 2.1's PositiveNumber and NonNegativeNumber print the whole
// double range in their messages ("not in range 0.000000 to 1797693...0.000000"); these say
// what is allowed.
#include <CLI/CLI.hpp>

namespace aiopt::cli {

CLI::Validator positive_number();      // > 0
CLI::Validator non_negative_number();  // >= 0

}  // namespace aiopt::cli
