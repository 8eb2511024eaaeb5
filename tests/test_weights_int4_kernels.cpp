// Group-wise int4 weights (kernels/cpu/weights_int4): the layout (nibble order, scales, zero
// points), round to nearest even with saturation, the quantization error bound, and every GEMV
// kernel this CPU runs, plus the GEMM, against products in double.
//
// Tolerances, per output y_j, with u = 2^-24 (the unit roundoff of fp32):
//  - Against Ŵx in double, Ŵ the dequantized weights: the kernels fold the zero point out
//    (weights_int4.cpp) and sum Σ q'_i·x_i and the group sums X_g in fp32, so their error is
//    within γ-style (k + 8)·u·B_j, B_j = Σ_i s_g·(q'_i + z_g)·|x_i| with q' the stored nibble
//    (q + 8 for symmetric, z = 8 there); the scalar kernel, summing q·x directly, is within
//    k·u·Σ s_g·|q_i|·|x_i| <= that. Adding the bias and the final roundings add a few u of
//    |y_j| + |b_j|: tolerance (k + 10)·u·B_j + 4·u·(|y_j| + |b_j|).
//  - Against W·x with the original fp32 weights: the format's bound |w − ŵ| <= s/2·(1 + 2^-19)
//    (weights_int4.hpp) gives |Ŵx − Wx|_j <= Σ_i |x_i|·s_g/2·(1 + 2^-19), plus the fp32 error
//    above.
//  - CUDA gemv_int4 ([gpu]) against the dequantized weights times x in double: the GPU's fp32
//    sum of k terms, in any order with fused multiply-adds, is within γ_k·Σ|w·x| of exact
//    (Higham 2002, §3.1): |got − ref| <= (k + 5)·u·Σ_p|w_p·x_p|. Its shape checks are host
//    functions and run without a GPU.
// A NaN in an output always fails a comparison (the checks are written as `err <= tol`).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/half.hpp"
#include "core/rng.hpp"
#include "core/threads.hpp"
#include "kernels/cpu/weights_int4.hpp"
#include "kernels/cuda/weights_int4.hpp"
#include "support/linear_double.hpp"
#include "support/random.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "support/device_copy.hpp"
#endif

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
using cpu::SimdPath;
using cpu::Int4Mode;
namespace gpu = aiopt::kernels::cuda;
using Catch::Contains;

namespace {

constexpr double u = 1.0 / 16777216.0;  // 2^-24

using aiopt::test::random_vector;

int nibble(const cpu::Int4Matrix& w, std::size_t row, std::size_t i) {
  return (w.packed[row * (w.k / 2) + i / 2] >> (4 * (i % 2))) & 0xf;
}
float scale(const cpu::Int4Matrix& w, std::size_t row, std::size_t i) {
  return f16_to_float(w.scales[row * w.groups_per_row() + i / w.group]);
}
// q' + z of the bound above: the stored nibble in offset form plus the zero point.
double nibble_plus_zero(const cpu::Int4Matrix& w, std::size_t row, std::size_t i) {
  if (w.mode == Int4Mode::symmetric) return (nibble(w, row, i) ^ 8) + 8;
  return nibble(w, row, i) + w.zeros[row * w.groups_per_row() + i / w.group];
}

struct Expected {
  std::vector<double> dequantized;  // Ŵx (+ b), (m, n), in double
  std::vector<double> original;     // Wx (+ b), (m, n), in double
  std::vector<double> tol_fp32;     // (m, n)
  std::vector<double> tol_format;   // (m, n), the quantization error bound alone
};

Expected expected(const cpu::Int4Matrix& q, const std::vector<float>& w, const std::vector<float>& x,
                  const float* b, std::size_t m) {
  const std::size_t n = q.n, k = q.k;
  std::vector<float> deq(n * k);
  cpu::dequantize_int4(q, deq.data());
  Expected e{test::linear_double(deq, x, b, m, n, k), test::linear_double(w, x, b, m, n, k), {}, {}};
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      const double yd = e.dequantized[i * n + j];
      double bound = 0.0, format = 0.0;
      for (std::size_t p = 0; p < k; ++p) {
        const double xv = x[i * k + p];
        bound += scale(q, j, p) * nibble_plus_zero(q, j, p) * std::fabs(xv);
        format += std::fabs(xv) * scale(q, j, p) / 2.0 * (1.0 + std::ldexp(1.0, -19));
      }
      e.tol_fp32.push_back((static_cast<double>(k) + 10.0) * u * bound +
                           4.0 * u * (std::fabs(yd) + (b ? std::fabs(b[j]) : 0.0)));
      e.tol_format.push_back(format);
    }
  return e;
}

