#include "techniques/dynamic_batching/workload.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numbers>
#include <optional>
#include <string_view>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace aiopt::dynamic_batching {
namespace {

std::string_view trimmed(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

std::vector<std::string_view> split(std::string_view s, char separator) {
  std::vector<std::string_view> parts;
  for (;;) {
    const auto at = s.find(separator);
    parts.push_back(trimmed(s.substr(0, at)));
    if (at == std::string_view::npos) return parts;
    s.remove_prefix(at + 1);
  }
}

// A whole-string number: "12" is one; "12x", "1 2" and "" are not.
template <class T>
std::optional<T> number(std::string_view s) {
  T value{};
  const auto [end, error] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (error != std::errc{} || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return value;
}

// Shortest text that reads back to the same double ("0.8", not "0.80000000000000004").
std::string shortest(double v) {
  char buf[64];
  const auto [end, error] = std::to_chars(buf, buf + sizeof buf, v);
  return error == std::errc{} ? std::string(buf, end) : std::to_string(v);
}

std::string in_quotes(std::string_view s) {
  std::string q;
  q.reserve(s.size() + 2);
  q += '"';
  q += s;
  q += '"';
  return q;
}

// A length: a whole number >= 1. `fail` receives the reason.
template <class Fail>
std::size_t length_field(std::string_view text, const std::string& name, const Fail& fail) {
  if (const auto v = number<long long>(text)) {
    if (*v < 1) fail(name + " " + std::string(text) + " must be 1 or more");
    return static_cast<std::size_t>(*v);
  }
  if (const auto v = number<unsigned long long>(text)) return static_cast<std::size_t>(*v);
  if (const auto v = number<double>(text)) {
    if (*v < 1.0) fail(name + " " + std::string(text) + " must be 1 or more");
    if (*v == std::floor(*v) && std::isfinite(*v)) fail(name + " " + std::string(text) + " is too large");
  }
  fail(name + " " + in_quotes(text) + " is not a whole number");
  return 0;
}

// A uniform double strictly inside (0, 1) from 53 random bits, so both log(u) and log(1 - u) are
// finite.
double open_unit(std::uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1p-53; }

// Consecutive draws from one counter-based stream (rng::bits at seed, counter 0, 1, ...): the
// variable number of uniforms a rejection sampler consumes, all pinned to one (seed, index).
class Draws {
 public:
  explicit Draws(std::uint64_t seed) : seed_(seed) {}
  double unit() { return open_unit(rng::bits(seed_, counter_++)); }
  // Box–Muller: a standard normal from two uniforms (the second, sine, value is not kept).
  double normal() {
    const double r = std::sqrt(-2.0 * std::log(unit()));
    return r * std::cos(2.0 * std::numbers::pi * unit());
  }

 private:
  std::uint64_t seed_;
  std::uint64_t counter_ = 0;
};

// Gamma(shape, 1) by Marsaglia & Tsang (2000), "A simple method for generating gamma variables":
// for shape >= 1 a squeezed rejection from a transformed normal (acceptance above 95%); for
// shape < 1 their boost, Gamma(shape) = Gamma(shape + 1) · U^(1/shape), taken in logs so that a
// tiny shape underflows to 0 rather than to NaN.
double gamma_draw(double shape, Draws& draws) {
  const double boosted = shape < 1.0 ? shape + 1.0 : shape;
  const double d = boosted - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  double g;
  for (;;) {
    const double x = draws.normal();
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    const double u = draws.unit();
    if (u < 1.0 - 0.0331 * (x * x) * (x * x) || std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) {
      g = d * v;
      break;
    }
  }
  if (shape < 1.0) return std::exp(std::log(g) + std::log(draws.unit()) / shape);
  return g;
}

// x rounded to the nearest integer (halves away from 0) and clipped to [1, max]; compared as
// doubles before the conversion, which a value of 2^63 or more would overflow.
std::size_t rounded_length(double x, std::size_t max) {
  const double r = std::round(x);
  if (!(r < static_cast<double>(max))) return max;
  return r < 1.0 ? 1 : static_cast<std::size_t>(r);
}

// P(X >= t) for X lognormal with log-median mu and log-sd sigma > 0.
double lognormal_survival(double t, double mu, double sigma) {
  return 0.5 * std::erfc((std::log(t) - mu) / (sigma * std::numbers::sqrt2));
}

// E[clip(round(X), 1, MAX)] = 1 + Σ_{k=1}^{MAX-1} P(clip(round(X)) > k) = 1 + Σ P(X >= k + 1/2).
// The sum is exact through k = 65536 (or stops once every remaining term together is below
// 1e-16 of it); beyond, each term is the integral of the survival function over [k, k + 1]
// (midpoint rule, whose error there is far below double precision of the sum), integrated by
// Simpson's rule over log t, where the integrand t·S(t) is smooth.
double lognormal_mean(double median, double sigma, std::size_t max) {
  const double mu = std::log(median);
  if (sigma == 0.0) return static_cast<double>(rounded_length(median, max));
  constexpr std::size_t exact_terms = 65536;
  double sum = 1.0;
  std::size_t k = 1;
  for (; k < max && k <= exact_terms; ++k) {
    const double s = lognormal_survival(static_cast<double>(k) + 0.5, mu, sigma);
    sum += s;
    if (s * static_cast<double>(max - k) < 1e-16 * sum) return sum;
  }
  if (k >= max) return sum;
  // Σ_{j=k}^{max-1} S(j + 1/2) ≈ ∫_k^max S(t) dt = ∫_{ln k}^{ln max} e^u S(e^u) du.
  const double a = std::log(static_cast<double>(k)), b = std::log(static_cast<double>(max));
  constexpr int panels = 4096;  // even
  const double h = (b - a) / panels;
  double integral = 0.0;
  for (int i = 0; i <= panels; ++i) {
    const double u = a + h * i;
    const double w = i == 0 || i == panels ? 1.0 : (i % 2 == 1 ? 4.0 : 2.0);
    integral += w * std::exp(u) * lognormal_survival(std::exp(u), mu, sigma);
  }
  return sum + integral * h / 3.0;
}

constexpr const char* allowed_kinds = "fixed:N, uniform:LO,HI or lognormal:MEDIAN,SIGMA,MAX";

}  // namespace

LengthDistribution LengthDistribution::parse(const std::string& text, const std::string& what) {
  const auto fail = [&](const std::string& reason) {
    throw InputError(what + ": " + in_quotes(text) + ": " + reason);
  };
  const std::string_view spec = trimmed(text);
  const auto colon = spec.find(':');
  const std::string_view kind = trimmed(spec.substr(0, colon));
  if (colon == std::string_view::npos) {
    if (kind == "fixed" || kind == "uniform" || kind == "lognormal")
      fail("no numbers after the kind; expected " + std::string(allowed_kinds));
    fail("not a length distribution; expected " + std::string(allowed_kinds));
  }
  const auto fields = split(spec.substr(colon + 1), ',');
  const auto expect_fields = [&](std::size_t n, const char* form) {
    if (fields.size() != n)
      fail(std::string(kind) + " takes " + std::to_string(n) + (n == 1 ? " number" : " numbers") + " (" + form +
           "), got " + std::to_string(fields.size()));
  };

  LengthDistribution d;
  if (kind == "fixed") {
    expect_fields(1, "fixed:N");
    d.kind_ = Kind::fixed;
    d.lo_ = d.hi_ = length_field(fields[0], "N", fail);
    d.mean_ = static_cast<double>(d.lo_);
  } else if (kind == "uniform") {
    expect_fields(2, "uniform:LO,HI");
    d.kind_ = Kind::uniform;
    d.lo_ = length_field(fields[0], "LO", fail);
    d.hi_ = length_field(fields[1], "HI", fail);
    if (d.lo_ > d.hi_) fail("LO " + std::to_string(d.lo_) + " is greater than HI " + std::to_string(d.hi_));
    d.mean_ = (static_cast<double>(d.lo_) + static_cast<double>(d.hi_)) / 2.0;
  } else if (kind == "lognormal") {
    expect_fields(3, "lognormal:MEDIAN,SIGMA,MAX");
    d.kind_ = Kind::lognormal;
    const auto median = number<double>(fields[0]);
    if (!median) fail("MEDIAN " + in_quotes(fields[0]) + " is not a number");
    if (!(std::isfinite(*median) && *median > 0.0))
      fail("MEDIAN " + std::string(fields[0]) + " must be a finite number above 0");
    const auto sigma = number<double>(fields[1]);
    if (!sigma) fail("SIGMA " + in_quotes(fields[1]) + " is not a number");
    if (!(std::isfinite(*sigma) && *sigma >= 0.0))
      fail("SIGMA " + std::string(fields[1]) + " must be a finite number of 0 or more");
    d.median_ = *median;
    d.sigma_ = *sigma;
    d.hi_ = d.max_given_ = length_field(fields[2], "MAX", fail);
    d.lo_ = 1;
    if (d.sigma_ == 0.0) d.lo_ = d.hi_ = rounded_length(d.median_, d.hi_);
    d.mean_ = lognormal_mean(d.median_, d.sigma_, d.hi_);
  } else {
    fail("unknown distribution " + in_quotes(kind) + "; expected " + allowed_kinds);
  }
  return d;
}

std::size_t LengthDistribution::draw(std::uint64_t seed, std::uint64_t index) const {
  switch (kind_) {
    case Kind::fixed: return lo_;
    case Kind::uniform: {
      // The modulo's bias is at most (HI - LO + 1) / 2^64: far below any test's resolution.
      const std::uint64_t range = static_cast<std::uint64_t>(hi_ - lo_) + 1;
      return lo_ + static_cast<std::size_t>(range == 0 ? rng::bits(seed, index) : rng::bits(seed, index) % range);
    }
    case Kind::lognormal: {
      if (lo_ == hi_) return lo_;
      Draws draws(rng::bits(seed, index));
      return rounded_length(median_ * std::exp(sigma_ * draws.normal()), hi_);
    }
  }
  return lo_;
}

std::size_t LengthDistribution::min() const { return lo_; }
std::size_t LengthDistribution::max() const { return hi_; }
double LengthDistribution::mean() const { return mean_; }

std::string LengthDistribution::describe() const {
  switch (kind_) {
    case Kind::fixed: return "fixed:" + std::to_string(lo_);
    case Kind::uniform: return "uniform:" + std::to_string(lo_) + "," + std::to_string(hi_);
    case Kind::lognormal:
      // MAX as given, not the clipped value a zero SIGMA leaves in hi_.
      return "lognormal:" + shortest(median_) + "," + shortest(sigma_) + "," + std::to_string(max_given_);
  }
  return {};
}

void WorkloadSpec::validate() const {
  if (!(std::isfinite(rate) && rate > 0.0))
    throw InputError("rate " + shortest(rate) + " must be a finite number of requests per second above 0");
  if (arrivals == Arrivals::bursty && !(std::isfinite(burst_cv) && burst_cv > 1.0))
    throw InputError("burst_cv " + shortest(burst_cv) +
                     " must be a finite coefficient of variation above 1 for bursty arrivals (1 is Poisson)");
  if (requests == 0) throw InputError("requests 0: a workload needs at least 1 request");
}

std::vector<Request> make_workload(const WorkloadSpec& spec, std::uint64_t seed) {
  spec.validate();
  // Three independent streams, so that changing one length distribution leaves the arrivals and
  // the other lengths as they were.
  const std::uint64_t gap_seed = rng::bits(seed, 0), prompt_seed = rng::bits(seed, 1),
                      output_seed = rng::bits(seed, 2);
  const double shape = 1.0 / (spec.burst_cv * spec.burst_cv);
  std::vector<Request> requests(spec.requests);
  double t = 0.0;
  for (std::size_t i = 0; i < spec.requests; ++i) {
    Draws draws(rng::bits(gap_seed, i));
    // Poisson: exponential gaps of mean 1/λ; bursty: gamma of shape 1/cv² and scale cv²/λ, whose
    // mean is 1/λ and coefficient of variation cv.
    const double gap = spec.arrivals == Arrivals::poisson ? -std::log(draws.unit()) / spec.rate
                                                          : gamma_draw(shape, draws) / (shape * spec.rate);
    t += gap;
    requests[i] = {i, t, spec.prompt_lens.draw(prompt_seed, i), spec.output_lens.draw(output_seed, i)};
  }
  return requests;
}

std::vector<Request> read_trace(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw InputError(path + ": cannot read the trace: not a file");
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot read the trace: the file does not open");

  std::vector<Request> requests;
  std::string line, previous_arrival;
  std::size_t line_no = 0;
  bool seen_content = false;
  while (std::getline(in, line)) {
    ++line_no;
    const std::string_view content = trimmed(line);
    if (content.empty() || content.front() == '#') continue;
    const auto fail = [&](const std::string& reason) {
      throw InputError(path + ":" + std::to_string(line_no) + ": " + reason);
    };
    const auto fields = split(content, ',');
    const bool first = !seen_content;
    seen_content = true;
    if (first && fields.size() == 3 && fields[0] == "arrival_s" && fields[1] == "prompt_len" &&
        fields[2] == "output_len")
      continue;
    if (fields.size() != 3)
      fail("expected 3 fields (arrival_s,prompt_len,output_len), got " + std::to_string(fields.size()) + ": " +
           in_quotes(content));
    const auto arrival = number<double>(fields[0]);
    if (!arrival) {
      fail("arrival_s " + in_quotes(fields[0]) + " is not a number" +
           (first ? " (a header line must be exactly arrival_s,prompt_len,output_len)" : ""));
    }
    if (!std::isfinite(*arrival)) fail("arrival_s " + in_quotes(fields[0]) + " is not finite");
    if (*arrival < 0.0) fail("arrival_s " + std::string(fields[0]) + " is negative");
    if (!requests.empty() && *arrival < requests.back().arrival_s)
      fail("arrival_s " + std::string(fields[0]) + " is before the previous row's " + previous_arrival +
           "; rows must be in arrival order");
    const std::size_t prompt = length_field(fields[1], "prompt_len", fail);
    const std::size_t output = length_field(fields[2], "output_len", fail);
    requests.push_back({requests.size(), *arrival, prompt, output});
    previous_arrival = std::string(fields[0]);
  }
  if (in.bad()) throw InputError(path + ": cannot read the trace: a read failed");
  if (requests.empty()) throw InputError(path + ": the trace has no rows of arrival_s,prompt_len,output_len");
  return requests;
}

}  // namespace aiopt::dynamic_batching
