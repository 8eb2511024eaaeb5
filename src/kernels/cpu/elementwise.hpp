#pragma once
// The elementwise ops of the fusion chains, each one memory pass: bias add, dropout, residual
// add, scale. Each has a plain scalar reference beside the SIMD + OpenMP version. Tensors are
// row-major; shapes are given as comments, (rows, hidden). The references are fp32; the fast
// versions store tensors as T = float or bf16 (bf16.hpp) and compute in fp32, rounding once per
// stored element. Parameter vectors (b) are fp32 always.
#include <cstddef>
#include <cstdint>

#include "core/rng.hpp"
#include "kernels/cpu/bf16.hpp"

namespace aiopt::kernels::cpu {

// y = x + b, b broadcast over rows. x, y: (rows, hidden); b: (hidden).
void bias_add_reference(const float* x, const float* b, float* y, std::size_t rows, std::size_t hidden);
template <class T>
void bias_add(const T* x, const float* b, T* y, std::size_t rows, std::size_t hidden);

// Inverted dropout (Srivastava et al. 2014) with a counter-based mask: element i is kept iff
// rng::uniform(seed, i) >= p, and kept elements are scaled by 1/(1-p). The mask is a pure
// function of (seed, i), so every pass, chain and device drops the same elements.
struct Dropout {
  Dropout(float p, std::uint64_t seed);

  // uniform(seed, i) = k·2^-24 with k = bits(seed, i) >> 40, exactly, so uniform >= p holds iff
  // k >= ceil(p·2^24): an integer compare that vectorizes and needs no int-to-float conversion.
  bool keeps(std::uint64_t i) const { return (rng::bits(seed, i) >> 40) >= keep_threshold; }
  float apply(float v, std::uint64_t i) const { return keeps(i) ? v * scale : 0.0f; }

  float p;
  std::uint64_t seed;
  std::uint64_t keep_threshold;
  float scale;  // 1/(1-p)
};

// y[i] = dropout(x[i]) for the flat index i; x, y: (n).
void dropout_reference(const float* x, float* y, std::size_t n, float p, std::uint64_t seed);
template <class T>
void dropout(const T* x, T* y, std::size_t n, const Dropout& mask);

// y = a + b; a, b, y: (n).
void residual_add_reference(const float* a, const float* b, float* y, std::size_t n);
template <class T>
void residual_add(const T* a, const T* b, T* y, std::size_t n);

// y = s·x; x, y: (n).
void scale_reference(const float* x, float* y, std::size_t n, float s);
template <class T>
void scale(const T* x, T* y, std::size_t n, float s);

}  // namespace aiopt::kernels::cpu
