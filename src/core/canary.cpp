#include "core/canary.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <vector>

#include "core/peaks.hpp"

namespace aiopt::canary {

double host_gflops() {
  constexpr int n = size;
  constexpr double round_seconds = 2e-3;
  static const std::vector<float> a(std::size_t{n} * n, 0.5f), b(std::size_t{n} * n, 0.25f);
  static std::vector<float> c(std::size_t{n} * n);
  using clock = std::chrono::steady_clock;
  std::array<double, 5> rates{};
  for (double& rate : rates) {
    int products = 0;
    double elapsed = 0;
    const auto start = clock::now();
    do {
      peaks::square_sgemm(n, a.data(), b.data(), c.data());
      ++products;
      elapsed = std::chrono::duration<double>(clock::now() - start).count();
    } while (elapsed < round_seconds);
    rate = 2.0 * n * n * n * products / elapsed / 1e9;
  }
  std::nth_element(rates.begin(), rates.begin() + 2, rates.end());
  return rates[2];
}

}  // namespace aiopt::canary
