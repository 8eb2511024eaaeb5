#include "support/near_tie.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

namespace aiopt::test {

std::size_t rows_before_near_tie(const std::vector<float>& logits, std::size_t vocab, double relative_tolerance) {
  const std::size_t rows = logits.size() / vocab;
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * vocab;
    double first = -INFINITY, second = -INFINITY, scale = 0.0;
    for (std::size_t v = 0; v < vocab; ++v) {
      const double x = row[v];
      scale = std::max(scale, std::fabs(x));
      if (x > first) {
        second = first;
        first = x;
      } else if (x > second) {
        second = x;
      }
    }
    if (!(first - second > 2.0 * relative_tolerance * scale)) return r;
  }
  return rows;
}

bool tokens_agree_before_near_tie(const std::vector<std::int32_t>& got, const std::vector<std::int32_t>& want,
                                  const std::vector<float>& want_logits, std::size_t vocab,
                                  double relative_tolerance) {
  REQUIRE(want_logits.size() == want.size() * vocab);
  REQUIRE(got.size() == want.size());
  const std::size_t decisive = rows_before_near_tie(want_logits, vocab, relative_tolerance);
  UNSCOPED_INFO("tokens compared before the first near-tie: " << decisive << " of " << want.size());
  return std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(decisive), want.begin());
}

}  // namespace aiopt::test
