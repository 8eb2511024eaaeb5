// Quality over seeds (harness/seed_spread.hpp): the spread of fixed values worked by hand, the t
// quantile against the published table, the paired verdict on both sides of its threshold, and
// the metrics it writes.
//
// Tolerances: the spreads are sums of a few doubles (exact to ~1e-15); t quantiles are compared
// with the table's 4 decimals (±5e-5) and, beyond 30 degrees of freedom, with quantiles from the
// exact distribution to 4 decimals (the expansion's error there is below 1e-5).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "harness/seed_spread.hpp"
#include "support/metrics.hpp"

using namespace aiopt;
using aiopt::test::find_metric;
using aiopt::test::metric;

TEST_CASE("the spread over seeds is the mean and the sample standard deviation with the range", "[seed_spread]") {
  const std::vector<double> v = {2.0, 4.0, 9.0};
  const SeedSpread s = seed_spread(v);
  CHECK(s.seeds == 3);
  CHECK(s.mean == Approx(5.0));
  // Squares about the mean 9 + 1 + 16 = 26; over n − 1 = 2: 13.
  CHECK(s.stddev == Approx(std::sqrt(13.0)));
  CHECK(s.min == 2.0);
  CHECK(s.max == 9.0);

  const std::vector<double> one = {1.5};
  const SeedSpread single = seed_spread(one);
  CHECK(single.mean == 1.5);
  CHECK(single.stddev == 0.0);
  CHECK(single.min == 1.5);
  CHECK(single.max == 1.5);

  const std::vector<double> blown = {1.0, std::numeric_limits<double>::quiet_NaN(), 2.0};
  CHECK(std::isnan(seed_spread(blown).mean));
  CHECK(std::isnan(seed_spread(blown).min));
  CHECK_THROWS_AS(seed_spread(std::vector<double>{}), std::invalid_argument);
}

TEST_CASE("the t quantile matches the table and approaches the normal one", "[seed_spread]") {
  CHECK(t_critical_95(1) == Approx(12.706).margin(5e-4));
  CHECK(t_critical_95(2) == Approx(4.303).margin(5e-4));
  CHECK(t_critical_95(4) == Approx(2.776).margin(5e-4));
  CHECK(t_critical_95(30) == Approx(2.0423).margin(5e-5));
  // Beyond the table, the expansion: t_{0.975} at 31, 40, 60 and 120 degrees of freedom.
  CHECK(t_critical_95(31) == Approx(2.0395).margin(1e-4));
  CHECK(t_critical_95(40) == Approx(2.0211).margin(1e-4));
  CHECK(t_critical_95(60) == Approx(2.0003).margin(1e-4));
  CHECK(t_critical_95(120) == Approx(1.9799).margin(1e-4));
  CHECK(t_critical_95(100000) == Approx(1.95998).margin(1e-4));
  CHECK_THROWS_AS(t_critical_95(0), std::invalid_argument);
}

TEST_CASE("a paired difference is within noise up to t times its standard error and not beyond", "[seed_spread]") {
  // Differences 1 − x, 1, 1 + x: mean 1, s_d = x, standard error x/√3. With 2 degrees of freedom
  // (t = 4.3027) the verdict turns at x = √3/4.3027 = 0.40255. A rule of two standard errors (the
  // normal 1.96 misapplied to 3 seeds) would turn at x = 0.88, so x = 0.5 tells them apart.
  const std::vector<double> base = {3.0, 2.0, 5.0};  // the seeds' own levels differ; the pairs cancel them
  auto variant = [&](double x) { return std::vector<double>{base[0] + 1 - x, base[1] + 1, base[2] + 1 + x}; };
  const SeedDifference clear = seed_difference(variant(0.40), base);
  CHECK(clear.mean == Approx(1.0));
  CHECK(clear.noise == Approx(4.3027 * 0.40 / std::sqrt(3.0)).epsilon(1e-4));
  REQUIRE(clear.within_noise.has_value());
  CHECK_FALSE(*clear.within_noise);
  const SeedDifference noisy = seed_difference(variant(0.41), base);
  REQUIRE(noisy.within_noise.has_value());
  CHECK(*noisy.within_noise);
  CHECK(*seed_difference(variant(0.5), base).within_noise);

  // Unpaired, these seeds' spread (s.d. 1.5 around levels 2-5) would swamp a difference of 1 that
  // the pairing shows to be consistent.
  const SeedDifference consistent = seed_difference(variant(0.0), base);
  CHECK(consistent.noise == 0.0);
  CHECK_FALSE(*consistent.within_noise);
  // The baseline against itself: no difference, within noise.
  CHECK(*seed_difference(base, base).within_noise);
  // A difference whose sign flips between seeds.
  CHECK(*seed_difference(std::vector<double>{1.1, 0.9}, std::vector<double>{1.0, 1.0}).within_noise);

  const std::vector<double> blown = {std::numeric_limits<double>::infinity(), 1.0, 1.0};
  CHECK_FALSE(seed_difference(blown, base).within_noise.has_value());
  CHECK_THROWS_AS(seed_difference(std::vector<double>{1.0}, std::vector<double>{1.0}), std::invalid_argument);
  CHECK_THROWS_AS(seed_difference(base, std::vector<double>{1.0, 2.0}), std::invalid_argument);
}

