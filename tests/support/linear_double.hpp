#pragma once
// The exact-arithmetic reference of a linear layer, which the weight-format kernel tests bound
// their fp32 and storage errors against.
#include <cstddef>
#include <vector>

namespace aiopt::test {

// y = x·wᵀ (+ b) for x (m, k), w (n, k) and b (n) or null: y (m, n), each element starting from
// its bias and adding the k products in order, all in double.
inline std::vector<double> linear_double(const std::vector<float>& w, const std::vector<float>& x, const float* b,
                                         std::size_t m, std::size_t n, std::size_t k) {
  std::vector<double> y(m * n);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double sum = b ? b[j] : 0.0;
      for (std::size_t p = 0; p < k; ++p) sum += static_cast<double>(w[j * k + p]) * x[i * k + p];
      y[i * n + j] = sum;
    }
  return y;
}

}  // namespace aiopt::test
