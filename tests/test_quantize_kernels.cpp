// The quantization kernels (TECHNIQUES.md §3). On the CPU, symmetric int8 quantization
// (kernels/cpu/quantize.hpp): rounding to nearest even on exact ties, saturation at ±127 (never
// −128), zero rows, the static clip count, the biased activation format and its padding, the
// error bound s/2 on fresh random rows, and non-finite input, which must throw rather than
// quantize silently. The host quantizers the CUDA runs store their weights with (int8 rows, fp8
// e4m3 with one scale), bit for bit against the device quantizers' rule written plainly here,
// and under [gpu] against the device too. On CUDA: the activation quantizers and the int32
// dequantizer (kernels/cuda/quantize.hpp) and the cuBLASLt int8 and fp8 GEMMs (gemm_lt.hpp),
// each against a plain CPU reference written here; their shape checks are host functions and run
// without a GPU, the kernels under [gpu].
//
// CUDA tolerances:
//   quantize_int8_rows, quantize_int8_static, quantize_fp8_e4m3(_static): bit-exact. Both sides
//     compute x / s as one IEEE division and round it to nearest even (rintf / the e4m3
//     conversion against std::nearbyint), and the scales are one IEEE division of the same
//     maximum, so there are no ties to excuse: crafted rows of exact ties must agree too. e4m3
//     NaN encodings (0x7f, 0xff) count as equal.
//   dequantize_int32: bit-exact against the same fma(float(acc), sx·sw, b) in fp32.
//   gemm_int8: bit-exact against int64 sums (int32 accumulation is exact for k·128² < 2^31).
//   gemm_fp8: the reference takes the very e4m3 values and scales the GPU multiplies, so the
//     inputs' 3 mantissa bits cost nothing here: products of two e4m3 values have at most 8
//     significant bits and are exact in fp32. What remains is the accumulation. NVIDIA does not
//     document the fp8 tensor cores' accumulator width; about 14 bits were measured on Hopper
//     (DeepSeek-V3 report, 2024, §3.3.2), and cuBLASLt promotes partial sums to fp32. We allow
//     2^-13 (twice a 14-bit unit roundoff) per addition: |got − ref| <= (k + 5)·2^-13·S with
//     S = sx·sw·Σ|qx·qw|, plus 2^-8·|ref| for a bf16 output's rounding. The worst observed
//     ratio is printed, to tighten this from a real run.
//     Against the unquantized product: e4m3 keeps 3 mantissa bits, so a normal value is within
//     2^-4 relative of x/s and a subnormal within 2^-10 (half the smallest step 2^-9): with
//     e_x = 2^-4·|x| + 2^-10·sx per input, |x̂ŵ − xw| <= e_x·|ŵ| + |x|·e_w, summed over k, plus
//     the accumulation bound above.
//   int8 end to end (quantize both operands, GEMM, dequantize) against x·Wᵀ + b in double: each
//     input is within s/2 of its quantized value, so per row and feature
//     |ŷ − y| <= Σ_p (|x_p|·sw/2 + (|w_p| + sw/2)·sx/2) + 4·2^-24·(|ŷ| + |b|).
// A NaN fails every comparison.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "kernels/cpu/quantize.hpp"
#include "kernels/cuda/gemm_lt.hpp"
#include "support/random.hpp"

#ifdef AIOPT_HAVE_CUDA
#include <cuda_fp8.h>

#include "core/cuda_check.hpp"
#include "core/cuda_runtime.hpp"
#include "core/memory.hpp"
#include "kernels/cuda/quantize.hpp"
#include "support/device_copy.hpp"
#endif

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
namespace gpu = aiopt::kernels::cuda;
using Catch::Contains;

namespace {

constexpr double u = 1.0 / 16777216.0;  // 2^-24: fp32's unit roundoff

using aiopt::test::random_vector;

// q of one row of activations, unbiased.
std::vector<int> activation_row(const cpu::QuantizedActivations& a, std::size_t i) {
  std::vector<int> out(a.k);
  for (std::size_t p = 0; p < a.k; ++p) out[p] = a.value(i, p);
  return out;
}

}  // namespace

TEST_CASE("int8 quantization rounds exact ties to the nearest even integer", "[quantize_kernels]") {
  // The row's max|w| is 127, so s = 1 exactly and w / s is w: every .5 is an exact tie.
  const std::vector<float> w = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -125.5f, 3.49f};
  const std::vector<int> want = {127, 0, 2, 2, 0, -2, -2, 126, -126, 3};
  std::vector<std::int8_t> q(w.size());
  float scale = 0.0f;
  cpu::quantize_rows_int8(w.data(), q.data(), &scale, 1, w.size());
  CHECK(scale == 1.0f);
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(int{q[i]} == want[i]);

  cpu::QuantizedActivations a(1, w.size());
  cpu::quantize_activations_dynamic(w.data(), a);
  CHECK(a.scale[0] == 1.0f);
  CHECK(activation_row(a, 0) == want);

  // Static with s = 0.5: x / s doubles x, so x = 1.25 is the tie 2.5.
  const std::vector<float> x = {1.25f, 0.75f, -1.25f, -0.75f, 0.25f};
  cpu::QuantizedActivations b(1, x.size());
  const auto clip = cpu::quantize_activations_static(x.data(), 0.5f, b);
  CHECK(clip.clipped == 0);
  CHECK(activation_row(b, 0) == std::vector<int>{2, 2, -2, -2, 0});
}

