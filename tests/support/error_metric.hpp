#pragma once
// How far a result is from its reference, for every kernel and technique test: the largest
// absolute error, the largest error relative to the reference's magnitude, the count of elements
// outside a tolerance, and the count that differ bit for bit. A NaN or an infinity where the
// reference is finite makes every measure fail its check (+inf, or counted).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <vector>

namespace aiopt::test {

inline constexpr double fp32_unit_roundoff = 1.0 / 16777216.0;  // u = 2^-24

// max |x|.
template <class T>
double max_abs(std::span<const T> x) {
  double m = 0.0;
  for (const T& v : x) m = std::max(m, std::fabs(static_cast<double>(v)));
  return m;
}
template <class T>
double max_abs(const std::vector<T>& x) { return max_abs(std::span<const T>(x)); }

// max |got − want|; +inf when an element of either is not finite (a NaN or an infinity).
template <class A, class B>
double max_abs_error(std::span<const A> got, std::span<const B> want) {
  REQUIRE(got.size() == want.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = static_cast<double>(got[i]), w = static_cast<double>(want[i]);
    if (!std::isfinite(g) || !std::isfinite(w)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::fabs(g - w));
  }
  return worst;
}
template <class A, class B>
double max_abs_error(const std::vector<A>& got, const std::vector<B>& want) {
  return max_abs_error(std::span<const A>(got), std::span<const B>(want));
}

// max |got − want| / max(floor, max |want|): the error relative to the reference's largest
// magnitude (elementwise relative error means nothing where a gradient cancels to near zero);
// the floor keeps an all-tiny reference from inflating noise. +inf as max_abs_error.
template <class A, class B>
double max_relative_error(std::span<const A> got, std::span<const B> want, double floor = 0.0) {
  const double e = max_abs_error(got, want);
  return std::isinf(e) ? e : e / std::max(floor, max_abs(want));
}
template <class A, class B>
double max_relative_error(const std::vector<A>& got, const std::vector<B>& want, double floor = 0.0) {
  return max_relative_error(std::span<const A>(got), std::span<const B>(want), floor);
}

// The worst over rows of `row_length` elements of each row's max_relative_error: for outputs
// whose rows have their own scale (a step's logits).
template <class A, class B>
double max_row_relative_error(const std::vector<A>& got, const std::vector<B>& want, std::size_t row_length) {
  REQUIRE(got.size() == want.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); i += row_length) {
    const std::size_t n = std::min(row_length, got.size() - i);
    worst = std::max(worst, max_relative_error(std::span<const A>(got).subspan(i, n), std::span<const B>(want).subspan(i, n)));
  }
  return worst;
}

// Elements with |got − want| > tol[i] (or a NaN): 0 when all are close. The first few are
// printed with the failing check.
template <class Want>
std::size_t outside(const std::vector<float>& got, const std::vector<Want>& want, const std::vector<double>& tol) {
  REQUIRE(got.size() == want.size());
  REQUIRE(tol.size() == want.size());
  std::size_t n = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (!(diff <= tol[i])) {
      if (n < 5) UNSCOPED_INFO("element " << i << ": got " << got[i] << ", want " << want[i] << ", tol " << tol[i]);
      ++n;
    }
  }
  return n;
}
template <class Want>
std::size_t outside(const std::vector<float>& got, const std::vector<Want>& want, double tol) {
  return outside(got, want, std::vector<double>(want.size(), tol));
}

// Elements that differ bitwise; a NaN on either side counts unless `nan_equal`.
inline std::size_t differing(const std::vector<float>& a, const std::vector<float>& b, bool nan_equal = false) {
  REQUIRE(a.size() == b.size());
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    n += !(a[i] == b[i] || (nan_equal && std::isnan(a[i]) && std::isnan(b[i])));
  return n;
}

}  // namespace aiopt::test
