#pragma once
// The walk shared by the splits of the fused projection's output into attention's layout: q is
// copied head-major, and each (b, h, t)'s k and v rows go to the cache slot they fill, stored as
// the cache's format needs.
#include <algorithm>
#include <cstddef>

namespace aiopt::kernels::cpu {

// qkv: (batch, len, 3, heads, head_dim) -> q: (batch, heads, len, head_dim); store_kv(k_row,
// v_row, slot) for slot (b, h, pos0 + t) of a (batch, heads, capacity) cache.
template <class StoreKv>
void split_qkv_rows(const float* qkv, float* q, std::size_t batch, std::size_t len, std::size_t heads,
                    std::size_t head_dim, std::size_t capacity, std::size_t pos0, const StoreKv& store_kv) {
  const std::size_t c = heads * head_dim;
#pragma omp parallel for collapse(2) schedule(static)
  for (std::size_t b = 0; b < batch; ++b) {
    for (std::size_t h = 0; h < heads; ++h) {
      for (std::size_t t = 0; t < len; ++t) {
        const float* row = qkv + ((b * len + t) * 3) * c + h * head_dim;  // q of (b, t, h); k, v at +C, +2C
        std::copy_n(row, head_dim, q + ((b * heads + h) * len + t) * head_dim);
        store_kv(row + c, row + 2 * c, (b * heads + h) * capacity + pos0 + t);
      }
    }
  }
}

}  // namespace aiopt::kernels::cpu