TEST_CASE("static int8 quantization saturates at ±127 and counts what it clipped", "[quantize_kernels]") {
  // s = 1: 127.5 rounds (tie, to even) to 128 and saturates with error exactly s/2, which is not
  // clipping; 127.6 and beyond lose more than s/2 and count.
  const std::vector<float> x = {200.0f, -1000.0f, 127.6f, 127.5f, -127.5f, -128.0f, 3.0f, 1e30f};
  cpu::QuantizedActivations a(1, x.size());
  const auto clip = cpu::quantize_activations_static(x.data(), 1.0f, a);
  CHECK(activation_row(a, 0) == std::vector<int>{127, -127, 127, 127, -127, -127, 3, 127});
  CHECK(clip.clipped == 5);
  CHECK(clip.total == x.size());
  CHECK(clip.fraction() == Approx(5.0 / 8.0));
  for (std::size_t p = 0; p < a.k_padded; ++p) CHECK(int{a.biased[p]} >= 1);  // q never −128

  // A known fraction on random data: 1000 values in [−1, 1], scale 0.5/127: |x| > 0.50197 clips.
  const std::size_t m = 10, k = 100;
  const auto r = random_vector(m * k, 11);
  const float s = 0.5f / 127.0f;
  std::size_t want = 0;
  for (float v : r) want += std::fabs(v / s) > 127.5f;
  cpu::QuantizedActivations big(m, k);
  const auto c = cpu::quantize_activations_static(r.data(), s, big);
  CHECK(c.clipped == want);
  CHECK(c.total == m * k);
  CHECK(c.fraction() > 0.4);  // about half of a uniform [−1, 1] lies beyond ±0.502
  CHECK(c.fraction() < 0.6);

  cpu::QuantizedActivations z(1, 1);
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::nanf("")})
    CHECK_THROWS_AS(cpu::quantize_activations_static(x.data(), bad, z), std::invalid_argument);
}

TEST_CASE("int8 quantization of a zero row gives scale 0 and zeros", "[quantize_kernels]") {
  const std::size_t k = 37;
  std::vector<float> w(3 * k, 0.0f);
  for (std::size_t p = 0; p < k; ++p) w[k + p] = 0.01f * static_cast<float>(p + 1);  // row 1 non-zero
  std::vector<std::int8_t> q(w.size(), 99);
  std::vector<float> scale(3, -1.0f);
  cpu::quantize_rows_int8(w.data(), q.data(), scale.data(), 3, k);
  CHECK(scale[0] == 0.0f);
  CHECK(scale[2] == 0.0f);
  CHECK(scale[1] > 0.0f);
  for (std::size_t p = 0; p < k; ++p) {
    CHECK(int{q[p]} == 0);
    CHECK(int{q[2 * k + p]} == 0);
  }
  std::vector<float> back(w.size(), 1.0f);
  cpu::dequantize_rows_int8(q.data(), scale.data(), back.data(), 3, k);
  for (std::size_t p = 0; p < k; ++p) CHECK(back[p] == 0.0f);

  cpu::QuantizedActivations a(3, k);
  cpu::quantize_activations_dynamic(w.data(), a);
  CHECK(a.scale[0] == 0.0f);
  for (int v : activation_row(a, 0)) CHECK(v == 0);
}

TEST_CASE("int8 quantization is within s/2 of the input on random rows", "[quantize_kernels]") {
  // Each value is off by at most s/2 from rounding, plus the rounding of x / s to fp32
  // (|x / s| <= 127 + ..., so < 128·u·s); the row's largest |x| maps to ±127 exactly.
  for (std::size_t k : {1, 3, 4, 17, 64, 257}) {
    const std::size_t rows = 5;
    auto w = random_vector(rows * k, 100 + k);
    w[2 * k] = 40.0f;  // an outlier: that row's scale is large
    std::vector<std::int8_t> q(w.size());
    std::vector<float> scale(rows);
    cpu::quantize_rows_int8(w.data(), q.data(), scale.data(), rows, k);
    std::vector<float> back(w.size());
    cpu::dequantize_rows_int8(q.data(), scale.data(), back.data(), rows, k);
    cpu::QuantizedActivations a(rows, k);
    cpu::quantize_activations_dynamic(w.data(), a);
    CHECK(a.k_padded % 4 == 0);
    CHECK(a.k_padded >= k);
    CHECK(a.k_padded < k + 4);
    for (std::size_t r = 0; r < rows; ++r) {
      double max_abs = 0.0;
      for (std::size_t p = 0; p < k; ++p) max_abs = std::max(max_abs, std::fabs(double{w[r * k + p]}));
      CHECK(scale[r] == static_cast<float>(max_abs) / 127.0f);
      CHECK(a.scale[r] == scale[r]);
      bool hit_max = false;
      for (std::size_t p = 0; p < k; ++p) {
        const std::size_t i = r * k + p;
        const double bound = scale[r] * (0.5 + 128 * u);
        CHECK(std::fabs(double{w[i]} - double{scale[r]} * q[i]) <= bound);
        CHECK(back[i] == scale[r] * static_cast<float>(q[i]));
        CHECK(int{a.value(r, p)} == int{q[i]});  // the same rule for activations and weights
        hit_max |= std::abs(int{q[i]}) == 127;
      }
      CHECK(hit_max);
      for (std::size_t p = k; p < a.k_padded; ++p) CHECK(int{a.biased[r * a.k_padded + p]} == 128);
    }
  }
}

