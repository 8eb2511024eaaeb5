#include "kernels/cpu/heads.hpp"

#include <algorithm>

namespace aiopt::kernels::cpu {

void split_qkv(const float* qkv, float* q, float* k_cache, float* v_cache, std::size_t batch,
               std::size_t len, std::size_t heads, std::size_t head_dim, std::size_t capacity,
               std::size_t pos0) {
  const std::size_t c = heads * head_dim;
#pragma omp parallel for collapse(2) schedule(static)
  for (std::size_t b = 0; b < batch; ++b) {
    for (std::size_t h = 0; h < heads; ++h) {
      for (std::size_t t = 0; t < len; ++t) {
        const float* row = qkv + ((b * len + t) * 3) * c + h * head_dim;  // q of (b, t, h); k, v at +C, +2C
        const std::size_t cache_row = ((b * heads + h) * capacity + pos0 + t) * head_dim;
        std::copy_n(row, head_dim, q + ((b * heads + h) * len + t) * head_dim);
        std::copy_n(row + c, head_dim, k_cache + cache_row);
        std::copy_n(row + 2 * c, head_dim, v_cache + cache_row);
      }
    }
  }
}

void merge_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim) {
  const std::size_t c = heads * head_dim;
#pragma omp parallel for collapse(2) schedule(static)
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t t = 0; t < len; ++t)
      for (std::size_t h = 0; h < heads; ++h)
        std::copy_n(x + ((b * heads + h) * len + t) * head_dim, head_dim, y + (b * len + t) * c + h * head_dim);
}

void merge_qkv(const float* q, const float* k, const float* v, float* qkv, std::size_t batch,
               std::size_t len, std::size_t heads, std::size_t head_dim) {
  const std::size_t c = heads * head_dim;
#pragma omp parallel for collapse(2) schedule(static)
  for (std::size_t b = 0; b < batch; ++b) {
    for (std::size_t t = 0; t < len; ++t) {
      float* row = qkv + ((b * len + t) * 3) * c;  // q part of (b, t); k, v at +C, +2C
      for (std::size_t h = 0; h < heads; ++h) {
        const std::size_t from = ((b * heads + h) * len + t) * head_dim;
        std::copy_n(q + from, head_dim, row + h * head_dim);
        std::copy_n(k + from, head_dim, row + c + h * head_dim);
        std::copy_n(v + from, head_dim, row + 2 * c + h * head_dim);
      }
    }
  }
}

void split_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim) {
  const std::size_t c = heads * head_dim;
#pragma omp parallel for collapse(2) schedule(static)
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t t = 0; t < len; ++t)
      for (std::size_t h = 0; h < heads; ++h)
        std::copy_n(x + (b * len + t) * c + h * head_dim, head_dim, y + ((b * heads + h) * len + t) * head_dim);
}

}  // namespace aiopt::kernels::cpu
