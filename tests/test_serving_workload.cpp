// dynamic_batching's request workload: arrival processes, length distributions, their text, and
// trace files.
//
// The statistical checks draw seeded samples, so each outcome is the same on every run and
// machine, yet a wrong sampler fails them. Tolerances, and why:
//   Means: 5 standard errors (sd / sqrt(n)); a two-sided normal tail of 5.7e-7.
//   Coefficients of variation: 5 standard errors of the sample CV by the delta method; for gamma
//   gaps of shape k, Var(CV_hat) = (1 + k) / (2 k² n) (k = 1, the exponential: 1 / n).
//   Proportions: 5 binomial standard errors, sqrt(p (1 - p) / n).
//   Distributions: Pearson's chi-square (tests/support/chi_square.hpp) against the exact bin
//   probabilities, rejected below a p-value of 0.001.
//   The lognormal mean: against a brute-force sum over every length, to 1e-9 relative.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "support/chi_square.hpp"
#include "support/files.hpp"
#include "support/input_error.hpp"
#include "techniques/dynamic_batching/workload.hpp"

namespace aiopt {
namespace {

namespace db = dynamic_batching;

db::LengthDistribution lengths(const std::string& text) { return db::LengthDistribution::parse(text, "test_lens"); }

std::vector<double> gaps_of(const std::vector<db::Request>& requests) {
  std::vector<double> gaps;
  double previous = 0.0;
  for (const auto& r : requests) {
    gaps.push_back(r.arrival_s - previous);
    previous = r.arrival_s;
  }
  return gaps;
}

struct Moments {
  double mean = 0.0, sd = 0.0;
};

Moments moments(const std::vector<double>& x) {
  double sum = 0.0;
  for (double v : x) sum += v;
  Moments m;
  m.mean = sum / static_cast<double>(x.size());
  double ss = 0.0;
  for (double v : x) ss += (v - m.mean) * (v - m.mean);
  m.sd = std::sqrt(ss / static_cast<double>(x.size() - 1));
  return m;
}

// Counts of x in the bins between consecutive edges (edges[0] = 0, the last bin open above),
// and each bin's probability from the distribution function `cdf`.
template <class Cdf>
test::ChiSquare binned_fit(const std::vector<double>& x, const std::vector<double>& edges, const Cdf& cdf) {
  std::vector<std::size_t> counts(edges.size(), 0);
  for (double v : x) {
    const auto bin = std::upper_bound(edges.begin(), edges.end(), v) - edges.begin() - 1;
    ++counts[static_cast<std::size_t>(std::max<std::ptrdiff_t>(bin, 0))];
  }
  std::vector<double> p(edges.size());
  for (std::size_t b = 0; b < edges.size(); ++b)
    p[b] = (b + 1 < edges.size() ? cdf(edges[b + 1]) : 1.0) - cdf(edges[b]);
  return test::chi_square(counts, p);
}

// P(X >= t) for X = exp(N(ln median, sigma²)).
double lognormal_survival(double t, double median, double sigma) {
  return 0.5 * std::erfc((std::log(t) - std::log(median)) / (sigma * std::numbers::sqrt2));
}

// P(clip(round(X), 1, max) = k).
double lognormal_length_p(std::size_t k, double median, double sigma, std::size_t max) {
  const double above_low = k == 1 ? 1.0 : lognormal_survival(static_cast<double>(k) - 0.5, median, sigma);
  const double above_high = k == max ? 0.0 : lognormal_survival(static_cast<double>(k) + 0.5, median, sigma);
  return above_low - above_high;
}

std::vector<double> draws_of(const db::LengthDistribution& d, std::uint64_t seed, std::size_t n) {
  std::vector<double> x(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<double>(d.draw(seed, i));
  return x;
}

db::WorkloadSpec spec_of(db::Arrivals arrivals, double rate, std::size_t n) {
  db::WorkloadSpec spec;
  spec.arrivals = arrivals;
  spec.rate = rate;
  spec.requests = n;
  spec.prompt_lens = lengths("uniform:1,1000");
  spec.output_lens = lengths("lognormal:64,0.7,512");
  return spec;
}

}  // namespace

TEST_CASE("poisson arrivals have gaps of mean 1/rate and coefficient of variation 1") {
  const double rate = 8.0;
  const std::size_t n = 100000;
  const auto requests = db::make_workload(spec_of(db::Arrivals::poisson, rate, n), 11);
  REQUIRE(requests.size() == n);
  std::size_t misnumbered = 0, out_of_order = 0;
  for (std::size_t i = 0; i < n; ++i) {
    misnumbered += requests[i].id != i;
    out_of_order += i > 0 && requests[i].arrival_s < requests[i - 1].arrival_s;
  }
  CHECK(misnumbered == 0);
  CHECK(out_of_order == 0);
  // The first request arrives one gap after t = 0.
  CHECK(requests[0].arrival_s > 0.0);

  const auto gaps = gaps_of(requests);
  const Moments m = moments(gaps);
  const double sqrt_n = std::sqrt(static_cast<double>(n));
  CHECK(std::fabs(m.mean - 1.0 / rate) < 5.0 * (1.0 / rate) / sqrt_n);
  CHECK(std::fabs(m.sd / m.mean - 1.0) < 5.0 / sqrt_n);

  // The exponential's shape: 20 bins of equal probability.
  std::vector<double> edges;
  for (int j = 0; j < 20; ++j) edges.push_back(-std::log(1.0 - j / 20.0) / rate);
  const test::ChiSquare fit = binned_fit(gaps, edges, [&](double x) { return 1.0 - std::exp(-rate * x); });
  INFO("chi-square " << fit.statistic << " dof " << fit.dof << " p " << fit.p_value);
  CHECK(fit.p_value > 0.001);
}

TEST_CASE("bursty arrivals have gaps of the asked coefficient of variation at the same mean rate") {
  const double rate = 5.0;
  const std::size_t n = 100000;
  for (double cv : {1.5, 3.0, 6.0}) {
    INFO("burst_cv " << cv);
    db::WorkloadSpec spec = spec_of(db::Arrivals::bursty, rate, n);
    spec.burst_cv = cv;
    const auto gaps = gaps_of(db::make_workload(spec, 23));
    const Moments m = moments(gaps);
    const double k = 1.0 / (cv * cv), sqrt_n = std::sqrt(static_cast<double>(n));
    CHECK(std::fabs(m.mean - 1.0 / rate) < 5.0 * cv / rate / sqrt_n);
    const double cv_se = std::sqrt((1.0 + k) / (2.0 * k * k)) / sqrt_n;
    INFO("cv " << m.sd / m.mean << " se " << cv_se);
    CHECK(std::fabs(m.sd / m.mean - cv) < 5.0 * cv_se);

    // The gamma's shape: P(gap <= x) = 1 - Q(k, x / θ), θ = 1 / (λ k); bins on a geometric grid
    // from 1e-8 θ (sparse bins are pooled by chi_square).
    const double theta = 1.0 / (rate * k);
    std::vector<double> edges{0.0};
    for (double y = 1e-8; y < 30.0; y *= 2.0) edges.push_back(y * theta);
    const test::ChiSquare fit =
        binned_fit(gaps, edges, [&](double x) { return x <= 0.0 ? 0.0 : 1.0 - test::gamma_q(k, x / theta); });
    INFO("chi-square " << fit.statistic << " dof " << fit.dof << " p " << fit.p_value);
    CHECK(fit.p_value > 0.001);
  }
}

TEST_CASE("uniform lengths cover LO to HI evenly") {
  const auto d = lengths("uniform:3,12");
  CHECK(d.min() == 3);
  CHECK(d.max() == 12);
  CHECK(d.mean() == 7.5);
  const std::size_t n = 20000;
  std::vector<std::size_t> counts(10, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t v = d.draw(5, i);
    REQUIRE(v >= 3);
    REQUIRE(v <= 12);
    ++counts[v - 3];
  }
  for (std::size_t c : counts) CHECK(c > 0);
  const std::vector<double> p(10, 0.1);
  const test::ChiSquare fit = test::chi_square(counts, p);
  INFO("chi-square " << fit.statistic << " p " << fit.p_value);
  CHECK(fit.p_value > 0.001);
  const Moments m = moments(draws_of(d, 5, n));
  CHECK(std::fabs(m.mean - 7.5) < 5.0 * m.sd / std::sqrt(static_cast<double>(n)));

  // One value: LO = HI.
  const auto one = lengths("uniform:9,9");
  for (std::uint64_t i = 0; i < 100; ++i) CHECK(one.draw(1, i) == 9);
}

TEST_CASE("lognormal lengths follow the rounded clipped distribution") {
  const double median = 100.0, sigma = 0.5;
  const std::size_t max = 400, n = 20000;
  const auto d = lengths("lognormal:100,0.5,400");
  CHECK(d.min() == 1);
  CHECK(d.max() == max);
  const auto x = draws_of(d, 7, n);

  // Bins of lengths [1, 40), [40, 45), ..., [250, 400]: each bin's probability from the rounded,
  // clipped distribution.
  std::vector<std::size_t> starts{1};
  for (std::size_t s = 40; s <= 250; s += 5) starts.push_back(s);
  std::vector<std::size_t> counts(starts.size(), 0);
  for (double v : x) {
    REQUIRE(v >= 1.0);
    REQUIRE(v <= static_cast<double>(max));
    ++counts[static_cast<std::size_t>(std::upper_bound(starts.begin(), starts.end(), static_cast<std::size_t>(v)) -
                                      starts.begin() - 1)];
  }
  std::vector<double> p(starts.size(), 0.0);
  for (std::size_t b = 0; b < starts.size(); ++b) {
    const std::size_t end = b + 1 < starts.size() ? starts[b + 1] : max + 1;
    for (std::size_t k = starts[b]; k < end; ++k) p[b] += lognormal_length_p(k, median, sigma, max);
  }
  const test::ChiSquare fit = test::chi_square(counts, p);
  INFO("chi-square " << fit.statistic << " dof " << fit.dof << " p " << fit.p_value);
  CHECK(fit.p_value > 0.001);

  // The median: P(length <= 99) and P(length <= 100) straddle 1/2, so the sample median is 99,
  // 100 or 101 (its standard error is about 0.45 lengths).
  auto sorted = x;
  std::nth_element(sorted.begin(), sorted.begin() + n / 2, sorted.end());
  CHECK(std::fabs(sorted[n / 2] - median) <= 1.0);

  // The mean: the numerical one against a brute-force sum, and the draws against it.
  double exact = 0.0;
  for (std::size_t k = 1; k <= max; ++k) exact += static_cast<double>(k) * lognormal_length_p(k, median, sigma, max);
  CHECK(d.mean() == Approx(exact).epsilon(1e-9));
  const Moments m = moments(x);
  CHECK(std::fabs(m.mean - d.mean()) < 5.0 * m.sd / std::sqrt(static_cast<double>(n)));
  // Rounding and clipping move the mean off the unclipped lognormal's exp(sigma²/2)·median.
  CHECK(std::fabs(d.mean() - median * std::exp(sigma * sigma / 2.0)) < 1.0);
}

TEST_CASE("the lognormal mean holds for a large MAX and a heavy tail") {
  // Beyond 65536 lengths the mean integrates the tail: compare with the sum over every length.
  for (const auto& [median, sigma, max] : {std::tuple{1000.0, 2.0, std::size_t{2000000}},
                                           std::tuple{50.0, 3.5, std::size_t{3000000}},
                                           std::tuple{20.0, 0.3, std::size_t{1000000}}}) {
    INFO("median " << median << " sigma " << sigma << " max " << max);
    const auto d = lengths("lognormal:" + std::to_string(median) + "," + std::to_string(sigma) + "," +
                           std::to_string(max));
    double brute = 1.0;
    for (std::size_t k = 1; k < max; ++k) brute += lognormal_survival(static_cast<double>(k) + 0.5, median, sigma);
    CHECK(d.mean() == Approx(brute).epsilon(1e-9));
  }
}

TEST_CASE("lognormal lengths are clipped to 1 and MAX") {
  const std::size_t n = 20000;
  const double sqrt_n = std::sqrt(static_cast<double>(n));
  {
    const auto d = lengths("lognormal:100,1.5,150");
    const auto x = draws_of(d, 3, n);
    const double at_max = static_cast<double>(std::count(x.begin(), x.end(), 150.0)) / static_cast<double>(n);
    const double p = lognormal_survival(149.5, 100.0, 1.5);
    CHECK(*std::max_element(x.begin(), x.end()) == 150.0);
    CHECK(std::fabs(at_max - p) < 5.0 * std::sqrt(p * (1.0 - p)) / sqrt_n);
  }
  {
    const auto d = lengths("lognormal:2,2,1000");
    const auto x = draws_of(d, 4, n);
    const double at_one = static_cast<double>(std::count(x.begin(), x.end(), 1.0)) / static_cast<double>(n);
    const double p = 1.0 - lognormal_survival(1.5, 2.0, 2.0);
    CHECK(*std::min_element(x.begin(), x.end()) == 1.0);
    CHECK(*std::max_element(x.begin(), x.end()) == 1000.0);
    CHECK(std::fabs(at_one - p) < 5.0 * std::sqrt(p * (1.0 - p)) / sqrt_n);
  }
  {
    // SIGMA 0: the one rounded, clipped MEDIAN.
    const auto d = lengths("lognormal:7.6,0,100");
    CHECK(d.min() == 8);
    CHECK(d.max() == 8);
    CHECK(d.mean() == 8.0);
    for (std::uint64_t i = 0; i < 100; ++i) CHECK(d.draw(9, i) == 8);
    const auto clipped = lengths("lognormal:700,0,100");
    CHECK(clipped.max() == 100);
    CHECK(clipped.draw(9, 0) == 100);
    // Lengths beyond 2^63: rounded and clipped without overflow.
    const auto huge = lengths("lognormal:1e19,0,18446744073709551615");
    CHECK(huge.min() == 10000000000000000000ULL);
    CHECK(huge.draw(9, 0) == 10000000000000000000ULL);
    const auto wide = lengths("lognormal:1e19,3,18446744073709551615");
    for (std::uint64_t i = 0; i < 1000; ++i) CHECK(wide.draw(9, i) >= 1);
    CHECK(std::isfinite(wide.mean()));
    CHECK(wide.mean() <= 18446744073709551615.0);
  }
}

TEST_CASE("fixed lengths are always N") {
  const auto d = lengths("fixed:37");
  CHECK(d.min() == 37);
  CHECK(d.max() == 37);
  CHECK(d.mean() == 37.0);
  for (std::uint64_t i = 0; i < 1000; ++i) CHECK(d.draw(i * 31 + 1, i) == 37);
  const db::LengthDistribution fallback;
  CHECK(fallback.describe() == "fixed:1");
  CHECK(fallback.draw(1, 1) == 1);
}

TEST_CASE("a length distribution's text reads back to the same distribution") {
  for (const auto& [text, canonical] :
       {std::pair{"fixed:128", "fixed:128"}, std::pair{" uniform: 16 , 512 ", "uniform:16,512"},
        std::pair{"lognormal:128,0.8,2048", "lognormal:128,0.8,2048"},
        std::pair{"lognormal:12.5, 0 ,64", "lognormal:12.5,0,64"}}) {
    const auto d = lengths(text);
    CHECK(d.describe() == canonical);
    const auto again = lengths(d.describe());
    CHECK(again.describe() == canonical);
    CHECK(again.mean() == d.mean());
    CHECK(again.max() == d.max());
    for (std::uint64_t i = 0; i < 50; ++i) CHECK(again.draw(4, i) == d.draw(4, i));
  }
}

TEST_CASE("workloads are reproducible from their seed and draws are counter-based") {
  const auto spec = spec_of(db::Arrivals::bursty, 3.0, 2000);
  const auto a = db::make_workload(spec, 42), b = db::make_workload(spec, 42), c = db::make_workload(spec, 43);
  REQUIRE(a.size() == b.size());
  std::size_t arrivals_differ = 0, prompts_differ = 0, outputs_differ = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].arrival_s == b[i].arrival_s);
    CHECK(a[i].prompt_len == b[i].prompt_len);
    CHECK(a[i].output_len == b[i].output_len);
    arrivals_differ += a[i].arrival_s != c[i].arrival_s;
    prompts_differ += a[i].prompt_len != c[i].prompt_len;
    outputs_differ += a[i].output_len != c[i].output_len;
  }
  CHECK(arrivals_differ > a.size() * 99 / 100);
  CHECK(prompts_differ > a.size() * 99 / 100);
  CHECK(outputs_differ > a.size() / 2);

  // A draw depends only on (seed, index): drawn backwards, the same lengths.
  const auto d = lengths("lognormal:64,1,4096");
  std::vector<std::size_t> forward, backward(500);
  for (std::uint64_t i = 0; i < 500; ++i) forward.push_back(d.draw(8, i));
  for (std::uint64_t i = 500; i-- > 0;) backward[i] = d.draw(8, i);
  CHECK(forward == backward);

  // Three independent streams: a different output distribution leaves arrivals and prompts as
  // they were, and prompts are uncorrelated with outputs drawn from the same distribution.
  auto other = spec;
  other.output_lens = lengths("fixed:5");
  const auto o = db::make_workload(other, 42);
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(o[i].arrival_s == a[i].arrival_s);
    CHECK(o[i].prompt_len == a[i].prompt_len);
    CHECK(o[i].output_len == 5);
  }
  auto same = spec_of(db::Arrivals::poisson, 3.0, 20000);
  same.output_lens = same.prompt_lens;
  const auto s = db::make_workload(same, 42);
  std::vector<double> px, oy;
  for (const auto& r : s) {
    px.push_back(static_cast<double>(r.prompt_len));
    oy.push_back(static_cast<double>(r.output_len));
  }
  const Moments mp = moments(px), mo = moments(oy);
  double cov = 0.0;
  for (std::size_t i = 0; i < px.size(); ++i) cov += (px[i] - mp.mean) * (oy[i] - mo.mean);
  const double correlation = cov / static_cast<double>(px.size() - 1) / (mp.sd * mo.sd);
  CHECK(std::fabs(correlation) < 5.0 / std::sqrt(static_cast<double>(px.size())));
}

