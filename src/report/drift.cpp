#include "report/drift.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace aiopt {

double drift(const Report& base, const Report& now) {
  std::vector<double> speeds;
  for (const Report* report : {&base, &now})
    for (const auto& r : report->results)
      if (r.canary_gflops && std::isfinite(*r.canary_gflops) && *r.canary_gflops > 0)
        speeds.push_back(*r.canary_gflops);
  if (speeds.size() < min_canaries_for_drift) return 0;
  std::sort(speeds.begin(), speeds.end());
  // The k-th smallest and the k-th largest, k = ceil(n / 40): the nearest rank of the 2.5th
  // percentile, taken the same distance in from each end.
  const std::size_t n = speeds.size();
  const std::size_t k = std::max<std::size_t>(1, (n + 39) / 40);
  return speeds[n - k] / speeds[k - 1] - 1;
}

}  // namespace aiopt
