#pragma once
// A model's analytic gradient against central finite differences of its loss, at the entries
// where a difference quotient in fp32 is meaningful: in every tensor, those with the largest
// analytic gradient.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "core/tensor.hpp"

namespace aiopt::test {

struct GradientCheck {
  std::size_t checked = 0;
  double worst = 0.0;  // the largest |fd − analytic| / (|fd| + 1e-3)
};

// For each tensor of `params` and its analytic gradient (the same index of `grads`), the `top`
// entries of largest |gradient| are moved by ±h in place and `loss()` evaluated; each entry must
// give |fd − analytic| / (|fd| + 1e-3) < 1e-2, checked with the tensor's name and index.
// h = 1e-2: a loss of a few nats stored in fp32 per position rounds at ≈ 5e-7, so the quotient's
// noise is ≈ 5e-5, and the O(h²) truncation is below that for these weights; the 1e-3 floor covers
// that noise on small entries.
template <class Loss>
GradientCheck check_largest_gradients(const std::vector<std::pair<std::string, Tensor*>>& params,
                                      const std::vector<std::pair<std::string, const Tensor*>>& grads,
                                      std::size_t top, Loss loss) {
  GradientCheck out;
  for (std::size_t t = 0; t < params.size(); ++t) {
    float* p = params[t].second->data<float>();
    const float* d = grads[t].second->data<float>();
    const auto n = static_cast<std::size_t>(params[t].second->numel());
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    const std::size_t k = std::min(top, n);
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(),
                      [&](std::size_t a, std::size_t c) { return std::abs(d[a]) > std::abs(d[c]); });
    for (std::size_t j = 0; j < k; ++j) {
      const std::size_t i = order[j];
      const float saved = p[i];
      const float h = 1e-2f;
      p[i] = saved + h;
      const double up = loss();
      p[i] = saved - h;
      const double down = loss();
      p[i] = saved;
      const double fd = (up - down) / (2.0 * h);
      const double err = std::abs(fd - d[i]) / (std::abs(fd) + 1e-3);
      INFO(params[t].first << "[" << i << "]: analytic " << d[i] << ", finite difference " << fd);
      CHECK(err < 1e-2);
      out.worst = std::max(out.worst, err);
      ++out.checked;
    }
  }
  return out;
}

}  // namespace aiopt::test
