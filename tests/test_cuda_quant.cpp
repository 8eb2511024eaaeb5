// The CUDA quantization kernels (TECHNIQUES.md §3): the activation quantizers and the int32
// dequantizer (kernels/cuda/quantize.hpp), the cuBLASLt int8 and fp8 GEMMs (gemm_lt.hpp) and the
// int4 weight-only GEMV (gemv_int4.hpp), each against a plain CPU reference written here. The
// shape checks are host functions and run without a GPU; the kernels run under [gpu].
//
// Tolerances:
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
//   gemv_int4: the reference sums the dequantized weights (fp16 scale × q, exact in fp32) times
//     x in double. The GPU's fp32 sum of k terms, in any order with fused multiply-adds, is
//     within γ_k·Σ|w·x| of exact (Higham 2002, §3.1): |got − ref| <= (k + 5)·2^-24·Σ_p|w_p·x_p|.
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
#include "kernels/cuda/gemm_lt.hpp"
#include "kernels/cuda/gemv_int4.hpp"
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
namespace gpu = aiopt::kernels::cuda;
using Catch::Contains;

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

// ---- int4 weights on the host: the format of kernels/cuda/gemv_int4.hpp

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

// ---- shape checks: host functions, no device needed

TEST_CASE("cuda gemm_int8 shape checks name the bad value and the rule", "[quantization]") {
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

TEST_CASE("cuda gemm_fp8 shape checks name the bad value and the rule", "[quantization]") {
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

TEST_CASE("cuda gemv_int4 shape checks name the bad value and the rule", "[quantization]") {
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

TEST_CASE("the test's int4 packing puts element 2i in the low nibble", "[quantization]") {
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

TEST_CASE("the test's e4m3 rounding rounds to nearest even and saturates", "[quantization]") {
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

#ifdef AIOPT_HAVE_CUDA

using aiopt::test::download;
using aiopt::test::upload;

namespace {

constexpr double u = 1.0 / 16777216.0;  // 2^-24: the unit roundoff of fp32
constexpr float infinity = std::numeric_limits<float>::infinity();

using aiopt::test::random_vector;

bool same_e4m3(std::uint8_t a, std::uint8_t b) {
  return a == b || (std::isnan(e4m3_value(a)) && std::isnan(e4m3_value(b)));
}

// ---- int8 on the host, as kernels/cuda/quantize.hpp describes it

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

TEST_CASE("the test's e4m3 rounding agrees with cuda_fp8.h's host conversion", "[quantization]") {
  // cuda_fp8.h's conversion is host-callable; on sm_89+ the device uses cvt.rn.satfinite, whose
  // results the GPU cases compare against this same reference.
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
  rng::Stream s(77);
  for (int i = 0; i < 100000; ++i)
    values.push_back(std::ldexp(s.uniform(-1.0f, 1.0f), static_cast<int>(s.next_bits() % 34) - 22));
  values.insert(values.end(), {464.0f, 460.0f, 470.0f, infinity, -infinity, quiet_nan, 0.0f, -0.0f});
  std::size_t mismatches = 0;
  for (float v : values) {
    const auto nv = static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
    if (!same_e4m3(nv, e4m3_bits(v))) {
      if (++mismatches <= 5) std::printf("e4m3 of %a: cuda_fp8.h 0x%02x, reference 0x%02x\n", v, nv, e4m3_bits(v));
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("without a usable GPU the cuBLASLt GEMMs throw DeviceUnavailable", "[quantization]") {
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

TEST_CASE("cuda quantize_int8_rows matches the CPU bit for bit", "[quantization][gpu]") {
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

TEST_CASE("cuda quantize_int8_static matches the CPU bit for bit", "[quantization][gpu]") {
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

TEST_CASE("cuda dequantize_int32 matches the CPU bit for bit", "[quantization][gpu]") {
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

TEST_CASE("cuda quantize_fp8_e4m3 matches the CPU bit for bit, scale included", "[quantization][gpu]") {
  for (const std::size_t count : {std::size_t{1}, std::size_t{17}, std::size_t{100003}}) {
    INFO("count=" << count);
    auto x = random_vector(count, 41 + count, -3.0f, 3.0f);
    // A wide range of magnitudes, so that subnormal e4m3 values occur.
    rng::Stream s(43);
    for (std::size_t i = 0; i < count; i += 3) x[i] = std::ldexp(x[i], -static_cast<int>(s.next_bits() % 16));
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

TEST_CASE("cuda gemm_int8 equals exact integer sums", "[quantization][gpu]") {
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

TEST_CASE("cuda int8 path: quantize, gemm_int8, dequantize stays within the quantization bound", "[quantization][gpu]") {
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

TEST_CASE("cuda gemm_fp8 matches a CPU product of the same e4m3 values", "[quantization][gpu]") {
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

TEST_CASE("cuda gemv_int4 matches the CPU on the dequantized weights", "[quantization][gpu]") {
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
    auto dy = filled<float>(sh.m * sh.n, quiet_nan);
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