TEST_CASE("int8 quantization of a NaN or an infinity throws", "[quantize_kernels]") {
  // Non-finite values anywhere in a row, including past the last full vector of a row.
  const std::size_t rows = 3, k = 37;
  for (float bad : {std::nanf(""), -std::nanf(""), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()})
    for (std::size_t at : {std::size_t{0}, k + 5, 3 * k - 1}) {
      auto w = random_vector(rows * k, 7);
      w[at] = bad;
      std::vector<std::int8_t> q(w.size());
      std::vector<float> scale(rows);
      CHECK_THROWS_AS(cpu::quantize_rows_int8(w.data(), q.data(), scale.data(), rows, k),
                      std::invalid_argument);
      cpu::QuantizedActivations a(rows, k);
      CHECK_THROWS_AS(cpu::quantize_activations_dynamic(w.data(), a), std::invalid_argument);
      CHECK_THROWS_AS(cpu::quantize_activations_static(w.data(), 0.01f, a), std::invalid_argument);
    }
  // Large inputs take the parallel path, which must report it too.
  auto big = random_vector(300 * 512, 8);
  big[299 * 512 + 511] = std::nanf("");
  std::vector<std::int8_t> q(big.size());
  std::vector<float> scale(300);
  CHECK_THROWS_WITH(cpu::quantize_rows_int8(big.data(), q.data(), scale.data(), 300, 512),
                    Catch::Contains("row 299"));
}

// ---- the CUDA quantizers and quantized GEMMs

namespace {

constexpr float quiet_nan = std::numeric_limits<float>::quiet_NaN();

// ---- e4m3 on the host: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; 0x7f/0xff NaN.

float e4m3_value(std::uint8_t bits) {
  const int exponent = (bits >> 3) & 15, mantissa = bits & 7;
  if (exponent == 15 && mantissa == 7) return quiet_nan;
  // Subnormal: m·2^-9; normal: (1 + m/8)·2^(e − 7) = (8 + m)·2^(e − 10).
  const float magnitude = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                        : std::ldexp(static_cast<float>(8 + mantissa), exponent - 10);
  return (bits & 0x80) ? -magnitude : magnitude;
}

// Round to nearest even, saturate to ±448 (no infinity in e4m3), NaN to NaN.
std::uint8_t e4m3_bits(float f) {
  const std::uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (std::isnan(f)) return sign | 0x7f;
  const double a = std::fabs(static_cast<double>(f));
  // From 448 up everything rounds to 448 or beyond it: 464 is the tie between 448 (mantissa 6,
  // even) and 480, which does not exist.
  if (a >= 448.0) return sign | 0x7e;
  if (a < 1.0 / 64) return static_cast<std::uint8_t>(sign | static_cast<int>(std::nearbyint(a * 512.0)));  // units of 2^-9
  int e = 0;
  std::frexp(a, &e);  // a in [2^(e−1), 2^e)
  const int exponent = e - 1;  // -6..8
  // Units of 2^(exponent − 3), 8..16; 16 carries into the next exponent by itself.
  const int units = static_cast<int>(std::nearbyint(std::ldexp(a, 3 - exponent)));
  return static_cast<std::uint8_t>(sign | ((exponent + 7) * 8 + units - 8));
}


// Values that try e4m3's rounding: every e4m3 value, its float neighbours, the exact ties between
// neighbours and theirs, saturation, non-finite values and signed zeros, then fresh random values
// over 34 binades (2^-22 to 2^12: subnormals, normals and past 448).
std::vector<float> e4m3_cases(std::uint64_t seed) {
  constexpr float infinity = std::numeric_limits<float>::infinity();
  std::vector<float> values;
  for (int b = 0; b < 256; ++b) {
    const float v = e4m3_value(static_cast<std::uint8_t>(b));
    if (std::isnan(v)) continue;
    values.push_back(v);
    values.push_back(std::nextafter(v, infinity));
    values.push_back(std::nextafter(v, -infinity));
    const float next = e4m3_value(static_cast<std::uint8_t>(b + 1));
    if ((b & 0x7f) < 0x7e && !std::isnan(next)) {
      const float mid = 0.5f * (v + next);  // exact: e4m3 neighbours differ in few bits
      values.insert(values.end(), {mid, std::nextafter(mid, infinity), std::nextafter(mid, -infinity)});
    }
  }
  rng::Stream s(seed);
  for (int i = 0; i < 100000; ++i)
    values.push_back(std::ldexp(s.uniform(-1.0f, 1.0f), static_cast<int>(s.next_bits() % 34) - 22));
  values.insert(values.end(), {464.0f, 460.0f, 470.0f, infinity, -infinity, quiet_nan, 0.0f, -0.0f});
  return values;
}

// `count` values uniform in [−3, 3), every third scaled down by up to 2^-15: a wide range of
// magnitudes, so that the tensor's e4m3 values include subnormals.
std::vector<float> wide_range_vector(std::size_t count, std::uint64_t seed) {
  auto x = random_vector(count, seed, -3.0f, 3.0f);
  rng::Stream s(seed + 1);
  for (std::size_t i = 0; i < count; i += 3) x[i] = std::ldexp(x[i], -static_cast<int>(s.next_bits() % 16));
  return x;
}

// ---- int8 as kernels/cuda/quantize.hpp describes it, written plainly: the device's rule

std::int8_t to_int8(float x, float s) {
  const float v = std::nearbyint(x / s);
  return std::isnan(v) ? std::int8_t{0} : static_cast<std::int8_t>(std::clamp(v, -127.0f, 127.0f));
}

// The maximum of |x| over bit patterns, so that a NaN wins, as the kernels take it.
float max_magnitude(const float* x, std::size_t n) {
  std::uint32_t bits = 0;
  for (std::size_t i = 0; i < n; ++i) bits = std::max(bits, std::bit_cast<std::uint32_t>(std::fabs(x[i])));
  return std::bit_cast<float>(bits);
}

// x: (rows, cols) -> q: (rows, cols), scale: (rows).
void quantize_int8_rows_reference(const std::vector<float>& x, std::vector<std::int8_t>& q, std::vector<float>& scale,
                                  std::size_t rows, std::size_t cols) {
  q.assign(rows * cols, 0);
  scale.assign(rows, 0.0f);
  for (std::size_t r = 0; r < rows; ++r) {
    const float s = max_magnitude(x.data() + r * cols, cols) / 127.0f;
    scale[r] = s;
    if (s > 0.0f && std::isfinite(s))
      for (std::size_t c = 0; c < cols; ++c) q[r * cols + c] = to_int8(x[r * cols + c], s);
  }
}

}  // namespace