TEST_CASE("malformed length distributions are refused naming the field and the text") {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"zipf:3", "unknown distribution \"zipf\""},
      {"fixed", "no numbers"},
      {"", "not a length distribution"},
      {"128", "not a length distribution"},
      {"fixed:0", "N 0 must be 1 or more"},
      {"fixed:-4", "N -4 must be 1 or more"},
      {"fixed:1.5", "N \"1.5\" is not a whole number"},
      {"fixed:8x", "N \"8x\" is not a whole number"},
      {"fixed:8 9", "N \"8 9\" is not a whole number"},
      {"fixed:", "N \"\" is not a whole number"},
      {"fixed:99999999999999999999999", "N 99999999999999999999999 is too large"},
      {"fixed:8,9", "fixed takes 1 number (fixed:N), got 2"},
      {"uniform:0,5", "LO 0 must be 1 or more"},
      {"uniform:3,-5", "HI -5 must be 1 or more"},
      {"uniform:9,2", "LO 9 is greater than HI 2"},
      {"uniform:4", "uniform takes 2 numbers (uniform:LO,HI), got 1"},
      {"uniform:1,2,", "uniform takes 2 numbers (uniform:LO,HI), got 3"},
      {"lognormal:100,-0.5,400", "SIGMA -0.5 must be a finite number of 0 or more"},
      {"lognormal:100,inf,400", "SIGMA inf must be a finite number of 0 or more"},
      {"lognormal:100,nan,400", "SIGMA nan must be a finite number of 0 or more"},
      {"lognormal:100,x,400", "SIGMA \"x\" is not a number"},
      {"lognormal:0,0.5,400", "MEDIAN 0 must be a finite number above 0"},
      {"lognormal:-3,0.5,400", "MEDIAN -3 must be a finite number above 0"},
      {"lognormal:abc,1,3", "MEDIAN \"abc\" is not a number"},
      {"lognormal:100,0.5,0", "MAX 0 must be 1 or more"},
      {"lognormal:100,0.5", "lognormal takes 3 numbers (lognormal:MEDIAN,SIGMA,MAX), got 2"},
      {"lognormal:100,0.5,400;", "MAX \"400;\" is not a whole number"},
  };
  for (const auto& [text, reason] : cases) {
    INFO("text: " << text);
    test::check_input_error([&] { db::LengthDistribution::parse(text, "prompt_lens"); },
                            {"prompt_lens", "\"" + text + "\"", reason});
  }
  // An unknown kind lists the allowed ones.
  test::check_input_error([] { db::LengthDistribution::parse("zipf:3", "output_lens"); },
                          {"output_lens", "fixed:N", "uniform:LO,HI", "lognormal:MEDIAN,SIGMA,MAX"});
}

