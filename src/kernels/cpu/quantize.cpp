#include "kernels/cpu/quantize.hpp"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <stdexcept>
#include <string>

namespace aiopt::kernels::cpu {

namespace {

constexpr std::uint32_t abs_mask = 0x7fffffffu;
constexpr std::uint32_t infinity_bits = 0x7f800000u;
// Below this many values a quantization runs on one thread: a parallel region costs microseconds.
constexpr std::size_t parallel_min_values = std::size_t{1} << 16;

// The bit pattern of max|x| over n values. For non-negative floats the integer order of the bit
// patterns is the float order, and inf and NaN sort above every finite value, so one integer max
// both finds max|x| and detects a non-finite value (a float max would step over a NaN).
std::uint32_t max_abs_bits(const float* x, std::size_t n) {
  std::uint32_t m = 0;
#pragma omp simd reduction(max : m)
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::bit_cast<std::uint32_t>(x[i]) & abs_mask);
  return m;
}

[[noreturn]] void throw_non_finite(const char* routine, std::size_t row) {
  throw std::invalid_argument(std::string(routine) + ": row " + std::to_string(row) +
                              " holds a non-finite value (NaN or inf); only finite values can be quantized");
}

// round_even(v) saturated to [−127, 127], for v = x / s. Saturating first keeps |v| < 2^22, where
// adding and subtracting 1.5·2^23 rounds to the nearest integer, ties to even, in the default
// rounding mode; unlike std::nearbyint it vectorizes without -march flags.
inline float round_saturate(float v) {
  constexpr float round_magic = 12582912.0f;
  const float c = std::min(static_cast<float>(int8_max), std::max(-static_cast<float>(int8_max), v));
  return (c + round_magic) - round_magic;
}

// One row of n values with scale s (> 0) into int8.
void quantize_row(const float* x, float s, std::int8_t* q, std::size_t n) {
#pragma omp simd
  for (std::size_t i = 0; i < n; ++i) q[i] = static_cast<std::int8_t>(round_saturate(x[i] / s));
}

// One row of n values with scale s (>= 0; 0 gives q = 0) into the biased uint8 operand, padded
// with q = 0 up to n_padded.
void quantize_row_biased(const float* x, float s, std::uint8_t* q, std::size_t n, std::size_t n_padded) {
  if (s == 0.0f) {
    std::fill(q, q + n_padded, static_cast<std::uint8_t>(int8_activation_bias));
    return;
  }
#pragma omp simd
  for (std::size_t i = 0; i < n; ++i)
    q[i] = static_cast<std::uint8_t>(static_cast<int>(round_saturate(x[i] / s)) + int8_activation_bias);
  std::fill(q + n, q + n_padded, static_cast<std::uint8_t>(int8_activation_bias));
}

// The dynamic scale of a row from its max|x| bit pattern (finite), 0 for a zero row.
float row_scale(std::uint32_t max_bits) {
  return int8_scale(std::bit_cast<float>(max_bits));
}

bool parallel_worth(std::size_t values) {
  return values >= parallel_min_values && !omp_in_parallel();
}

}  // namespace

float int8_scale(float max_abs) {
  return max_abs / static_cast<float>(int8_max);
}

void quantize_rows_int8(const float* w, std::int8_t* q, float* scale, std::size_t rows, std::size_t cols) {
  // An exception may not leave a parallel region: the first bad row is noted and thrown after.
  std::size_t bad_row = rows;
#pragma omp parallel for schedule(static) reduction(min : bad_row) if (parallel_worth(rows * cols))
  for (std::size_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    const std::uint32_t bits = max_abs_bits(row, cols);
    if (bits >= infinity_bits) {
      bad_row = std::min(bad_row, r);
      continue;
    }
    const float s = row_scale(bits);
    scale[r] = s;
    if (s == 0.0f)
      std::fill(q + r * cols, q + (r + 1) * cols, std::int8_t{0});
    else
      quantize_row(row, s, q + r * cols, cols);
  }
  if (bad_row < rows) throw_non_finite("quantize_rows_int8", bad_row);
}

void dequantize_rows_int8(const std::int8_t* q, const float* scale, float* w, std::size_t rows,
                          std::size_t cols) {
#pragma omp parallel for schedule(static) if (parallel_worth(rows * cols))
  for (std::size_t r = 0; r < rows; ++r) {
    const float s = scale[r];
#pragma omp simd
    for (std::size_t i = 0; i < cols; ++i) w[r * cols + i] = s * static_cast<float>(q[r * cols + i]);
  }
}

