#pragma once
// The shape of one scaled-dot-product attention call, shared by the CPU and CUDA kernels.
// Layouts, all row-major:
//   q, out: (batch, heads, q_len, head_dim)
//   k, v:   (batch, heads, kv_capacity, head_dim), of which rows [0, kv_len) are used; a KV cache
//           allocated for kv_capacity positions is passed as it is, a plain tensor has
//           kv_capacity == kv_len.
// out = softmax(scale · q·kᵀ [+ causal mask]) · v. With `causal`, query i (absolute position
// q_offset + i) sees keys j <= q_offset + i: prefill has q_offset 0 and q_len == kv_len, a decode
// step has q_len 1 and q_offset kv_len − 1.
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "core/host_device.hpp"

namespace aiopt::kernels {

// The masking rule, for the CPU kernels and the CUDA kernels alike: the keys query i (absolute
// position q_offset + i) sees are [0, visible_keys): all kv_len, or with the causal mask those at
// positions <= q_offset + i.
AIOPT_HD std::size_t visible_keys(bool causal, std::size_t kv_len, std::size_t q_offset, std::size_t i) {
  return causal && q_offset + i + 1 < kv_len ? q_offset + i + 1 : kv_len;
}

struct AttentionShape {
  std::size_t batch = 1;
  std::size_t heads = 1;
  std::size_t q_len = 0;
  std::size_t kv_len = 0;
  std::size_t head_dim = 0;
  std::size_t kv_capacity = 0;
  std::size_t q_offset = 0;
  bool causal = false;
  float scale = 1.0f;

  // Plain (B, H, N, d) self-attention: q_len == kv_len == kv_capacity == n, scale 1/sqrt(d).
  static AttentionShape self(std::size_t batch, std::size_t heads, std::size_t n, std::size_t head_dim,
                             bool causal) {
    return {batch, heads, n, n, head_dim, n, 0, causal, 1.0f / std::sqrt(static_cast<float>(head_dim))};
  }

  // Throws std::invalid_argument when a size is zero, kv_len > kv_capacity, or causal queries
  // reach past the last key (q_offset + q_len > kv_len).
  void validate() const {
    if (batch == 0 || heads == 0 || q_len == 0 || kv_len == 0 || head_dim == 0)
      throw std::invalid_argument("attention: batch, heads, q_len, kv_len and head_dim must be positive");
    if (kv_len > kv_capacity) throw std::invalid_argument("attention: kv_len exceeds kv_capacity");
    if (causal && q_offset + q_len > kv_len)
      throw std::invalid_argument("attention: causal queries extend past the last key");
  }

  // Throws as validate(), and std::invalid_argument naming `who` unless this is self-attention
  // (q_len == kv_len == kv_capacity, q_offset 0): training attends a sequence to itself, and a KV
  // cache or a query offset has no backward.
  void validate_self(const char* who) const {
    validate();
    if (q_len != kv_len || kv_capacity != kv_len || q_offset != 0)
      throw std::invalid_argument(std::string(who) +
                                  ": the backward is for self-attention (q_len == kv_len == kv_capacity, q_offset 0)");
  }

  // Keys query i sees (visible_keys above).
  std::size_t visible_keys(std::size_t i) const { return kernels::visible_keys(causal, kv_len, q_offset, i); }

  // Multiply-adds of q·kᵀ and p·v counted as 2 FLOPs each: 4·B·H·Tq·Tk·d, about half with the mask.
  double flops() const {
    const double full = 4.0 * static_cast<double>(batch * heads * q_len * kv_len * head_dim);
    if (!causal) return full;
    // Query i sees q_offset + i + 1 keys.
    double seen = 0.0;
    for (std::size_t i = 0; i < q_len; ++i) seen += static_cast<double>(q_offset + i + 1);
    return full * seen / static_cast<double>(q_len * kv_len);
  }
};

}  // namespace aiopt::kernels