TEST_CASE("a workload spec is validated naming the bad value") {
  auto spec = spec_of(db::Arrivals::poisson, 1.0, 8);
  CHECK_NOTHROW(spec.validate());
  spec.burst_cv = 0.5;  // not used by poisson arrivals
  CHECK_NOTHROW(spec.validate());

  for (double rate : {0.0, -2.0, HUGE_VAL, std::nan("")}) {
    auto bad = spec_of(db::Arrivals::poisson, rate, 8);
    INFO("rate " << rate);
    test::check_input_error([&] { bad.validate(); }, {"rate"});
    test::check_input_error([&] { db::make_workload(bad, 1); }, {"rate"});
  }
  test::check_input_error([] { spec_of(db::Arrivals::poisson, -2.0, 8).validate(); }, {"rate -2"});
  for (double cv : {1.0, 0.5, HUGE_VAL}) {
    auto bad = spec_of(db::Arrivals::bursty, 1.0, 8);
    bad.burst_cv = cv;
    INFO("burst_cv " << cv);
    test::check_input_error([&] { bad.validate(); }, {"burst_cv"});
    test::check_input_error([&] { db::make_workload(bad, 1); }, {"burst_cv"});
  }
  auto bursty = spec_of(db::Arrivals::bursty, 1.0, 8);
  bursty.burst_cv = 0.5;
  test::check_input_error([&] { bursty.validate(); }, {"burst_cv 0.5", "above 1"});
  auto empty = spec_of(db::Arrivals::poisson, 1.0, 0);
  test::check_input_error([&] { db::make_workload(empty, 1); }, {"requests 0"});
}

