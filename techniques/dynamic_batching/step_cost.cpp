#include "techniques/dynamic_batching/step_cost.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace aiopt::dynamic_batching {

void StepShape::add(std::size_t start, std::size_t len) {
  tokens += len;
  sequences += 1;
  // New token i sees start + i + 1 keys.
  key_reads += static_cast<double>(len) * static_cast<double>(start) + static_cast<double>(len * (len + 1)) / 2.0;
}

namespace {

constexpr std::size_t kFeatures = 4;

std::array<double, kFeatures> features(const StepShape& s) {
  return {1.0, static_cast<double>(s.tokens), static_cast<double>(s.sequences), s.key_reads / 1000.0};
}

// Least squares over the features marked in `use` (normal equations, Gaussian elimination with
// partial pivoting); false when they are singular.
bool solve(std::span<const StepShape> shapes, std::span<const double> ms, const std::array<bool, kFeatures>& use,
           std::array<double, kFeatures>& out) {
  std::array<std::size_t, kFeatures> idx{};
  std::size_t n = 0;
  for (std::size_t f = 0; f < kFeatures; ++f)
    if (use[f]) idx[n++] = f;
  std::array<std::array<double, kFeatures + 1>, kFeatures> a{};
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const auto x = features(shapes[i]);
    for (std::size_t r = 0; r < n; ++r) {
      for (std::size_t c = 0; c < n; ++c) a[r][c] += x[idx[r]] * x[idx[c]];
      a[r][n] += x[idx[r]] * ms[i];
    }
  }
  for (std::size_t c = 0; c < n; ++c) {
    std::size_t p = c;
    for (std::size_t r = c + 1; r < n; ++r)
      if (std::abs(a[r][c]) > std::abs(a[p][c])) p = r;
    if (std::abs(a[p][c]) < 1e-12 * (1.0 + std::abs(a[c][c]))) return false;
    std::swap(a[p], a[c]);
    for (std::size_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = a[r][c] / a[c][c];
      for (std::size_t k = c; k <= n; ++k) a[r][k] -= f * a[c][k];
    }
  }
  out.fill(0.0);
  for (std::size_t r = 0; r < n; ++r) out[idx[r]] = a[r][n] / a[r][r];
  return true;
}

}  // namespace

double StepCost::predict_ms(const StepShape& s) const {
  const auto x = features(s);
  return fixed_ms * x[0] + per_token_ms * x[1] + per_sequence_ms * x[2] + per_kilo_key_read_ms * x[3];
}

double StepCost::sample_ms(const StepShape& s, std::uint64_t seed, std::uint64_t step) const {
  const double mean = predict_ms(s);
  if (residual_ms.empty()) return std::max(mean, 0.0);
  return std::max(mean + residual_ms[rng::bits(seed, step) % residual_ms.size()], 0.0);
}

StepCost StepCost::fit(std::span<const StepShape> shapes, std::span<const double> ms) {
  if (shapes.size() != ms.size()) throw std::invalid_argument("StepCost::fit: shapes and times differ in count");
  if (shapes.size() < kFeatures)
    throw InputError("step-cost model: " + std::to_string(shapes.size()) + " measured steps; at least " +
                     std::to_string(kFeatures) + " are needed to fit it");
  std::array<bool, kFeatures> use{true, true, true, true};
  std::array<double, kFeatures> c{};
  // Drop the most negative coefficient until none is negative (the constant term is kept).
  for (;;) {
    if (!solve(shapes, ms, use, c)) {
      // A feature that does not vary apart from the others (one sequence per step, say) has no
      // cost of its own to find: held at 0, in this order.
      const std::size_t* drop = nullptr;
      static constexpr std::size_t order[] = {2, 3, 1};
      for (const std::size_t& f : order)
        if (use[f]) {
          drop = &f;
          break;
        }
      if (drop == nullptr)
        throw InputError("step-cost model: the measured steps are too few or too alike to fit even a constant");
      use[*drop] = false;
      continue;
    }
    std::size_t worst = kFeatures;
    for (std::size_t f = 1; f < kFeatures; ++f)
      if (use[f] && c[f] < 0.0 && (worst == kFeatures || c[f] < c[worst])) worst = f;
    if (worst == kFeatures) break;
    use[worst] = false;
  }
  StepCost cost{std::max(c[0], 0.0), c[1], c[2], c[3], {}};
  for (std::size_t i = 0; i < shapes.size(); ++i) cost.residual_ms.push_back(ms[i] - cost.predict_ms(shapes[i]));
  return cost;
}

std::string StepCost::describe() const {
  char text[200];
  std::snprintf(text, sizeof text, "%.4g ms + %.4g ms/token + %.4g ms/sequence + %.4g ms per 1000 keys read",
                fixed_ms, per_token_ms, per_sequence_ms, per_kilo_key_read_ms);
  return text;
}

}  // namespace aiopt::dynamic_batching
