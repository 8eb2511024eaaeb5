#pragma once
// The request stream a serving engine is measured on: when each request arrives and how long its
// prompt and its output are. Arrivals are a Poisson process (exponential gaps) or a bursty renewal
// process (gamma gaps with a coefficient of variation above 1: clumps of requests and long
// silences, at the same mean rate); lengths come from a fixed, uniform or clipped lognormal
// distribution, or every field from a recorded trace file. Every draw is counter-based
// (core/rng.hpp): request i's gap and lengths are pure functions of (seed, i), the same on every
// machine and standard library (no std:: distributions).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace aiopt::dynamic_batching {

struct Request {
  std::size_t id = 0;       // 0..n-1 in arrival order
  double arrival_s = 0.0;   // seconds from the start of the stream
  std::size_t prompt_len = 0, output_len = 0;  // tokens, each >= 1
};

// A distribution of token counts, from its text:
//   "fixed:N"                    always N;
//   "uniform:LO,HI"              each integer in [LO, HI] equally likely;
//   "lognormal:MEDIAN,SIGMA,MAX" exp(N(ln MEDIAN, SIGMA²)) rounded to the nearest integer and
//                                clipped to [1, MAX] (the heavy right tail of real chat lengths,
//                                bounded so a KV cache can be sized).
// Whitespace around the text and around each number is allowed. A default-constructed
// distribution is "fixed:1".
class LengthDistribution {
 public:
  enum class Kind { fixed, uniform, lognormal };

  LengthDistribution() = default;

  // InputError naming `what` (e.g. "prompt_lens") and the text on anything malformed: an unknown
  // kind (the message lists the allowed ones), a missing or non-numeric field, a length of 0 or
  // below, LO > HI, SIGMA negative or non-finite, MEDIAN <= 0 or non-finite, MAX < 1, a wrong
  // number of fields or trailing characters.
  static LengthDistribution parse(const std::string& text, const std::string& what);

  // The length of draw `index` under `seed`: the same (seed, index) always gives the same length,
  // whatever else was drawn before.
  std::size_t draw(std::uint64_t seed, std::uint64_t index) const;

  // The smallest and largest lengths a draw can give: N for fixed, LO and HI for uniform; for
  // lognormal 1 and MAX (with SIGMA = 0, the one clipped, rounded MEDIAN).
  std::size_t min() const;
  std::size_t max() const;

  // The expected length. Exact for fixed and uniform; for lognormal the mean of the clipped,
  // rounded distribution computed numerically (1 + Σ_{k=1}^{MAX-1} P(X >= k + 1/2), the
  // survival function exact through k = 65536 and its integral in closed form beyond), not
  // estimated from draws.
  double mean() const;

  // The canonical text, which parse() reads back to the same distribution: "fixed:128",
  // "uniform:16,512", "lognormal:128,0.8,2048".
  std::string describe() const;

  Kind kind() const { return kind_; }

 private:
  Kind kind_ = Kind::fixed;
  std::size_t lo_ = 1, hi_ = 1;  // the bounds min() and max() return
  std::size_t max_given_ = 1;    // lognormal: MAX as written
  double median_ = 1.0, sigma_ = 0.0;
  double mean_ = 1.0;  // computed once by parse()
};

enum class Arrivals { poisson, bursty };

struct WorkloadSpec {
  Arrivals arrivals = Arrivals::poisson;
  double rate = 1.0;      // λ, requests per second (> 0, finite)
  double burst_cv = 3.0;  // bursty: coefficient of variation of the gaps (> 1, finite): gamma
                          // gaps of shape 1/cv² and mean 1/λ
  std::size_t requests = 64;
  LengthDistribution prompt_lens, output_lens;

  // InputError naming the value: rate <= 0 or non-finite, burst_cv <= 1 or non-finite for
  // bursty arrivals, requests 0.
  void validate() const;
};

// `spec.requests` requests, ids 0..n-1 in arrival order. The process starts at t = 0 and the
// first request arrives one gap later (arrival_s of request i is the sum of gaps 0..i), so n
// requests span n gaps and the offered rate is n / (expected last arrival) = λ exactly.
// Seeded: the same spec and seed give the same requests; gaps, prompt lengths and output lengths
// come from three independent streams derived from the seed. Validates the spec first.
// With a very large burst_cv the smallest gamma gaps underflow to 0: requests that arrive together.
std::vector<Request> make_workload(const WorkloadSpec& spec, std::uint64_t seed);

// A trace file of "arrival_s,prompt_len,output_len" rows (CSV). An optional header line with
// exactly those names may come first; blank lines and lines starting with '#' are ignored;
// whitespace around fields is allowed. Arrivals are seconds (>= 0, finite, non-decreasing),
// lengths whole numbers >= 1. Ids follow row order. InputError "PATH:LINE: ..." naming the bad
// value (not a number, a length of 0 or below, a negative or non-finite arrival, an arrival
// before the previous row's, a wrong number of fields), or "PATH: ..." for a file that cannot be
// read or holds no rows.
std::vector<Request> read_trace(const std::string& path);

}  // namespace aiopt::dynamic_batching
