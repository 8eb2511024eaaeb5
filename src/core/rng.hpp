#pragma once
// Counter-based random numbers: the value at (seed, counter) is a pure function of both, so a
// CPU loop, a fused kernel and a CUDA thread that ask for element i all get the same number,
// in any order. The mixer is SplitMix64's finalizer (Steele, Lea, Flood 2014).
#include <cstdint>

#include "core/host_device.hpp"

namespace aiopt::rng {

AIOPT_HD std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A 64-bit value that depends on every bit of seed and counter.
AIOPT_HD std::uint64_t bits(std::uint64_t seed, std::uint64_t counter) {
  return mix64(mix64(seed + 0x9e3779b97f4a7c15ULL) ^ (counter * 0x9e3779b97f4a7c15ULL));
}

// Uniform in [0, 1) with 24 bits of resolution (exact in float).
AIOPT_HD float uniform(std::uint64_t seed, std::uint64_t counter) {
  return static_cast<float>(bits(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

// A sequential generator over the same function, for filling inputs on the host.
class Stream {
 public:
  explicit Stream(std::uint64_t seed) : seed_(seed) {}
  std::uint64_t next_bits() { return bits(seed_, counter_++); }
  float uniform() { return rng::uniform(seed_, counter_++); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }

 private:
  std::uint64_t seed_;
  std::uint64_t counter_ = 0;
};

}  // namespace aiopt::rng