QuantizedActivations::QuantizedActivations(std::size_t m_, std::size_t k_)
    : m(m_),
      k(k_),
      k_padded((k_ + 3) / 4 * 4),
      biased(Device::cpu(), m_ * ((k_ + 3) / 4 * 4)),
      scale(Device::cpu(), m_) {}

void quantize_activations_dynamic(const float* x, QuantizedActivations& out) {
  const std::size_t k = out.k;
  std::size_t bad_row = out.m;
#pragma omp parallel for schedule(static) reduction(min : bad_row) if (parallel_worth(out.m * k))
  for (std::size_t r = 0; r < out.m; ++r) {
    const std::uint32_t bits = max_abs_bits(x + r * k, k);
    if (bits >= infinity_bits) {
      bad_row = std::min(bad_row, r);
      continue;
    }
    const float s = row_scale(bits);
    out.scale[r] = s;
    quantize_row_biased(x + r * k, s, out.biased.data() + r * out.k_padded, k, out.k_padded);
  }
  if (bad_row < out.m) throw_non_finite("quantize_activations_dynamic", bad_row);
}

ClipCount quantize_activations_static(const float* x, float scale, QuantizedActivations& out) {
  if (!(scale > 0.0f) || !std::isfinite(scale))
    throw std::invalid_argument("quantize_activations_static: scale " + std::to_string(scale) +
                                " is not allowed; use a finite scale > 0");
  const std::size_t k = out.k;
  constexpr float clip_limit = int8_max + 0.5f;
  std::size_t bad_row = out.m;
  std::size_t clipped = 0;
#pragma omp parallel for schedule(static) reduction(min : bad_row) reduction(+ : clipped) \
    if (parallel_worth(out.m * k))
  for (std::size_t r = 0; r < out.m; ++r) {
    const float* row = x + r * k;
    if (max_abs_bits(row, k) >= infinity_bits) {
      bad_row = std::min(bad_row, r);
      continue;
    }
    out.scale[r] = scale;
    std::size_t row_clipped = 0;
#pragma omp simd reduction(+ : row_clipped)
    for (std::size_t i = 0; i < k; ++i) row_clipped += std::fabs(row[i] / scale) > clip_limit;
    clipped += row_clipped;
    quantize_row_biased(row, scale, out.biased.data() + r * out.k_padded, k, out.k_padded);
  }
  if (bad_row < out.m) throw_non_finite("quantize_activations_static", bad_row);
  return ClipCount{clipped, out.m * k};
}

std::uint8_t to_e4m3(float v) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(v);
  const auto sign = static_cast<std::uint8_t>((bits >> 24) & 0x80u);
  const std::uint32_t magnitude = bits & abs_mask;
  if (magnitude > infinity_bits) return sign | 0x7f;
  const float a = std::bit_cast<float>(magnitude);
  // From 448 up every value rounds to 448 or past it (464, the tie with the absent 480, rounds to
  // 448's even mantissa 6), and satfinite keeps 448.
  if (a >= e4m3_max) return sign | 0x7e;
  // a's binary exponent, but not below −6, e4m3's smallest normal one: there and below, the
  // values are the multiples of 2^-9 (subnormals). The e4m3 values next to a are then multiples
  // of 2^(exponent − 3); a in those units is exact (a power-of-two scaling), and rounding it to
  // the nearest even integer is e4m3's rounding. units ∈ [0, 16]: 8..15 are the mantissas 1.000
  // to 1.111 of that exponent, 16 carries into the next exponent, below 8 only at −6
  // (subnormals) — the code (exponent + 7)·8 + units − 8 covers all.
  const int exponent = std::max(-6, static_cast<int>(magnitude >> 23) - 127);
  const float units = std::nearbyint(std::ldexp(a, 3 - exponent));
  return sign | static_cast<std::uint8_t>((exponent + 6) * 8 + static_cast<int>(units));
}

float quantize_e4m3(const float* x, std::uint8_t* q, std::size_t count) {
  const std::uint32_t max_bits = max_abs_bits(x, count);
  if (max_bits >= infinity_bits) {
    std::size_t i = 0;
    while ((std::bit_cast<std::uint32_t>(x[i]) & abs_mask) < infinity_bits) ++i;
    throw std::invalid_argument("quantize_e4m3: element " + std::to_string(i) +
                                " is not finite (NaN or inf); only finite values can be quantized");
  }
  const float s = std::bit_cast<float>(max_bits) / e4m3_max;
  if (s == 0.0f) {
    std::fill(q, q + count, std::uint8_t{0});
    return s;
  }
#pragma omp parallel for schedule(static) if (parallel_worth(count))
  for (std::size_t i = 0; i < count; ++i) q[i] = to_e4m3(x[i] / s);
  return s;
}

}  // namespace aiopt::kernels::cpu
