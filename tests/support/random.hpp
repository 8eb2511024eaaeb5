#pragma once
// Fresh random test inputs: the same values for the same seed, on every run and machine.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/rng.hpp"

namespace aiopt::test {

// n values uniform in [lo, hi) from rng::Stream(seed).
inline std::vector<float> random_vector(std::size_t n, std::uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  rng::Stream s(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = s.uniform(lo, hi);
  return v;
}

}  // namespace aiopt::test
