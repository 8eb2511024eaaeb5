#pragma once
// GELU (tanh form) and the vectorizable exp and tanh it is built on. std::exp and std::tanh are
// library calls that GCC does not vectorize, so the fast paths use the inline polynomials below,
// which a `#pragma omp simd` loop turns into AVX-512/AVX2 code; the unfused and the fused chains
// both call them, so they compute the same math and differ only in memory traffic.
#include <bit>
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/bf16.hpp"

namespace aiopt::kernels::cpu {

// e^x for x <= 88 (e^88 is near FLT_MAX); 0 below -87.3, where e^x leaves the normal range,
// and for -inf (masked softmax scores). Cephes expf: x = n·ln2 + r with |r| <= ln2/2, e^r by a
// degree-7 polynomial, 2^n written into the exponent bits. Max relative error about 2e-7.
inline float exp_poly(float x) {
  constexpr float lowest = -87.3f;
  constexpr float highest = 88.0f;
  const float xc = x < lowest ? lowest : (x > highest ? highest : x);
  // Round to nearest by adding and subtracting 1.5·2^23 (exact without -ffast-math).
  constexpr float round_magic = 12582912.0f;
  const float n = (xc * 1.44269504088896341f + round_magic) - round_magic;
  // ln2 split in a high part exact in float and a low correction (Cody–Waite reduction).
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const std::int32_t exponent = (static_cast<std::int32_t>(n) + 127) << 23;
  const float result = p * std::bit_cast<float>(exponent);
  return x < lowest ? 0.0f : result;
}

// tanh(u) = 1 − 2 / (e^{2u} + 1): exact limits ±1 for large |u|; absolute error about 2e-7.
inline float tanh_poly(float u) { return 1.0f - 2.0f / (exp_poly(2.0f * u) + 1.0f); }

// GELU, tanh approximation (Hendrycks & Gimpel 2016): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
inline float gelu_tanh(float x) {
  constexpr float sqrt_2_over_pi = 0.7978845608028654f;
  const float inner = sqrt_2_over_pi * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + tanh_poly(inner));
}

// y = gelu(x) over n elements; x, y: (n). The reference uses std::tanh, one element at a time.
void gelu_tanh_reference(const float* x, float* y, std::size_t n);
// SIMD + OpenMP, with tanh_poly; x, y stored as T = float or bf16, computed in fp32.
template <class T>
void gelu_tanh(const T* x, T* y, std::size_t n);

// dx = gelu'(x)·dy, written (dx may alias dy); x, dy, dx: (n). The reference uses std::tanh in double.
void gelu_tanh_backward(const float* x, const float* dy, float* dx, std::size_t n);
void gelu_tanh_backward_reference(const float* x, const float* dy, float* dx, std::size_t n);

}  // namespace aiopt::kernels::cpu
