// 16-bit weights (kernels/cpu/weights_half): every GEMV kernel this CPU runs, and the GEMM, with
// f16 and bf16 weights against products in double.
//
// Tolerances, per output y_j, with u = 2^-24:
//  - Against W'x in double, W' the stored weights widened (exactly) to fp32: a dot product of
//    k terms in fp32 in any order is within k·u·Σ|w'·x| (Higham §3.1); the bias and the final
//    rounding add 2u·(|y| + |b|): tolerance (k + 2)·u·Σ_i|w'_i·x_i| + 2u·(|y_j| + |b_j|).
//  - Against Wx with the original fp32 weights: storing rounds each weight to nearest, relative
//    error u_h (f16 2^-11, bf16 2^-8), or absolute 2^-25 for an f16 subnormal: add
//    Σ_i |x_i|·(u_h·|w_i| + 2^-25).
// A NaN in an output always fails a comparison.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/dtype.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "kernels/cpu/weights_half.hpp"
#include "support/linear_double.hpp"
#include "support/random.hpp"

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
using cpu::SimdPath;

namespace {

constexpr double u = 1.0 / 16777216.0;  // 2^-24

using aiopt::test::random_vector;

std::vector<std::uint16_t> stored(const std::vector<float>& w, DType dtype) {
  std::vector<std::uint16_t> h(w.size());
  convert(w.data(), h.data(), w.size(), dtype);
  return h;
}

// y (m, n) against the stored weights and against the original ones.
void check_product(const std::vector<float>& y, const std::vector<std::uint16_t>& h, DType dtype,
                   const std::vector<float>& w, const std::vector<float>& x, const float* b, std::size_t m,
                   std::size_t n, std::size_t k) {
  const double u_h = dtype == DType::f16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
  std::vector<float> wide(h.size());
  convert(h.data(), wide.data(), h.size(), dtype);
  const std::vector<double> stored_product = test::linear_double(wide, x, b, m, n, k);
  const std::vector<double> original_product = test::linear_double(w, x, b, m, n, k);
  std::size_t failures = 0;
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      const double ys = stored_product[i * n + j], yo = original_product[i * n + j];
      double abs_sum = 0.0, storage = 0.0;
      for (std::size_t p = 0; p < k; ++p) {
        const double xv = x[i * k + p];
        abs_sum += std::fabs(wide[j * k + p] * xv);
        storage += std::fabs(xv) * (u_h * std::fabs(w[j * k + p]) + std::ldexp(1.0, -25));
      }
      const double tol = (static_cast<double>(k) + 2.0) * u * abs_sum + 2.0 * u * (std::fabs(ys) + (b ? std::fabs(b[j]) : 0.0));
      const double got = y[i * n + j];
      if (!(std::fabs(got - ys) <= tol) || !(std::fabs(got - yo) <= tol + storage)) {
        if (failures++ < 5)
          UNSCOPED_INFO("y[" << i << ", " << j << "] = " << got << ", W'x = " << ys << " (tol " << tol
                             << "), Wx = " << yo << " (tol " << tol + storage << ")");
      }
    }
  CHECK(failures == 0);
}

}  // namespace

TEST_CASE("16-bit weights GEMV: every kernel, f16 and bf16, odd n and k") {
  const auto kernels = cpu::simd_paths();
  REQUIRE(kernels.front() == SimdPath::scalar);
  for (DType dtype : {DType::f16, DType::bf16})
    // k = 37 and 1027 leave tails of the 16- and 8-wide steps; n = 1, 5, 39 those of the 4-row blocks.
    for (std::size_t k : {37, 256, 1027})
      for (std::size_t n : {1, 5, 39}) {
        const std::uint64_t seed = k * 131 + n;
        const auto w = random_vector(n * k, seed);
        const auto x = random_vector(k, seed + 1, -2.0f, 2.0f);
        const auto b = random_vector(n, seed + 2);
        const auto h = stored(w, dtype);
        for (bool bias : {false, true})
          for (SimdPath kernel : kernels) {
            INFO("kernel " << cpu::simd_path_name(kernel) << ", " << to_string(dtype) << ", k " << k
                           << ", n " << n << ", bias " << bias);
            std::vector<float> y(n, -7.0f);
            cpu::gemv_half(h.data(), dtype, x.data(), bias ? b.data() : nullptr, y.data(), n, k, kernel);
            check_product(y, h, dtype, w, x, bias ? b.data() : nullptr, 1, n, k);
          }
      }
}

TEST_CASE("16-bit weights GEMM: m > 1, every kernel's widening") {
  for (DType dtype : {DType::f16, DType::bf16})
    for (std::size_t m : {1, 2, 9}) {
      const std::size_t n = 141, k = 203;  // n spans three 64-row tiles, the last partial
      const std::uint64_t seed = 900 + m;
      const auto w = random_vector(n * k, seed);
      const auto x = random_vector(m * k, seed + 1);
      const auto b = random_vector(n, seed + 2);
      const auto h = stored(w, dtype);
      for (SimdPath kernel : cpu::simd_paths()) {
        INFO("kernel " << cpu::simd_path_name(kernel) << ", " << to_string(dtype) << ", m " << m);
        std::vector<float> y(m * n, -7.0f);
        cpu::gemm_half(h.data(), dtype, x.data(), b.data(), y.data(), m, n, k, kernel);
        check_product(y, h, dtype, w, x, b.data(), m, n, k);
      }
    }
}

TEST_CASE("16-bit weights: NaN input gives NaN, a wrong dtype is rejected") {
  const std::size_t n = 6, k = 40;
  const auto w = random_vector(n * k, 3);
  auto x = random_vector(k, 4);
  x[k - 1] = std::numeric_limits<float>::quiet_NaN();  // in the tail of every kernel
  for (DType dtype : {DType::f16, DType::bf16}) {
    const auto h = stored(w, dtype);
    for (SimdPath kernel : cpu::simd_paths()) {
      INFO("kernel " << cpu::simd_path_name(kernel) << ", " << to_string(dtype));
      std::vector<float> y(n, 0.0f);
      cpu::gemv_half(h.data(), dtype, x.data(), nullptr, y.data(), n, k, kernel);
      for (float v : y) CHECK(std::isnan(v));
    }
    std::vector<float> y(2 * n, 0.0f);
    std::vector<float> x2(x);
    x2.insert(x2.end(), x.begin(), x.end());
    cpu::gemm_half(h.data(), dtype, x2.data(), nullptr, y.data(), 2, n, k);
    for (float v : y) CHECK(std::isnan(v));
  }
  std::vector<std::uint16_t> h(n * k, 0);
  std::vector<float> y(n);
  CHECK_THROWS_AS(cpu::gemv_half(h.data(), DType::f32, x.data(), nullptr, y.data(), n, k), std::invalid_argument);
  CHECK_THROWS_AS(cpu::gemm_half(h.data(), DType::i8, x.data(), nullptr, y.data(), 2, n, k), std::invalid_argument);
}
