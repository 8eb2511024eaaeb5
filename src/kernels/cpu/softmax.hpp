#pragma once
// Row softmax and the causal mask of attention scores. Scores are (rows, hidden) and read as
// (rows / hidden) blocks of (hidden × hidden): row r is query position q = r % hidden, and keys
// j > q are masked to −inf (a decoder may not attend to later tokens).
#include <cstddef>
#include <limits>

#include "kernels/cpu/activation.hpp"

namespace aiopt::kernels::cpu {

// The mask value of key j for query q: the score itself, or −inf for a later key.
inline float causal(float score, std::size_t q, std::size_t j) {
  return j > q ? -std::numeric_limits<float>::infinity() : score;
}

// One row, max-subtracted for range: e = exp(x − max), y = e / Σe. Entries of −inf give 0.
// x: (n), stored as In (float or bf16); y: (n), fp32, may alias x when In is float: it holds e
// between the loops, so a bf16 row ends in an fp32 row and is rounded once (store_row). The row
// stays in cache across the three loops.
template <class In>
inline void softmax_row(const In* x, float* y, std::size_t n) {
  float max = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : max)
  for (std::size_t j = 0; j < n; ++j) max = to_float(x[j]) > max ? to_float(x[j]) : max;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (std::size_t j = 0; j < n; ++j) {
    y[j] = exp_poly(to_float(x[j]) - max);
    sum += y[j];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (std::size_t j = 0; j < n; ++j) y[j] *= inv;
}

// x, y: (rows, hidden), rows a multiple of hidden.
void causal_mask_reference(const float* x, float* y, std::size_t rows, std::size_t hidden);
// x, y stored as T = float or bf16 (−inf is exact in both).
template <class T>
void causal_mask(const T* x, T* y, std::size_t rows, std::size_t hidden);

// Softmax of each row. x, y: (rows, hidden). The reference uses std::exp and a double sum.
void softmax_reference(const float* x, float* y, std::size_t rows, std::size_t hidden);
// x, y stored as T = float or bf16; bf16 rows go through an fp32 row per thread.
template <class T>
void softmax(const T* x, T* y, std::size_t rows, std::size_t hidden);

}  // namespace aiopt::kernels::cpu