// ---- shape checks: host functions, no device needed

TEST_CASE("cuda gemm_int8 shape checks name the bad value and the rule", "[quantize_kernels]") {
  alignas(16) static std::byte storage[64];
  const void* a = storage;
  const void* off = storage + 4;
  CHECK_NOTHROW(gpu::validate_gemm_int8(1, 4, 4, a, a, a));
  CHECK_NOTHROW(gpu::validate_gemm_int8(3, 768, 3072, a, a, a));
  CHECK_THROWS_AS(gpu::validate_gemm_int8(1, 4, 6, a, a, a), std::invalid_argument);
  CHECK_THROWS_WITH(gpu::validate_gemm_int8(1, 4, 6, a, a, a), Contains("k = 6") && Contains("multiple of 4"));
  CHECK_THROWS_WITH(gpu::validate_gemm_int8(1, 10, 8, a, a, a), Contains("n = 10") && Contains("multiple of 4"));
  CHECK_THROWS_WITH(gpu::validate_gemm_int8(1, 0, 8, a, a, a), Contains("n = 0"));
  CHECK_THROWS_WITH(gpu::validate_gemm_int8(0, 4, 8, a, a, a), Contains("m = 0"));
  CHECK_THROWS_WITH(gpu::validate_gemm_int8(1, 4, 4 * 40000, a, a, a), Contains("overflow"));
  CHECK_NOTHROW(gpu::validate_gemm_int8(1, 4, gpu::gemm_int8_max_k / 4 * 4, a, a, a));
  CHECK_THROWS_WITH(gpu::validate_gemm_int8(1, 4, 4, off, a, a), Contains("x is not 16-byte aligned"));
  CHECK_THROWS_WITH(gpu::validate_gemm_int8(1, 4, 4, a, off, a), Contains("w is not 16-byte aligned"));
  CHECK_THROWS_WITH(gpu::validate_gemm_int8(1, 4, 4, a, a, off), Contains("y is not 16-byte aligned"));
}

TEST_CASE("cuda gemm_fp8 shape checks name the bad value and the rule", "[quantize_kernels]") {
  alignas(16) static std::byte storage[64];
  const void* a = storage;
  const void* off = storage + 8;
  CHECK_NOTHROW(gpu::validate_gemm_fp8(1, 16, 16, DType::f32, a, a, a));
  CHECK_NOTHROW(gpu::validate_gemm_fp8(7, 768, 768, DType::bf16, a, a, a));
  CHECK_THROWS_AS(gpu::validate_gemm_fp8(1, 16, 24, DType::f32, a, a, a), std::invalid_argument);
  CHECK_THROWS_WITH(gpu::validate_gemm_fp8(1, 16, 24, DType::f32, a, a, a), Contains("k = 24") && Contains("16"));
  CHECK_THROWS_WITH(gpu::validate_gemm_fp8(1, 40, 16, DType::f32, a, a, a), Contains("n = 40") && Contains("16"));
  CHECK_THROWS_WITH(gpu::validate_gemm_fp8(0, 16, 16, DType::f32, a, a, a), Contains("m = 0"));
  CHECK_THROWS_WITH(gpu::validate_gemm_fp8(1, 16, 16, DType::f16, a, a, a), Contains("f16") && Contains("f32, bf16"));
  CHECK_THROWS_WITH(gpu::validate_gemm_fp8(1, 16, 16, DType::f32, off, a, a), Contains("x is not 16-byte aligned"));
  CHECK_THROWS_WITH(gpu::validate_gemm_fp8(1, 16, 16, DType::bf16, a, a, off), Contains("y is not 16-byte aligned"));
}

TEST_CASE("the test's e4m3 rounding rounds to nearest even and saturates", "[quantize_kernels]") {
  CHECK(e4m3_bits(1.0f) == 0x38);
  CHECK(e4m3_bits(448.0f) == 0x7e);
  CHECK(e4m3_bits(1000.0f) == 0x7e);
  CHECK(e4m3_bits(-1000.0f) == 0xfe);
  CHECK(e4m3_bits(1.0625f) == 0x38);  // tie between 1 and 1.125: even mantissa 0
  CHECK(e4m3_bits(1.1875f) == 0x3a);  // tie between 1.125 and 1.25: even mantissa 2
  CHECK(e4m3_bits(std::ldexp(1.0f, -10)) == 0x00);      // half the smallest subnormal: to even 0
  CHECK(e4m3_bits(std::ldexp(3.0f, -10)) == 0x02);      // tie between 2^-9 and 2^-8
  CHECK(e4m3_bits(std::ldexp(15.5f, -10)) == 0x08);     // rounds up into the smallest normal 2^-6
  CHECK(e4m3_bits(-0.0f) == 0x80);
  CHECK(std::isnan(e4m3_value(e4m3_bits(quiet_nan))));
  for (int b = 0; b < 256; ++b) {
    const auto bits = static_cast<std::uint8_t>(b);
    if (!std::isnan(e4m3_value(bits))) CHECK(e4m3_bits(e4m3_value(bits)) == bits);  // every value round-trips
  }
}

// ---- the host quantizers the CUDA runs store their weights with: the device's bits

