#pragma once
// Quality from more than one seed. A training outcome (a final loss, the steps to a target loss)
// moves with the initialization and the order of the batches, so a technique whose result is
// quality trains its budget from `seeds` consecutive seeds (the case seed, seed + 1, ...) and
// reports each figure's mean over them, its spread, and whether a variant's difference from the
// baseline trained from the same seeds is within that noise (docs/report-format.md "Quality over
// seeds").
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "harness/param.hpp"
#include "report/metric.hpp"

namespace aiopt {

// The `seeds` parameter: how many training runs a quality figure is taken over, default 3, at
// least 1; `quick` its --quick value when it differs.
ParamSpec seeds_param(std::optional<std::int64_t> quick);

// Mean and spread of one figure over the seeds. `stddev` is the sample standard deviation (n − 1
// in the denominator), 0 for one seed. Any non-finite value makes all four NaN: a run that blew
// up has no place in an average. Throws std::invalid_argument for no values.
struct SeedSpread {
  std::size_t seeds = 0;
  double mean = 0.0, stddev = 0.0, min = 0.0, max = 0.0;
};
SeedSpread seed_spread(std::span<const double> values);

// The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom: the two-sided 95 % critical
// value. Throws std::invalid_argument for df 0.
double t_critical_95(std::size_t df);

// A variant against its baseline over the same seeds, paired: variant[i] and baseline[i] trained
// from the same initialization on the same batches, so their difference d_i leaves out what the
// seed does to both. `mean` is d̄ = mean(d_i) and `noise` the half-width of its 95 % confidence
// interval, t_{0.975, n−1} · s_d / √n (s_d the sample standard deviation of the d_i). The
// difference is within noise when |d̄| <= noise: a paired t-test does not reject "no difference" at
// the 5 % level. The test assumes the d_i are independent and roughly normal; with 3 seeds
// (t = 4.30) it calls a difference real only when d̄ exceeds 2.48 s_d, and a ranking it leaves
// within noise is one three seeds cannot settle, not one shown to be a tie. `within_noise` is
// nullopt (no verdict) when a value is not finite.
struct SeedDifference {
  double mean = 0.0, noise = 0.0;
  std::optional<bool> within_noise;
};
// Throws std::invalid_argument unless both hold the same number of values, at least 2.
SeedDifference seed_difference(std::span<const double> variant, std::span<const double> baseline);

// Metrics of runs from consecutive seeds, one list per seed, every list with the same names in the
// same order (std::invalid_argument otherwise): each metric's mean over the seeds, and for the
// names in `spread`, when there are 2 seeds or more, `<name>_std`, `<name>_min` and `<name>_max`
// right after it, not compared (a spread is no gain or cost). One seed gives its metrics as they
// are.
std::vector<Metric> over_seeds(const std::vector<std::vector<Metric>>& per_seed,
                               const std::vector<std::string>& spread);

// The values of metric `name` in each seed's list, in seed order; std::invalid_argument when a
// list lacks it.
std::vector<double> values_of(const std::vector<std::vector<Metric>>& per_seed, const std::string& name);

// The verdict on metric `name` (in `unit`) of a variant against its baseline from the same seeds,
// when there are 2 seeds or more (none for one): `<name>_vs_baseline` (d̄), `<name>_vs_baseline_noise`
// (the 95 % half-width) and `<name>_within_noise` (1 within noise, 0 not, NaN when a value was not
// finite); none compared. `better` is the metric's direction.
std::vector<Metric> noise_verdict(const std::string& name, const std::string& unit, Better better,
                                  std::span<const double> variant, std::span<const double> baseline);

// The per-seed values of metric `name` as the series `<name>_by_seed`: x the seed (first_seed,
// first_seed + 1, ...), y the value; what a reader needs to test other pairs of variants.
Series by_seed(const std::string& name, const std::string& unit, std::uint64_t first_seed,
               std::span<const double> values);

}  // namespace aiopt
