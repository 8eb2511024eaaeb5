#pragma once
// Finite differences for gradient checks: ∂L/∂x by central differences, x perturbed one element
// at a time, with loss(x) computed in float64.
#include <cstddef>
#include <vector>

namespace aiopt::test {

template <class Loss>
std::vector<double> numeric_gradient(std::vector<double> x, Loss loss, double h = 1e-5) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = loss(x);
    x[i] = saved - h;
    const double down = loss(x);
    x[i] = saved;
    g[i] = (up - down) / (2.0 * h);
  }
  return g;
}

}  // namespace aiopt::test
