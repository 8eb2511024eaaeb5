#include "kernels/cpu/heads.hpp"

#include <algorithm>

#include "kernels/cpu/split_qkv_rows.hpp"

namespace aiopt::kernels::cpu {

namespace {

// Calls copy(head_major, token_major) for each (b, t, h) row of head_dim, with its offsets in the
// (batch, heads, len, head_dim) layout and in a token-major one whose (b, t) rows are token_stride
// apart (C, or 3·C for the fused projection).
template <class Copy>
void over_head_rows(std::size_t batch, std::size_t len, std::size_t heads, std::size_t head_dim,
                    std::size_t token_stride, const Copy& copy) {
#pragma omp parallel for collapse(2) schedule(static)
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t t = 0; t < len; ++t)
      for (std::size_t h = 0; h < heads; ++h)
        copy(((b * heads + h) * len + t) * head_dim, (b * len + t) * token_stride + h * head_dim);
}

}  // namespace

void split_qkv(const float* qkv, float* q, float* k_cache, float* v_cache, std::size_t batch,
               std::size_t len, std::size_t heads, std::size_t head_dim, std::size_t capacity,
               std::size_t pos0) {
  split_qkv_rows(qkv, q, batch, len, heads, head_dim, capacity, pos0,
                 [&](const float* k_row, const float* v_row, std::size_t slot) {
                   std::copy_n(k_row, head_dim, k_cache + slot * head_dim);
                   std::copy_n(v_row, head_dim, v_cache + slot * head_dim);
                 });
}

void merge_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim) {
  over_head_rows(batch, len, heads, head_dim, heads * head_dim,
                 [&](std::size_t head_major, std::size_t token_major) {
                   std::copy_n(x + head_major, head_dim, y + token_major);
                 });
}

void merge_qkv(const float* q, const float* k, const float* v, float* qkv, std::size_t batch,
               std::size_t len, std::size_t heads, std::size_t head_dim) {
  const std::size_t c = heads * head_dim;
  // The q part of (b, t, h); its k, v parts at +C, +2C.
  over_head_rows(batch, len, heads, head_dim, 3 * c, [&](std::size_t head_major, std::size_t token_major) {
    std::copy_n(q + head_major, head_dim, qkv + token_major);
    std::copy_n(k + head_major, head_dim, qkv + token_major + c);
    std::copy_n(v + head_major, head_dim, qkv + token_major + 2 * c);
  });
}

void split_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim) {
  over_head_rows(batch, len, heads, head_dim, heads * head_dim,
                 [&](std::size_t head_major, std::size_t token_major) {
                   std::copy_n(x + token_major, head_dim, y + head_major);
                 });
}

}  // namespace aiopt::kernels::cpu