TEST_CASE("the host e4m3 conversion rounds as the reference on ties and fresh random values", "[quantize_kernels]") {
  std::size_t mismatches = 0;
  for (float v : e4m3_cases(78)) {
    const std::uint8_t got = cpu::to_e4m3(v), want = e4m3_bits(v);
    if (got != want && ++mismatches <= 5) std::printf("e4m3 of %a: host 0x%02x, reference 0x%02x\n", v, got, want);
  }
  CHECK(mismatches == 0);
  CHECK(cpu::to_e4m3(-0.0f) == 0x80);
  CHECK(cpu::to_e4m3(std::numeric_limits<float>::infinity()) == 0x7e);  // satfinite
  CHECK(cpu::to_e4m3(-quiet_nan) == 0xff);
}

TEST_CASE("the host e4m3 quantizer takes max|x| / 448 and rounds x / s as the device does", "[quantize_kernels]") {
  for (const std::size_t count : {std::size_t{1}, std::size_t{17}, std::size_t{100003}}) {
    INFO("count=" << count);
    const auto x = wide_range_vector(count, 51 + count);
    std::vector<std::uint8_t> q(count, 0x55);
    const float scale = cpu::quantize_e4m3(x.data(), q.data(), count);
    const float want_scale = max_magnitude(x.data(), count) / 448.0f;
    CHECK(scale == want_scale);
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < count; ++i) mismatches += q[i] != e4m3_bits(x[i] / want_scale);
    CHECK(mismatches == 0);
    // The largest |x| lands on ±448 (0x7e / 0xfe): the scale is what makes that so.
    const auto largest = std::max_element(x.begin(), x.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); });
    CHECK((q[static_cast<std::size_t>(largest - x.begin())] & 0x7f) == 0x7e);
  }
  SECTION("an all-zero tensor gets scale 0 and zeros; a NaN or an infinity throws") {
    std::vector<float> zeros(5, 0.0f);
    zeros[2] = -0.0f;
    std::vector<std::uint8_t> q(5, 0x55);
    CHECK(cpu::quantize_e4m3(zeros.data(), q.data(), q.size()) == 0.0f);
    CHECK(q == std::vector<std::uint8_t>(5, 0));
    for (float bad : {quiet_nan, std::numeric_limits<float>::infinity()}) {
      std::vector<float> x = {1.0f, 2.0f, bad, 3.0f};
      CHECK_THROWS_WITH(cpu::quantize_e4m3(x.data(), q.data(), x.size()), Contains("element 2"));
    }
  }
}

TEST_CASE("the host int8 row quantizer gives the device rule's bits on finite rows", "[quantize_kernels]") {
  // The device's rule (kernels/cuda/quantize.hpp) written plainly, against kernels/cpu's
  // quantize_rows_int8 that the CUDA runs store their int8 weights with: both divide in fp32 and
  // round to nearest even, so every bit must agree, exact ties and zero rows included.
  const std::size_t shapes[][2] = {{1, 1}, {5, 6}, {7, 33}, {64, 768}, {9, 1000}};
  for (const auto& [rows, cols] : shapes) {
    INFO("rows=" << rows << " cols=" << cols);
    auto x = random_vector(rows * cols, 61 + cols, -3.0f, 3.0f);
    if (rows >= 3 && cols >= 6) {
      std::fill(x.begin() + static_cast<std::ptrdiff_t>(cols), x.begin() + static_cast<std::ptrdiff_t>(2 * cols), 0.0f);
      const float ties[] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -2.5f};  // scale 1: q = 127, 0, 2, 2, 0, -2
      std::copy(std::begin(ties), std::end(ties), x.begin() + static_cast<std::ptrdiff_t>(2 * cols));
      std::fill(x.begin() + static_cast<std::ptrdiff_t>(2 * cols + 6), x.begin() + static_cast<std::ptrdiff_t>(3 * cols),
                0.25f);
    }
    std::vector<std::int8_t> want_q, q(rows * cols);
    std::vector<float> want_s, scale(rows);
    quantize_int8_rows_reference(x, want_q, want_s, rows, cols);
    cpu::quantize_rows_int8(x.data(), q.data(), scale.data(), rows, cols);
    CHECK(q == want_q);
    CHECK(scale == want_s);
  }
}

#ifdef AIOPT_HAVE_CUDA

using aiopt::test::download, aiopt::test::upload;

namespace {

constexpr float infinity = std::numeric_limits<float>::infinity();

bool same_e4m3(std::uint8_t a, std::uint8_t b) {
  return a == b || (std::isnan(e4m3_value(a)) && std::isnan(e4m3_value(b)));
}

// A device buffer of `n` elements filled with `value`: outputs start as garbage that must go.
template <class T>
memory::Buffer<T> filled(std::size_t n, T value) {
  return upload(std::vector<T>(n, value));
}

bool same_float(float a, float b) { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b) ||
                                           (std::isnan(a) && std::isnan(b)); }

// Rows that stress the int8 rules: exact ties at scale 1 (max 127), zeros, non-finite values.
std::vector<float> int8_rows(std::size_t rows, std::size_t cols, std::uint64_t seed) {
  auto x = random_vector(rows * cols, seed, -3.0f, 3.0f);
  const auto row = [&](std::size_t r) { return x.begin() + static_cast<std::ptrdiff_t>(r * cols); };
  if (rows >= 5 && cols >= 6) {
    std::fill(row(1), row(2), 0.0f);                                    // all zero: scale 0
    const float ties[] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -2.5f};       // scale 1: q = 127, 0, 2, 2, 0, -2
    std::copy(std::begin(ties), std::end(ties), row(2));
    x[3 * cols + 1] = quiet_nan;                                         // scale NaN, q all 0
    x[4 * cols + 2] = -infinity;                                         // scale inf, q all 0
  }
  return x;
}

bool fp8_capable() {
  const auto devices = aiopt::cuda::devices();
  return !devices.empty() && (devices[0].sm_major > 8 || (devices[0].sm_major == 8 && devices[0].sm_minor >= 9));
}

}  // namespace