void check_outputs(const std::vector<float>& y, const Expected& e) {
  double worst = 0.0;
  std::size_t failures = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    const double err = std::fabs(y[i] - e.dequantized[i]);
    const double err_original = std::fabs(y[i] - e.original[i]);
    if (!(err <= e.tol_fp32[i]) || !(err_original <= e.tol_format[i] + e.tol_fp32[i])) {
      if (failures++ < 5)
        UNSCOPED_INFO("y[" << i << "] = " << y[i] << ", Ŵx = " << e.dequantized[i] << " (tol "
                           << e.tol_fp32[i] << "), Wx = " << e.original[i] << " (tol "
                           << e.tol_format[i] + e.tol_fp32[i] << ")");
    }
    if (e.tol_fp32[i] > 0) worst = std::max(worst, err / e.tol_fp32[i]);
  }
  INFO("worst error / fp32 tolerance: " << worst);
  CHECK(failures == 0);
}

}  // namespace

TEST_CASE("int4 weights: nibble order, scales and zero points of a hand-made row") {
  // Symmetric: max|w| = 7 gives s = 1 exactly, so q = w.
  std::vector<float> w(32);
  for (std::size_t i = 0; i < 32; ++i) w[i] = static_cast<float>(static_cast<int>(i % 15) - 7);
  auto q = cpu::quantize_int4(w.data(), 1, 32, 32, Int4Mode::symmetric);
  CHECK(f16_to_float(q.scales[0]) == 1.0f);
  CHECK(q.zeros.size() == 0);
  for (std::size_t i = 0; i < 16; ++i) {
    const int lo = static_cast<int>(w[2 * i]) & 0xf, hi = static_cast<int>(w[2 * i + 1]) & 0xf;
    INFO("byte " << i);
    CHECK(q.packed[i] == (lo | (hi << 4)));  // element 2i low nibble, two's complement
  }
  std::vector<float> back(32);
  cpu::dequantize_int4(q, back.data());
  CHECK(back == w);

  // Asymmetric: values −5..10 give lo = −5, hi = 10, s = 1, z = 5, q = w + 5.
  for (std::size_t i = 0; i < 32; ++i) w[i] = static_cast<float>(static_cast<int>(i % 16) - 5);
  auto a = cpu::quantize_int4(w.data(), 1, 32, 32, Int4Mode::asymmetric);
  CHECK(f16_to_float(a.scales[0]) == 1.0f);
  REQUIRE(a.zeros.size() == 1);
  CHECK(a.zeros[0] == 5);
  for (std::size_t i = 0; i < 16; ++i) {
    INFO("byte " << i);
    CHECK(a.packed[i] == ((static_cast<int>(w[2 * i]) + 5) | ((static_cast<int>(w[2 * i + 1]) + 5) << 4)));
  }
  cpu::dequantize_int4(a, back.data());
  CHECK(back == w);
}

