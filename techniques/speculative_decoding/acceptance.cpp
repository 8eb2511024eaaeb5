#include "techniques/speculative_decoding/acceptance.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "core/fault.hpp"

namespace aiopt::speculative_decoding {

double acceptance_probability(std::span<const double> p, std::span<const double> q, std::int32_t token) {
  const auto v = static_cast<std::size_t>(token);
  if (v >= p.size() || p.size() != q.size()) throw std::invalid_argument("acceptance_probability: token or sizes");
  if (fault::active("speculative_decoding.accept_always")) return 1.0;
  if (!(q[v] > 0.0)) return 1.0;
  return std::min(1.0, p[v] / q[v]);
}

bool accept(std::span<const double> p, std::span<const double> q, std::int32_t token, double u) {
  return u < acceptance_probability(p, q, token);
}

std::vector<double> residual(std::span<const double> p, std::span<const double> q) {
  if (p.size() != q.size()) throw std::invalid_argument("residual: p and q differ in size");
  std::vector<double> r(p.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < p.size(); ++i) sum += r[i] = std::max(0.0, p[i] - q[i]);
  if (!(sum > 0.0)) return {p.begin(), p.end()};
  for (double& x : r) x /= sum;
  return r;
}

std::vector<double> emitted_distribution(std::span<const double> p, std::span<const double> q) {
  std::vector<double> out(p.size(), 0.0);
  double rejected = 0.0;
  for (std::size_t v = 0; v < q.size(); ++v) {
    if (!(q[v] > 0.0)) continue;
    const double a = acceptance_probability(p, q, static_cast<std::int32_t>(v));
    out[v] += q[v] * a;
    rejected += q[v] * (1.0 - a);
  }
  const std::vector<double> r = residual(p, q);
  for (std::size_t v = 0; v < out.size(); ++v) out[v] += rejected * r[v];
  return out;
}

double total_variation(std::span<const double> a, std::span<const double> b) {
  if (a.size() != b.size()) throw std::invalid_argument("total_variation: sizes differ");
  double sum = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += std::fabs(a[i] - b[i]);
  return sum / 2.0;
}

}  // namespace aiopt::speculative_decoding