TEST_CASE("the test's e4m3 rounding agrees with cuda_fp8.h's host conversion", "[quantize_kernels]") {
  // cuda_fp8.h's conversion is host-callable; on sm_89+ the device uses cvt.rn.satfinite, whose
  // results the GPU cases compare against this same reference.
  const std::vector<float> values = e4m3_cases(77);
  std::size_t mismatches = 0;
  for (float v : values) {
    const auto nv = static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
    if (!same_e4m3(nv, e4m3_bits(v))) {
      if (++mismatches <= 5) std::printf("e4m3 of %a: cuda_fp8.h 0x%02x, reference 0x%02x\n", v, nv, e4m3_bits(v));
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("without a usable GPU the cuBLASLt GEMMs throw DeviceUnavailable", "[quantize_kernels]") {
  // Only where no device is usable: elsewhere these fake pointers would reach a real GEMM.
  if (aiopt::cuda::unavailable_reason().empty()) return;
  alignas(16) static std::byte storage[64];
  const auto* p = reinterpret_cast<const std::int8_t*>(storage);
  auto* y = reinterpret_cast<std::int32_t*>(storage);
  CHECK_THROWS_AS(gpu::gemm_int8(p, p, y, 1, 4, 4, nullptr), DeviceUnavailable);
  const auto* q = reinterpret_cast<const std::uint8_t*>(storage);
  const auto* scale = reinterpret_cast<const float*>(storage);
  CHECK_THROWS_AS(gpu::gemm_fp8(q, scale, q, scale, storage, DType::f32, 1, 16, 16, nullptr), DeviceUnavailable);
}

TEST_CASE("cuda quantize_int8_rows matches the CPU bit for bit", "[quantize_kernels][gpu]") {
  const std::size_t shapes[][2] = {{1, 1}, {5, 6}, {7, 33}, {64, 768}, {9, 1000}, {3, 3072}};
  for (const auto& [rows, cols] : shapes) {
    INFO("rows=" << rows << " cols=" << cols);
    const auto x = int8_rows(rows, cols, 11 + cols);
    std::vector<std::int8_t> want_q;
    std::vector<float> want_s;
    quantize_int8_rows_reference(x, want_q, want_s, rows, cols);
    auto dx = upload(x);
    auto dq = filled<std::int8_t>(rows * cols, 99);
    auto ds = filled<float>(rows, quiet_nan);
    gpu::quantize_int8_rows(dx.data(), dq.data(), ds.data(), rows, cols, nullptr);
    const auto q = download(dq);
    const auto s = download(ds);
    CHECK(q == want_q);
    std::size_t scale_mismatches = 0;
    for (std::size_t r = 0; r < rows; ++r) scale_mismatches += !same_float(s[r], want_s[r]);
    CHECK(scale_mismatches == 0);
    if (rows >= 5 && cols >= 6) {
      CHECK(s[1] == 0.0f);
      CHECK(s[2] == 1.0f);
      CHECK(std::vector<int>(q.begin() + static_cast<std::ptrdiff_t>(2 * cols),
                             q.begin() + static_cast<std::ptrdiff_t>(2 * cols + 6)) ==
            std::vector<int>{127, 0, 2, 2, 0, -2});
      CHECK(std::isnan(s[3]));
      CHECK(s[4] == infinity);
    }
  }
}

TEST_CASE("cuda quantize_int8_static matches the CPU bit for bit", "[quantize_kernels][gpu]") {
  auto x = random_vector(10007, 21, -2.0f, 2.0f);
  const float scale = 0.0125f;  // 2 / 0.0125 = 160: the tails saturate at ±127
  const float crafted[] = {0.5f * scale, 1.5f * scale, -2.5f * scale, infinity, -infinity, quiet_nan, 0.0f};
  std::copy(std::begin(crafted), std::end(crafted), x.begin());
  std::vector<std::int8_t> want(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) want[i] = to_int8(x[i], scale);
  auto dx = upload(x);
  auto dscale = upload(std::vector<float>{scale});
  auto dq = filled<std::int8_t>(x.size(), 99);
  gpu::quantize_int8_static(dx.data(), dscale.data(), dq.data(), x.size(), nullptr);
  const auto q = download(dq);
  CHECK(q == want);
  CHECK(std::vector<int>(q.begin(), q.begin() + 7) == std::vector<int>{0, 2, -2, 127, -127, 0, 0});
}

TEST_CASE("cuda dequantize_int32 matches the CPU bit for bit", "[quantize_kernels][gpu]") {
  const std::size_t m = 13, n = 100;
  rng::Stream s(31);
  std::vector<std::int32_t> acc(m * n);
  // Up to ±2^28: past 2^24 the int32 -> float conversion rounds, on both sides to nearest even.
  for (auto& a : acc) a = static_cast<std::int32_t>(s.next_bits() % (1u << 29)) - (1 << 28);
  const auto x_scale = random_vector(m, 32, 0.001f, 0.1f);
  const auto w_scale = random_vector(n, 33, 0.001f, 0.1f);
  const auto bias = random_vector(n, 34);
  auto dacc = upload(acc);
  auto dxs = upload(x_scale), dws = upload(w_scale), db = upload(bias);
  for (bool per_row : {true, false})
    for (bool with_bias : {false, true}) {
      INFO((per_row ? "per-row" : "per-tensor") << " x scale, " << (with_bias ? "with" : "without") << " bias");
      auto dy = filled<float>(m * n, quiet_nan);
      gpu::dequantize_int32(dacc.data(), dxs.data(), per_row, dws.data(), with_bias ? db.data() : nullptr, dy.data(),
                            m, n, nullptr);
      const auto y = download(dy);
      std::size_t mismatches = 0;
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) {
          const float sx = per_row ? x_scale[i] : x_scale[0];
          const float want = std::fma(static_cast<float>(acc[i * n + j]), sx * w_scale[j], with_bias ? bias[j] : 0.0f);
          mismatches += !(y[i * n + j] == want);
        }
      CHECK(mismatches == 0);
    }
}

TEST_CASE("cuda quantize_fp8_e4m3 matches the CPU bit for bit, scale included", "[quantize_kernels][gpu]") {
  for (const std::size_t count : {std::size_t{1}, std::size_t{17}, std::size_t{100003}}) {
    INFO("count=" << count);
    const auto x = wide_range_vector(count, 41 + count);
    const float want_scale = max_magnitude(x.data(), count) / 448.0f;
    auto dx = upload(x);
    auto dq = filled<std::uint8_t>(count, 0x55);
    auto dscale = filled<float>(1, quiet_nan);
    gpu::quantize_fp8_e4m3(dx.data(), dq.data(), dscale.data(), count, nullptr);
    const auto q = download(dq);
    const float scale = download(dscale)[0];
    CHECK(same_float(scale, want_scale));
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < count; ++i) mismatches += !same_e4m3(q[i], e4m3_bits(x[i] / want_scale));
    CHECK(mismatches == 0);
    // The host quantizer the CUDA runs store their fp8 weights with: the same bits.
    std::vector<std::uint8_t> host_q(count);
    CHECK(cpu::quantize_e4m3(x.data(), host_q.data(), count) == scale);
    CHECK(host_q == q);
  }
  SECTION("a NaN makes the dynamic scale NaN; an all-zero tensor gets scale 0 and zeros") {
    auto dx = upload(std::vector<float>{1.0f, quiet_nan, -2.0f});
    auto dq = filled<std::uint8_t>(3, 0x55);
    auto dscale = filled<float>(1, 1.0f);
    gpu::quantize_fp8_e4m3(dx.data(), dq.data(), dscale.data(), 3, nullptr);
    CHECK(std::isnan(download(dscale)[0]));
    auto dz = upload(std::vector<float>(5, 0.0f));
    auto dqz = filled<std::uint8_t>(5, 0x55);
    gpu::quantize_fp8_e4m3(dz.data(), dqz.data(), dscale.data(), 5, nullptr);
    CHECK(download(dscale)[0] == 0.0f);
    CHECK(download(dqz) == std::vector<std::uint8_t>(5, 0));
  }
  SECTION("static scale: ties to even, saturation, NaN") {
    const float scale = 0.5f;
    std::vector<float> x = {1.0625f * scale, 1.1875f * scale, std::ldexp(3.0f, -10) * scale, 464.0f * scale,
                            -1000.0f,        quiet_nan,       -0.0f,                        std::ldexp(1.0f, -10) * scale};
    auto more = random_vector(4099, 47, -300.0f, 300.0f);  // |x/s| up to 600: past 448 saturates
    x.insert(x.end(), more.begin(), more.end());
    auto dx = upload(x);
    auto ds = upload(std::vector<float>{scale});
    auto dq = filled<std::uint8_t>(x.size(), 0x55);
    gpu::quantize_fp8_e4m3_static(dx.data(), ds.data(), dq.data(), x.size(), nullptr);
    const auto q = download(dq);
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < x.size(); ++i) mismatches += !same_e4m3(q[i], e4m3_bits(x[i] / scale));
    CHECK(mismatches == 0);
    CHECK(q[0] == 0x38);
    CHECK(q[1] == 0x3a);
    CHECK(q[2] == 0x02);
    CHECK(q[3] == 0x7e);
    CHECK(q[4] == 0xfe);
    CHECK(std::isnan(e4m3_value(q[5])));
  }
}