TEST_CASE("a trace file reads back the requests it holds") {
  test::TempDir dir;
  const std::string path = dir.file("trace.csv");
  test::write_text(path,
                   "# a recorded trace\n"
                   "arrival_s,prompt_len,output_len\n"
                   "\n"
                   "0,12,7\n"
                   "  0.25 , 300 ,\t1\r\n"
                   "# a comment between rows\n"
                   "0.25,5,64\n"
                   "1e1,2048,4096\n");
  const auto requests = db::read_trace(path);
  REQUIRE(requests.size() == 4);
  const std::vector<db::Request> expected{{0, 0.0, 12, 7}, {1, 0.25, 300, 1}, {2, 0.25, 5, 64}, {3, 10.0, 2048, 4096}};
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(requests[i].id == expected[i].id);
    CHECK(requests[i].arrival_s == expected[i].arrival_s);
    CHECK(requests[i].prompt_len == expected[i].prompt_len);
    CHECK(requests[i].output_len == expected[i].output_len);
  }

  // A generated workload written out at full precision, without a header, reads back exactly.
  const auto generated = db::make_workload(spec_of(db::Arrivals::bursty, 2.0, 300), 17);
  std::string text;
  for (const auto& r : generated) {
    char row[96];
    std::snprintf(row, sizeof row, "%.17g,%zu,%zu\n", r.arrival_s, r.prompt_len, r.output_len);
    text += row;
  }
  const std::string generated_path = dir.file("generated.csv");
  test::write_text(generated_path, text);
  const auto back = db::read_trace(generated_path);
  REQUIRE(back.size() == generated.size());
  for (std::size_t i = 0; i < back.size(); ++i) {
    CHECK(back[i].id == i);
    CHECK(back[i].arrival_s == generated[i].arrival_s);
    CHECK(back[i].prompt_len == generated[i].prompt_len);
    CHECK(back[i].output_len == generated[i].output_len);
  }
}

