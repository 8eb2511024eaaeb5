#include "report/metric.hpp"

#include <cmath>

namespace aiopt {

std::string to_string(Better better) { return better == Better::higher ? "higher" : "lower"; }

Movement movement(double base, double now, Better better, double within) {
  const bool moved = base == 0 ? now != 0 : std::fabs(now - base) / std::fabs(base) > within;
  if (!moved) return Movement::same;
  const bool improved = better == Better::higher ? now > base : now < base;
  return improved ? Movement::better : Movement::worse;
}

}  // namespace aiopt