TEST_CASE("cuda gemm_int8 equals exact integer sums", "[quantize_kernels][gpu]") {
  // (m, n, k): one row (decode), odd m, the smallest legal n and k, and model-sized products.
  const std::size_t shapes[][3] = {{1, 4, 4}, {3, 12, 20}, {17, 100, 36}, {1, 768, 768}, {64, 768, 768}, {33, 1028, 3072}};
  for (const auto& [m, n, k] : shapes) {
    INFO("m=" << m << " n=" << n << " k=" << k);
    rng::Stream s(51 + k);
    std::vector<std::int8_t> x(m * k), w(n * k);
    // The full int8 range, −128 included: the GEMM does not rely on the quantizers' ±127.
    for (auto& v : x) v = static_cast<std::int8_t>(static_cast<int>(s.next_bits() % 256) - 128);
    for (auto& v : w) v = static_cast<std::int8_t>(static_cast<int>(s.next_bits() % 256) - 128);
    std::vector<std::int32_t> want(m * n);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j) {
        std::int64_t sum = 0;
        for (std::size_t p = 0; p < k; ++p) sum += std::int64_t{x[i * k + p]} * w[j * k + p];
        want[i * n + j] = static_cast<std::int32_t>(sum);
      }
    auto dx = upload(x), dw = upload(w);
    auto dy = filled<std::int32_t>(m * n, std::numeric_limits<std::int32_t>::min());
    gpu::gemm_int8(dx.data(), dw.data(), dy.data(), m, n, k, nullptr);
    CHECK(download(dy) == want);
  }
}

