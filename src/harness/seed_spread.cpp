#include "harness/seed_spread.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace aiopt {

ParamSpec seeds_param(std::optional<std::int64_t> quick) {
  return integer_param("seeds", 3, quick, 1, unbounded, "runs",
                       "training runs the quality figures are taken over, from the case seed on (seed, seed + 1, "
                       "...): their mean, spread and whether a variant is within noise of the baseline");
}

SeedSpread seed_spread(std::span<const double> values) {
  if (values.empty()) throw std::invalid_argument("seed_spread: no values");
  SeedSpread s;
  s.seeds = values.size();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (!std::all_of(values.begin(), values.end(), [](double v) { return std::isfinite(v); })) {
    s.mean = s.stddev = s.min = s.max = nan;
    return s;
  }
  double sum = 0.0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(values.size());
  double squares = 0.0;  // two passes: no cancellation between large sums
  for (double v : values) squares += (v - s.mean) * (v - s.mean);
  s.stddev = values.size() < 2 ? 0.0 : std::sqrt(squares / static_cast<double>(values.size() - 1));
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  s.min = *lo;
  s.max = *hi;
  return s;
}

// Degrees of freedom 1-30 from the table of Student's t (Fisher & Yates, Table III; any
// statistics text), to 4 decimals. Beyond 30 the Cornish-Fisher expansion of t in z = 1.959964,
// the normal quantile (Abramowitz & Stegun 26.7.5), to the third power of 1/df: at df 30 it gives
// 2.04227 for the table's 2.0423, and its error falls as 1/df⁴ from there.
double t_critical_95(std::size_t df) {
  static constexpr std::array<double, 30> table = {
      12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
      2.2010,  2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
      2.0796,  2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423};
  if (df == 0) throw std::invalid_argument("t_critical_95: 0 degrees of freedom");
  if (df <= table.size()) return table[df - 1];
  const double z = 1.959963984540054, n = static_cast<double>(df);
  const double z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
  return z + (z3 + z) / (4 * n) + (5 * z5 + 16 * z3 + 3 * z) / (96 * n * n) +
         (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * n * n * n);
}

SeedDifference seed_difference(std::span<const double> variant, std::span<const double> baseline) {
  if (variant.size() != baseline.size() || variant.size() < 2)
    throw std::invalid_argument("seed_difference: needs the same number of seeds for both, at least 2");
  std::vector<double> d(variant.size());
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = variant[i] - baseline[i];
  const SeedSpread s = seed_spread(d);
  SeedDifference out;
  out.mean = s.mean;
  out.noise = t_critical_95(d.size() - 1) * s.stddev / std::sqrt(static_cast<double>(d.size()));
  if (std::isfinite(s.mean)) out.within_noise = std::fabs(s.mean) <= out.noise;
  return out;
}

std::vector<Metric> over_seeds(const std::vector<std::vector<Metric>>& per_seed,
                               const std::vector<std::string>& spread) {
  if (per_seed.empty()) throw std::invalid_argument("over_seeds: no seeds");
  const std::vector<Metric>& first = per_seed.front();
  for (const auto& seed : per_seed) {
    bool same = seed.size() == first.size();
    for (std::size_t i = 0; same && i < seed.size(); ++i) same = seed[i].name == first[i].name;
    if (!same) throw std::invalid_argument("over_seeds: the seeds' metrics differ in their names or order");
  }
  if (per_seed.size() == 1) return first;
  std::vector<Metric> out;
  for (std::size_t i = 0; i < first.size(); ++i) {
    std::vector<double> values;
    for (const auto& seed : per_seed) values.push_back(seed[i].value);
    const SeedSpread s = seed_spread(values);
    Metric mean = first[i];
    // The plain mean even when a seed is not finite: NaN or ±inf then, as one run would report.
    double sum = 0.0;
    for (double v : values) sum += v;
    mean.value = sum / static_cast<double>(values.size());
    out.push_back(mean);
    if (std::find(spread.begin(), spread.end(), first[i].name) == spread.end()) continue;
    for (auto [suffix, value] : {std::pair{"_std", s.stddev}, std::pair{"_min", s.min}, std::pair{"_max", s.max}})
      out.push_back({first[i].name + suffix, value, first[i].unit, first[i].better, false});
  }
  return out;
}

std::vector<double> values_of(const std::vector<std::vector<Metric>>& per_seed, const std::string& name) {
  std::vector<double> out;
  for (const auto& seed : per_seed) {
    const auto m = std::find_if(seed.begin(), seed.end(), [&](const Metric& x) { return x.name == name; });
    if (m == seed.end()) throw std::invalid_argument("values_of: a seed has no metric " + name);
    out.push_back(m->value);
  }
  return out;
}

std::vector<Metric> noise_verdict(const std::string& name, const std::string& unit, Better better,
                                  std::span<const double> variant, std::span<const double> baseline) {
  if (variant.size() < 2) return {};
  const SeedDifference d = seed_difference(variant, baseline);
  const double verdict = d.within_noise ? (*d.within_noise ? 1.0 : 0.0) : std::numeric_limits<double>::quiet_NaN();
  return {
      {name + "_vs_baseline", d.mean, unit, better, false},
      {name + "_vs_baseline_noise", d.noise, unit, Better::lower, false},
      {name + "_within_noise", verdict, "", Better::higher, false},
  };
}

Series by_seed(const std::string& name, const std::string& unit, std::uint64_t first_seed,
               std::span<const double> values) {
  Series s{name + "_by_seed", "seed", unit, {}, {}};
  for (std::size_t i = 0; i < values.size(); ++i) {
    s.x.push_back(static_cast<double>(first_seed + i));
    s.y.push_back(values[i]);
  }
  return s;
}

}  // namespace aiopt