TEST_CASE("metrics over seeds are their means with the spread of the named ones beside them", "[seed_spread]") {
  auto seed = [](double loss, double steps) {
    return std::vector<Metric>{{"final_val_loss", loss, "nats", Better::lower},
                               {"steps_to_target", steps, "steps", Better::lower},
                               {"lr_max_error", 0.0, "", Better::lower, false}};
  };
  const std::vector<Metric> m = over_seeds({seed(2.0, 40), seed(2.2, 50), seed(2.1, 60)}, {"final_val_loss"});
  CHECK(metric(m, "final_val_loss").value == Approx(2.1));
  CHECK(metric(m, "final_val_loss").compared);
  CHECK(metric(m, "final_val_loss_std").value == Approx(0.1));
  CHECK_FALSE(metric(m, "final_val_loss_std").compared);
  CHECK(metric(m, "final_val_loss_std").unit == "nats");
  CHECK(metric(m, "final_val_loss_min").value == 2.0);
  CHECK(metric(m, "final_val_loss_max").value == 2.2);
  CHECK(metric(m, "steps_to_target").value == Approx(50.0));
  CHECK(find_metric(m, "steps_to_target_std") == nullptr);
  CHECK_FALSE(metric(m, "lr_max_error").compared);
  REQUIRE(m.size() == 6);
  CHECK(m[1].name == "final_val_loss_std");  // the spread follows its metric

  // One seed: the metrics as they are, no spread.
  const std::vector<Metric> one = over_seeds({seed(2.0, 40)}, {"final_val_loss"});
  REQUIRE(one.size() == 3);
  CHECK(one[0].value == 2.0);
  CHECK(find_metric(one, "final_val_loss_std") == nullptr);

  std::vector<Metric> reordered = seed(2.0, 40);
  std::swap(reordered[0], reordered[1]);
  CHECK_THROWS_AS(over_seeds({seed(2.0, 40), reordered}, {}), std::invalid_argument);
}

TEST_CASE("the verdict metrics say how far the variant is from the baseline and whether that is noise", "[seed_spread]") {
  const std::vector<double> base = {2.0, 2.5, 2.2}, variant = {2.1, 2.4, 2.4};
  // Differences 0.1, −0.1, 0.2: mean 0.0667, s_d 0.1528, noise 4.3027 · 0.1528/√3 = 0.3795.
  const std::vector<Metric> m = noise_verdict("final_val_loss", "nats", Better::lower, variant, base);
  CHECK(metric(m, "final_val_loss_vs_baseline").value == Approx(0.2 / 3));
  CHECK(metric(m, "final_val_loss_vs_baseline_noise").value == Approx(0.3795).epsilon(1e-3));
  CHECK(metric(m, "final_val_loss_within_noise").value == 1.0);
  for (const auto& x : m) CHECK_FALSE(x.compared);
  const std::vector<double> worse = {2.3, 2.75, 2.45};  // 0.3, 0.25, 0.25: consistent
  CHECK(metric(noise_verdict("final_val_loss", "nats", Better::lower, worse, base), "final_val_loss_within_noise")
            .value == 0.0);
  const std::vector<double> nan = {std::nan(""), 2.0, 2.0};
  CHECK(std::isnan(
      metric(noise_verdict("final_val_loss", "nats", Better::lower, nan, base), "final_val_loss_within_noise").value));
  CHECK(noise_verdict("final_val_loss", "nats", Better::lower, std::vector<double>{2.0}, std::vector<double>{2.1})
            .empty());
}

TEST_CASE("the per-seed series names each value's seed", "[seed_spread]") {
  const std::vector<double> v = {2.0, 2.1, 2.3};
  const Series s = by_seed("final_val_loss", "nats", 5, v);
  CHECK(s.name == "final_val_loss_by_seed");
  CHECK(s.x_unit == "seed");
  CHECK(s.x == std::vector<double>{5, 6, 7});
  CHECK(s.y == v);
}