TEST_CASE("int4 weights: round to nearest even, saturation, rejected input") {
  CHECK(cpu::round_saturate(0.5f, -8, 7) == 0);
  CHECK(cpu::round_saturate(1.5f, -8, 7) == 2);
  CHECK(cpu::round_saturate(2.5f, -8, 7) == 2);
  CHECK(cpu::round_saturate(-0.5f, -8, 7) == 0);
  CHECK(cpu::round_saturate(-1.5f, -8, 7) == -2);
  CHECK(cpu::round_saturate(-2.5f, -8, 7) == -2);
  CHECK(cpu::round_saturate(2.4999f, -8, 7) == 2);
  CHECK(cpu::round_saturate(2.5001f, -8, 7) == 3);
  CHECK(cpu::round_saturate(7.5f, -8, 7) == 7);
  CHECK(cpu::round_saturate(100.0f, -8, 7) == 7);
  CHECK(cpu::round_saturate(-8.5f, -8, 7) == -8);
  CHECK(cpu::round_saturate(-1e30f, -8, 7) == -8);
  CHECK(cpu::round_saturate(15.7f, 0, 15) == 15);
  CHECK(cpu::round_saturate(-0.7f, 0, 15) == 0);
  CHECK_THROWS_AS(cpu::round_saturate(std::nanf(""), -8, 7), std::invalid_argument);

  // Ties inside a group with s = 1 (max|w| = 7): 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -3.5 -> -4.
  std::vector<float> w(32, 0.0f);
  w[0] = 7.0f;
  w[1] = 2.5f;
  w[2] = 3.5f;
  w[3] = -2.5f;
  w[4] = -3.5f;
  auto q = cpu::quantize_int4(w.data(), 1, 32, 32, Int4Mode::symmetric);
  std::vector<float> back(32);
  cpu::dequantize_int4(q, back.data());
  CHECK(back[1] == 2.0f);
  CHECK(back[2] == 4.0f);
  CHECK(back[3] == -2.0f);
  CHECK(back[4] == -4.0f);

  std::vector<float> ok(64, 0.25f);
  CHECK_THROWS_AS(cpu::quantize_int4(ok.data(), 1, 64, 16, Int4Mode::symmetric), std::invalid_argument);
  CHECK_THROWS_AS(cpu::quantize_int4(ok.data(), 1, 48, 32, Int4Mode::symmetric), std::invalid_argument);
  CHECK_THROWS_AS(cpu::quantize_int4(ok.data(), 1, 32, 64, Int4Mode::asymmetric), std::invalid_argument);
  ok[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(cpu::quantize_int4(ok.data(), 1, 64, 32, Int4Mode::symmetric), std::invalid_argument);
  ok[5] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(cpu::quantize_int4(ok.data(), 1, 64, 32, Int4Mode::asymmetric), std::invalid_argument);
  ok[5] = 1e9f;  // scale 1e9 / 7 is past f16's 65504
  CHECK_THROWS_AS(cpu::quantize_int4(ok.data(), 1, 64, 32, Int4Mode::symmetric), std::invalid_argument);
}

TEST_CASE("int4 weights: bytes per weight and the per-weight error bound, both modes, every group") {
  const std::size_t n = 9, k = 512;
  // Weights of mixed magnitudes, so scales span several f16 binades.
  std::vector<float> w = random_vector(n * k, 11);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] *= std::ldexp(1.0f, -static_cast<int>(i / 97 % 12));
  for (Int4Mode mode : {Int4Mode::symmetric, Int4Mode::asymmetric})
    for (std::size_t g : {32, 64, 128}) {
      INFO("mode " << (mode == Int4Mode::symmetric ? "symmetric" : "asymmetric") << ", group " << g);
      auto q = cpu::quantize_int4(w.data(), n, k, g, mode);
      CHECK(static_cast<double>(q.bytes()) == n * k * cpu::int4_bytes_per_weight(g, mode));
      std::vector<float> back(n * k);
      cpu::dequantize_int4(q, back.data());
      std::size_t failures = 0;
      for (std::size_t r = 0; r < n; ++r)
        for (std::size_t i = 0; i < k; ++i) {
          const double bound = scale(q, r, i) / 2.0 * (1.0 + std::ldexp(1.0, -19));
          if (!(std::fabs(static_cast<double>(back[r * k + i]) - w[r * k + i]) <= bound)) ++failures;
        }
      CHECK(failures == 0);
    }
}

TEST_CASE("int4 GEMV: every kernel against Ŵx and Wx, odd n, every group size, both modes") {
  const auto kernels = cpu::simd_paths();
  REQUIRE(kernels.front() == SimdPath::scalar);
  for (Int4Mode mode : {Int4Mode::symmetric, Int4Mode::asymmetric})
    for (std::size_t g : {32, 64, 128})
      // k = 3g and 13g leave tails of the 128- and 64-element blocks; 4096 is a model's width.
      for (std::size_t k : {3 * g, 13 * g, std::size_t{4096}})
        for (std::size_t n : {1, 7, 37}) {
          const std::uint64_t seed = g * 7919 + k * 31 + n;
          const auto w = random_vector(n * k, seed);
          const auto x = random_vector(k, seed + 1, -2.0f, 2.0f);
          const auto b = random_vector(n, seed + 2);
          const auto q = cpu::quantize_int4(w.data(), n, k, g, mode);
          for (bool bias : {false, true}) {
            const Expected e = expected(q, w, x, bias ? b.data() : nullptr, 1);
            for (SimdPath kernel : kernels) {
              INFO("kernel " << cpu::simd_path_name(kernel) << ", mode "
                             << (mode == Int4Mode::symmetric ? "symmetric" : "asymmetric") << ", g " << g
                             << ", k " << k << ", n " << n << ", bias " << bias);
              std::vector<float> y(n, -7.0f);
              cpu::gemv_int4(q, x.data(), bias ? b.data() : nullptr, y.data(), kernel);
              check_outputs(y, e);
            }
          }
        }
}