TEST_CASE("a bad trace file is refused with its path line and value") {
  test::TempDir dir;
  const std::string header = "arrival_s,prompt_len,output_len\n";
  // Each file's bad row is on line 3 (after the header and one good row), but for the last ones.
  const std::vector<std::pair<std::string, std::vector<std::string>>> rows{
      {"0.5,abc,3", {"prompt_len \"abc\" is not a whole number"}},
      {"0.5,2.5,3", {"prompt_len \"2.5\" is not a whole number"}},
      {"0.5,-5,3", {"prompt_len -5 must be 1 or more"}},
      {"0.5,4,0", {"output_len 0 must be 1 or more"}},
      {"zero,4,3", {"arrival_s \"zero\" is not a number"}},
      {"-0.25,4,3", {"arrival_s -0.25 is negative"}},
      {"inf,4,3", {"arrival_s \"inf\" is not finite"}},
      {"nan,4,3", {"arrival_s \"nan\" is not finite"}},
      {"0.0625,4,3", {"arrival_s 0.0625 is before the previous row's 0.125"}},
      {"0.5,4", {"expected 3 fields", "got 2", "\"0.5,4\""}},
      {"0.5,4,3,9", {"expected 3 fields", "got 4"}},
      {"0.5;4;3", {"expected 3 fields", "got 1"}},
  };
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const std::string path = dir.file("bad" + std::to_string(i) + ".csv");
    test::write_text(path, header + "0.125,8,8\n" + rows[i].first + "\n0.75,1,1\n");
    INFO("row: " << rows[i].first);
    auto parts = rows[i].second;
    parts.push_back(path + ":3: ");
    test::check_input_error([&] { db::read_trace(path); }, parts);
  }

  // Line numbers count comments and blank lines; the header is accepted only first.
  const std::string late_header = dir.file("late_header.csv");
  test::write_text(late_header, "# comment\n\n0,1,1\narrival_s,prompt_len,output_len\n");
  test::check_input_error([&] { db::read_trace(late_header); },
                          {late_header + ":4: ", "arrival_s \"arrival_s\" is not a number"});
  const std::string misspelt = dir.file("misspelt.csv");
  test::write_text(misspelt, "arrival,prompt_len,output_len\n0,1,1\n");
  test::check_input_error([&] { db::read_trace(misspelt); },
                          {misspelt + ":1: ", "\"arrival\"", "a header line must be exactly"});

  const std::string empty = dir.file("empty.csv");
  test::write_text(empty, "# nothing recorded\n" + header + "\n");
  test::check_input_error([&] { db::read_trace(empty); }, {empty + ": ", "no rows"});
  const std::string missing = dir.file("missing.csv");
  test::check_input_error([&] { db::read_trace(missing); }, {missing + ": ", "cannot read"});
  test::check_input_error([&] { db::read_trace(dir.file("")); }, {"cannot read", "not a file"});
}

}  // namespace aiopt