TEST_CASE("cuda int8 path: quantize, gemm_int8, dequantize stays within the quantization bound", "[quantize_kernels][gpu]") {
  const std::size_t m = 5, n = 96, k = 256;
  const auto x = random_vector(m * k, 61);
  const auto w = random_vector(n * k, 62, -0.2f, 0.2f);
  const auto b = random_vector(n, 63);
  auto dx = upload(x), dw = upload(w), db = upload(b);
  memory::Buffer<std::int8_t> qx(Device::cuda(), m * k), qw(Device::cuda(), n * k);
  memory::Buffer<float> sx(Device::cuda(), m), sw(Device::cuda(), n);
  memory::Buffer<std::int32_t> acc(Device::cuda(), m * n);
  auto dy = filled<float>(m * n, quiet_nan);
  gpu::quantize_int8_rows(dx.data(), qx.data(), sx.data(), m, k, nullptr);
  gpu::quantize_int8_rows(dw.data(), qw.data(), sw.data(), n, k, nullptr);
  gpu::gemm_int8(qx.data(), qw.data(), acc.data(), m, n, k, nullptr);
  gpu::dequantize_int32(acc.data(), sx.data(), true, sw.data(), db.data(), dy.data(), m, n, nullptr);
  const auto y = download(dy);
  const auto hsx = download(sx), hsw = download(sw);
  double worst = 0.0;
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double exact = b[j], bound = 0.0;
      for (std::size_t p = 0; p < k; ++p) {
        exact += static_cast<double>(x[i * k + p]) * w[j * k + p];
        bound += std::fabs(x[i * k + p]) * hsw[j] / 2 + (std::fabs(w[j * k + p]) + hsw[j] / 2) * hsx[i] / 2;
      }
      bound += 4 * u * (std::fabs(exact) + bound + std::fabs(b[j]));
      const double e = std::fabs(y[i * n + j] - exact);
      worst = std::max(worst, std::isnan(e) ? std::numeric_limits<double>::infinity() : e / bound);
    }
  CHECK(worst <= 1.0);
}

TEST_CASE("cuda gemm_fp8 matches a CPU product of the same e4m3 values", "[quantize_kernels][gpu]") {
  if (!fp8_capable()) {
    WARN("fp8 GEMM not run: the device is below compute capability 8.9");
    return;
  }
  const std::size_t shapes[][3] = {{1, 16, 16}, {3, 48, 80}, {17, 256, 512}, {64, 768, 768}};
  double worst_seen = 0.0;
  for (const auto& [m, n, k] : shapes)
    for (const DType out : {DType::f32, DType::bf16}) {
      INFO("m=" << m << " n=" << n << " k=" << k << " out=" << to_string(out));
      const auto x = random_vector(m * k, 71 + k);
      const auto w = random_vector(n * k, 72 + k, -0.1f, 0.1f);
      auto dx = upload(x), dw = upload(w);
      memory::Buffer<std::uint8_t> qx(Device::cuda(), m * k), qw(Device::cuda(), n * k);
      memory::Buffer<float> sx(Device::cuda(), 1), sw(Device::cuda(), 1);
      gpu::quantize_fp8_e4m3(dx.data(), qx.data(), sx.data(), m * k, nullptr);
      gpu::quantize_fp8_e4m3(dw.data(), qw.data(), sw.data(), n * k, nullptr);
      const std::size_t element = out == DType::f32 ? 4 : 2;
      memory::Buffer<std::uint8_t> dy(Device::cuda(), m * n * element);
      CUDA_CHECK(cudaMemset(dy.data(), 0xff, dy.size()));  // NaN in f32 and bf16 alike
      gpu::gemm_fp8(qx.data(), sx.data(), qw.data(), sw.data(), dy.data(), out, m, n, k, nullptr);
      const auto raw = download(dy);
      const auto hx = download(qx), hw = download(qw);
      const double scale_x = download(sx)[0], scale_w = download(sw)[0];
      double worst = 0.0, worst_unquantized = 0.0;
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) {
          double ref = 0.0, magnitude = 0.0, exact = 0.0, quantization = 0.0;
          for (std::size_t p = 0; p < k; ++p) {
            const double a = e4m3_value(hx[i * k + p]), c = e4m3_value(hw[j * k + p]);
            ref += a * c;
            magnitude += std::fabs(a * c);
            exact += static_cast<double>(x[i * k + p]) * w[j * k + p];
            const double ex = std::ldexp(std::fabs(x[i * k + p]), -4) + std::ldexp(scale_x, -10);
            const double ew = std::ldexp(std::fabs(w[j * k + p]), -4) + std::ldexp(scale_w, -10);
            quantization += ex * std::fabs(scale_w * c) + std::fabs(x[i * k + p]) * ew;
          }
          ref *= scale_x * scale_w;
          const double s = scale_x * scale_w * magnitude;
          const std::size_t ij = i * n + j;
          float got = 0.0f;
          if (out == DType::f32) {
            std::uint32_t bits = 0;
            for (int b = 0; b < 4; ++b) bits |= std::uint32_t{raw[ij * 4 + b]} << (8 * b);
            got = std::bit_cast<float>(bits);
          } else {
            got = bf16_to_float(static_cast<std::uint16_t>(raw[ij * 2] | (raw[ij * 2 + 1] << 8)));
          }
          const double bound = (static_cast<double>(k) + 5) * std::ldexp(1.0, -13) * s +
                               (out == DType::bf16 ? std::ldexp(std::fabs(ref), -8) : 0.0) + 1e-30;
          const double e = std::fabs(got - ref);
          worst = std::max(worst, std::isnan(e) ? std::numeric_limits<double>::infinity() : e / bound);
          const double e2 = std::fabs(got - exact);
          worst_unquantized = std::max(worst_unquantized, std::isnan(e2) ? std::numeric_limits<double>::infinity()
                                                                         : e2 / (quantization + bound));
        }
      CHECK(worst <= 1.0);
      CHECK(worst_unquantized <= 1.0);
      worst_seen = std::max(worst_seen, worst);
    }
  WARN("gemm_fp8: worst |got - ref| / bound over all shapes = " << worst_seen);
}

#endif  // AIOPT_HAVE_CUDA