TEST_CASE("int4 GEMV: one and two threads give the same bits") {
  const std::size_t n = 61, k = 1024;
  const auto w = random_vector(n * k, 5);
  const auto x = random_vector(k, 6);
  const auto q = cpu::quantize_int4(w.data(), n, k, 64, Int4Mode::asymmetric);
  const int saved = threads();
  for (SimdPath kernel : cpu::simd_paths()) {
    INFO("kernel " << cpu::simd_path_name(kernel));
    std::vector<float> y1(n), y2(n);
    set_threads(1);
    cpu::gemv_int4(q, x.data(), nullptr, y1.data(), kernel);
    set_threads(2);
    cpu::gemv_int4(q, x.data(), nullptr, y2.data(), kernel);
    CHECK(y1 == y2);
  }
  set_threads(saved);
}

TEST_CASE("int4 GEMM: m > 1 against Ŵx and Wx") {
  for (Int4Mode mode : {Int4Mode::symmetric, Int4Mode::asymmetric})
    for (std::size_t g : {32, 128})
      for (std::size_t m : {1, 3, 17}) {
        // n = 150 spans three 64-row tiles, the last partial.
        const std::size_t n = 150, k = 5 * g;
        const std::uint64_t seed = 100 + g + m;
        const auto w = random_vector(n * k, seed);
        const auto x = random_vector(m * k, seed + 1);
        const auto b = random_vector(n, seed + 2);
        const auto q = cpu::quantize_int4(w.data(), n, k, g, mode);
        const Expected e = expected(q, w, x, b.data(), m);
        INFO("mode " << (mode == Int4Mode::symmetric ? "symmetric" : "asymmetric") << ", g " << g << ", m " << m);
        std::vector<float> y(m * n, -7.0f);
        cpu::gemm_int4(q, x.data(), b.data(), y.data(), m);
        check_outputs(y, e);
      }
}

TEST_CASE("int4 GEMV and GEMM: a NaN input gives NaN outputs") {
  const std::size_t n = 13, k = 256;
  const auto w = random_vector(n * k, 21);
  for (Int4Mode mode : {Int4Mode::symmetric, Int4Mode::asymmetric}) {
    const auto q = cpu::quantize_int4(w.data(), n, k, 32, mode);
    auto x = random_vector(3 * k, 22);
    x[k - 1] = std::numeric_limits<float>::quiet_NaN();  // row 0 of x, in the last group
    for (SimdPath kernel : cpu::simd_paths()) {
      INFO("kernel " << cpu::simd_path_name(kernel));
      std::vector<float> y(n, 0.0f);
      cpu::gemv_int4(q, x.data(), nullptr, y.data(), kernel);
      for (float v : y) CHECK(std::isnan(v));
    }
    std::vector<float> y(3 * n, 0.0f);
    cpu::gemm_int4(q, x.data(), nullptr, y.data(), 3);
    for (std::size_t j = 0; j < n; ++j) {
      CHECK(std::isnan(y[j]));            // row 0 holds the NaN
      CHECK(std::isfinite(y[n + j]));     // rows 1 and 2 do not
      CHECK(std::isfinite(y[2 * n + j]));
    }
  }
}

// ---- the CUDA int4 GEMV

namespace {

// The CUDA GEMV's int4 format (kernels/cuda/weights_int4.hpp): symmetric, fp16 scales, no zero
// point.

struct Int4Weights {
  std::vector<std::uint8_t> packed;   // (n, k/2)
  std::vector<std::uint16_t> scales;  // (n, k/group) fp16 bits
  std::vector<float> dequantized;     // (n, k): s·q
};

Int4Weights random_int4(std::size_t n, std::size_t k, std::size_t group, std::uint64_t seed) {
  rng::Stream s(seed);
  Int4Weights w{std::vector<std::uint8_t>(n * k / 2, 0), std::vector<std::uint16_t>(n * (k / group)),
                std::vector<float>(n * k)};
  for (auto& scale : w.scales) scale = float_to_f16(s.uniform(0.01f, 0.1f));
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t p = 0; p < k; ++p) {
      const int q = static_cast<int>(s.next_bits() % 16) - 8;  // [−8, 7]
      const std::size_t i = j * k + p;
      // Element 2i in the low nibble of byte i, element 2i + 1 in its high nibble.
      w.packed[i / 2] |= static_cast<std::uint8_t>((q & 15) << (i % 2 ? 4 : 0));
      w.dequantized[i] = f16_to_float(w.scales[j * (k / group) + p / group]) * static_cast<float>(q);
    }
  return w;
}

}  // namespace

