#pragma once
// Pearson's chi-square goodness-of-fit test of observed counts against a distribution, for the
// tests that check a sampler's output distribution.
#include <cmath>
#include <cstddef>
#include <span>
#include <stdexcept>

namespace aiopt::test {

// Q(a, x) = Γ(a, x) / Γ(a): the regularized upper incomplete gamma function, by its series for
// x < a + 1 and its continued fraction beyond (Numerical Recipes §6.2).
inline double gamma_q(double a, double x) {
  if (!(a > 0.0) || x < 0.0) throw std::invalid_argument("gamma_q: a > 0 and x >= 0");
  if (x == 0.0) return 1.0;
  const double log_prefix = -x + a * std::log(x) - std::lgamma(a);
  if (x < a + 1.0) {
    double term = 1.0 / a, sum = term;
    for (double n = 1.0; n < 1000.0 && std::fabs(term) > std::fabs(sum) * 1e-15; n += 1.0) {
      term *= x / (a + n);
      sum += term;
    }
    return 1.0 - sum * std::exp(log_prefix);
  }
  // Lentz's method for the continued fraction.
  constexpr double tiny = 1e-300;
  double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
  for (double i = 1.0; i < 1000.0; i += 1.0) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double step = d * c;
    h *= step;
    if (std::fabs(step - 1.0) < 1e-15) break;
  }
  return std::exp(log_prefix) * h;
}

struct ChiSquare {
  double statistic = 0.0;
  std::size_t dof = 0;
  double p_value = 1.0;  // P(χ² >= statistic) under the distribution
};

// counts[v] observed draws of v against `n · p[v]` expected; categories expected fewer than 5
// times are pooled into one, counted when the pool's expectation is 5 or more (else left out,
// except that a draw of a category of probability 0 gives p-value 0), as the χ² approximation
// needs.
inline ChiSquare chi_square(std::span<const std::size_t> counts, std::span<const double> p) {
  if (counts.size() != p.size()) throw std::invalid_argument("chi_square: sizes differ");
  double n = 0.0;
  for (auto c : counts) n += static_cast<double>(c);
  ChiSquare r;
  double pool_expected = 0.0, pool_observed = 0.0;
  std::size_t bins = 0;
  for (std::size_t v = 0; v < p.size(); ++v) {
    const double e = n * p[v], o = static_cast<double>(counts[v]);
    if (e < 5.0) {
      pool_expected += e;
      pool_observed += o;
      continue;
    }
    r.statistic += (o - e) * (o - e) / e;
    ++bins;
  }
  if (pool_expected >= 5.0) {
    r.statistic += (pool_observed - pool_expected) * (pool_observed - pool_expected) / pool_expected;
    ++bins;
  } else if (pool_observed > 0.0 && pool_expected == 0.0) {
    // A draw of a category of probability 0: impossible under p.
    r.statistic = INFINITY;
  }
  if (bins < 2) throw std::invalid_argument("chi_square: fewer than two categories expected 5 times");
  r.dof = bins - 1;
  r.p_value = std::isinf(r.statistic) ? 0.0 : gamma_q(static_cast<double>(r.dof) / 2.0, r.statistic / 2.0);
  return r;
}

}  // namespace aiopt::test
