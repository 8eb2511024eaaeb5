// Summary statistics of samples, and the adaptive stopping rule.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "harness/sample_plan.hpp"
#include "harness/statistics.hpp"

using namespace aiopt;

TEST_CASE("summary statistics agree with their definitions on random samples", "[statistics]") {
  std::mt19937_64 gen(Catch::rngSeed());
  std::lognormal_distribution<double> dist(0.0, 0.5);
  for (int n : {1, 2, 3, 10, 101}) {
    std::vector<double> x(static_cast<std::size_t>(n));
    for (auto& v : x) v = dist(gen);
    const SampleStats s = summarize(x);

    std::vector<double> sorted = x;
    std::sort(sorted.begin(), sorted.end());
    double mean = 0;
    for (double v : x) mean += v;
    mean /= n;
    double ss = 0;
    for (double v : x) ss += (v - mean) * (v - mean);
    const double stddev = n > 1 ? std::sqrt(ss / (n - 1)) : 0.0;
    const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);

    INFO("n = " << n);
    CHECK(s.count == static_cast<std::size_t>(n));
    CHECK(s.min == sorted.front());
    CHECK(s.max == sorted.back());
    CHECK(s.median == Approx(median).epsilon(1e-12));
    CHECK(s.mean == Approx(mean).epsilon(1e-12));
    CHECK(s.stddev == Approx(stddev).epsilon(1e-12).margin(1e-15));
    CHECK(s.iqr >= 0.0);
    CHECK(s.iqr <= s.max - s.min);
  }
}

TEST_CASE("quantiles interpolate linearly between order statistics", "[statistics]") {
  const std::vector<double> sorted{1.0, 2.0, 4.0, 8.0};
  CHECK(quantile_sorted(sorted, 0.0) == 1.0);
  CHECK(quantile_sorted(sorted, 1.0) == 8.0);
  CHECK(quantile_sorted(sorted, 0.5) == Approx(3.0));    // halfway between 2 and 4
  CHECK(quantile_sorted(sorted, 0.25) == Approx(1.75));  // position 0.75
  CHECK(quantile_sorted(sorted, 0.75) == Approx(5.0));   // position 2.25
  const SampleStats s = summarize(std::vector<double>{8.0, 1.0, 4.0, 2.0});
  CHECK(s.iqr == Approx(5.0 - 1.75));
}

TEST_CASE("noise is the relative standard error of the mean", "[statistics]") {
  const std::vector<double> x{1.0, 1.1, 0.9, 1.0};
  const SampleStats s = summarize(x);
  CHECK(s.noise() == Approx(s.stddev / (2.0 * s.mean)));
  CHECK(summarize(std::vector<double>{5.0}).noise() == 0.0);
}

TEST_CASE("the stopping rule needs count, time and low noise, or the timeout", "[sampling]") {
  const Sampling p{.min_samples = 4, .min_time_s = 1.0, .max_noise = 0.05, .timeout_s = 10.0};

  const std::vector<double> steady{0.3, 0.3, 0.3, 0.3};
  CHECK_FALSE(sampling_done(p, {}, 0.0));
  CHECK_FALSE(sampling_done(p, std::vector<double>{0.3, 0.3, 0.3}, 0.9));  // too few
  CHECK(sampling_done(p, steady, 1.2));                                     // 1.2 s measured, no noise

  const std::vector<double> short_runs{0.01, 0.01, 0.01, 0.01};
  CHECK_FALSE(sampling_done(p, short_runs, 0.04));  // count reached but not the time

  const std::vector<double> noisy{0.1, 0.9, 0.1, 0.9, 0.1, 0.9};
  REQUIRE(summarize(noisy).noise() > p.max_noise);
  CHECK_FALSE(sampling_done(p, noisy, 3.0));  // noisy and under the timeout
  CHECK(sampling_done(p, noisy, 10.0));       // the timeout ends it whatever the noise

  // More samples of the same spread lower the noise until the rule is met.
  std::vector<double> many;
  for (int i = 0; i < 400; ++i) many.push_back(i % 2 ? 0.9 : 0.1);
  CHECK(summarize(many).noise() < p.max_noise);
  CHECK(sampling_done(p, many, 9.0));
}

TEST_CASE("quick sampling is shorter than the default in every bound", "[sampling]") {
  const Sampling d, q = Sampling::quick();
  CHECK(q.min_samples <= d.min_samples);
  CHECK(q.min_time_s < d.min_time_s);
  CHECK(q.timeout_s < d.timeout_s);
  CHECK(q.max_noise >= d.max_noise);
}