TEST_CASE("cuda gemv_int4 shape checks name the bad value and the rule", "[weights_int4]") {
  alignas(16) static std::byte storage[64];
  const void* a = storage;
  const void* off = storage + 4;
  CHECK_NOTHROW(gpu::validate_gemv_int4(1, 1, 32, 32, a, a));
  CHECK_NOTHROW(gpu::validate_gemv_int4(8, 3, 768, 128, a, a));
  CHECK_THROWS_AS(gpu::validate_gemv_int4(1, 1, 96, 64, a, a), std::invalid_argument);
  CHECK_THROWS_WITH(gpu::validate_gemv_int4(1, 1, 96, 64, a, a), Contains("k = 96") && Contains("group size 64"));
  CHECK_THROWS_WITH(gpu::validate_gemv_int4(1, 1, 64, 128, a, a), Contains("k = 64"));
  CHECK_THROWS_WITH(gpu::validate_gemv_int4(1, 1, 96, 48, a, a), Contains("group = 48") && Contains("32, 64 or 128"));
  CHECK_THROWS_WITH(gpu::validate_gemv_int4(0, 1, 32, 32, a, a), Contains("m = 0") && Contains("1 to 8"));
  CHECK_THROWS_WITH(gpu::validate_gemv_int4(9, 1, 32, 32, a, a), Contains("m = 9"));
  CHECK_THROWS_WITH(gpu::validate_gemv_int4(1, 0, 32, 32, a, a), Contains("n = 0"));
  CHECK_THROWS_WITH(gpu::validate_gemv_int4(1, 1, 32, 32, off, a), Contains("x is not 16-byte aligned"));
  CHECK_THROWS_WITH(gpu::validate_gemv_int4(1, 1, 32, 32, a, off), Contains("packed weights are not 16-byte aligned"));
}

TEST_CASE("the test's int4 packing puts element 2i in the low nibble", "[weights_int4]") {
  // The reference packer against the format's definition, on one row of k = 32.
  const auto w = random_int4(1, 32, 32, 5);
  const float s = f16_to_float(w.scales[0]);
  for (std::size_t p = 0; p < 32; ++p) {
    const int nibble = (w.packed[p / 2] >> (p % 2 ? 4 : 0)) & 15;
    const int q = nibble >= 8 ? nibble - 16 : nibble;
    INFO("p=" << p);
    CHECK(w.dequantized[p] == s * static_cast<float>(q));
  }
}

#ifdef AIOPT_HAVE_CUDA

using aiopt::test::download, aiopt::test::upload;

TEST_CASE("cuda gemv_int4 matches the CPU on the dequantized weights", "[weights_int4][gpu]") {
  struct Shape {
    std::size_t m, n, k, group;
  };
  // k/32 chunks of 1, 8, 16 and more pick each of the kernel's 8, 16 and 32 lanes per row;
  // n odd and below one block's rows; m from 1 to the limit 8.
  const Shape shapes[] = {{1, 1, 32, 32},    {1, 37, 256, 64},   {3, 100, 512, 128}, {2, 33, 768, 32},
                          {8, 257, 768, 64}, {1, 1000, 2048, 128}, {5, 64, 4096, 32}};
  for (const auto& sh : shapes) {
    INFO("m=" << sh.m << " n=" << sh.n << " k=" << sh.k << " group=" << sh.group);
    const auto w = random_int4(sh.n, sh.k, sh.group, 81 + sh.k);
    const auto x = random_vector(sh.m * sh.k, 82 + sh.n);
    auto dx = upload(x);
    auto dp = upload(w.packed);
    auto ds = upload(w.scales);
    auto dy = upload(std::vector<float>(sh.m * sh.n, std::numeric_limits<float>::quiet_NaN()));
    gpu::gemv_int4(dx.data(), dp.data(), ds.data(), dy.data(), sh.m, sh.n, sh.k, sh.group, nullptr);
    const auto y = download(dy);
    double worst = 0.0;
    for (std::size_t r = 0; r < sh.m; ++r)
      for (std::size_t j = 0; j < sh.n; ++j) {
        double ref = 0.0, magnitude = 0.0;
        for (std::size_t p = 0; p < sh.k; ++p) {
          const double t = static_cast<double>(w.dequantized[j * sh.k + p]) * x[r * sh.k + p];
          ref += t;
          magnitude += std::fabs(t);
        }
        const double bound = (static_cast<double>(sh.k) + 5) * u * magnitude + 1e-30;
        const double e = std::fabs(y[r * sh.n + j] - ref);
        worst = std::max(worst, std::isnan(e) ? std::numeric_limits<double>::infinity() : e / bound);
      }
    CHECK(worst <= 1.0);
  }
}

#endif  // AIOPT_HAVE_CUDA
