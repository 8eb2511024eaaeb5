#include "kernels/cpu/kv_int8.hpp"

#include <cmath>

#include "core/memory.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/split_qkv_rows.hpp"

namespace aiopt::kernels::cpu {

void quantize_row_int8(const float* x, std::int8_t* q, float* scale, std::size_t n) {
  float max_abs = 0.0f;
#pragma omp simd reduction(max : max_abs)
  for (std::size_t i = 0; i < n; ++i) max_abs = std::fmax(max_abs, std::fabs(x[i]));
  if (max_abs == 0.0f) {
    *scale = 0.0f;
    for (std::size_t i = 0; i < n; ++i) q[i] = 0;
    return;
  }
  const float s = max_abs / 127.0f;
  *scale = s;
  // Round to nearest even by adding and subtracting 1.5·2^23 (exact for |v| < 2^22, and
  // |x / s| <= 127 up to rounding); then saturate, since x / s may round a hair past 127.
  constexpr float round_magic = 12582912.0f;
#pragma omp simd
  for (std::size_t i = 0; i < n; ++i) {
    const float r = (x[i] / s + round_magic) - round_magic;
    q[i] = static_cast<std::int8_t>(std::fmin(127.0f, std::fmax(-127.0f, r)));
  }
}

void split_qkv_int8(const float* qkv, float* q, std::int8_t* k8, float* k_scale, std::int8_t* v8,
                    float* v_scale, std::size_t batch, std::size_t len, std::size_t heads,
                    std::size_t head_dim, std::size_t capacity, std::size_t pos0) {
  split_qkv_rows(qkv, q, batch, len, heads, head_dim, capacity, pos0,
                 [&](const float* k_row, const float* v_row, std::size_t slot) {
                   quantize_row_int8(k_row, k8 + slot * head_dim, k_scale + slot, head_dim);
                   quantize_row_int8(v_row, v8 + slot * head_dim, v_scale + slot, head_dim);
                 });
}

namespace {

// Queries per call from which the cache is dequantized once and attended by the flash kernel:
// a prefill's many queries then share each dequantized row and run as BLAS products, where the
// per-query loop below is bound by its scalar dot products (4× slower than the f32 cache's
// prefill on `small`). One query (a decode step) reads the int8 rows directly: that is where the
// cache's bytes are the cost.
constexpr std::size_t dequantize_min_queries = 16;

// The used rows [0, kv_len) of a (batch, heads, capacity, d) int8 cache as f32
// (batch, heads, kv_len, d): x = s·q.
void dequantize_cache(const std::int8_t* x8, const float* scale, float* x, const AttentionShape& shape) {
  const std::size_t d = shape.head_dim;
  const std::size_t heads = shape.batch * shape.heads;
#pragma omp parallel for collapse(2) schedule(static)
  for (std::size_t bh = 0; bh < heads; ++bh)
    for (std::size_t j = 0; j < shape.kv_len; ++j) {
      const std::int8_t* row = x8 + (bh * shape.kv_capacity + j) * d;
      const float s = scale[bh * shape.kv_capacity + j];
      float* y = x + (bh * shape.kv_len + j) * d;
#pragma omp simd
      for (std::size_t i = 0; i < d; ++i) y[i] = s * static_cast<float>(row[i]);
    }
}

}  // namespace

void attention_int8_kv(const float* q, const std::int8_t* k8, const float* k_scale,
                       const std::int8_t* v8, const float* v_scale, float* out,
                       const AttentionShape& shape) {
  shape.validate();
  const std::size_t d = shape.head_dim;
  if (shape.q_len >= dequantize_min_queries) {
    // Transient f32 copies of the used rows, from the tracked allocator: a prefill's peak
    // memory counts them.
    const std::size_t count = shape.batch * shape.heads * shape.kv_len * d;
    memory::Buffer<float> k(Device::cpu(), count), v(Device::cpu(), count);  // (B, H, kv_len, d)
    dequantize_cache(k8, k_scale, k.data(), shape);
    dequantize_cache(v8, v_scale, v.data(), shape);
    AttentionShape dense = shape;
    dense.kv_capacity = shape.kv_len;
    attention_flash(q, k.data(), v.data(), out, dense);
    return;
  }
  const std::size_t rows = shape.batch * shape.heads * shape.q_len;
#pragma omp parallel
  {
    // Per thread: the scores of one query row, then its output accumulator. Two passes over
    // the keys (scores and their max, then exp and p·v) instead of the online softmax: a
    // decode step has one query, so there is no tile of queries to amortize rescaling over.
    memory::Buffer<float> p_buffer(Device::cpu(), shape.kv_len);  // (Tk)
    memory::Buffer<float> acc_buffer(Device::cpu(), d);          // (d)
    float* p = p_buffer.data();
    float* acc = acc_buffer.data();
#pragma omp for schedule(dynamic, 4)
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t bh = r / shape.q_len;
      const std::size_t i = r % shape.q_len;
      const std::size_t keys = shape.visible_keys(i);
      const float* qr = q + r * d;                                  // (d)
      const std::int8_t* kb = k8 + bh * shape.kv_capacity * d;      // (capacity, d)
      const std::int8_t* vb = v8 + bh * shape.kv_capacity * d;      // (capacity, d)
      const float* ks = k_scale + bh * shape.kv_capacity;           // (capacity)
      const float* vs = v_scale + bh * shape.kv_capacity;           // (capacity)
      float m = -INFINITY;
      for (std::size_t j = 0; j < keys; ++j) {
        const std::int8_t* kr = kb + j * d;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (std::size_t x = 0; x < d; ++x) dot += qr[x] * static_cast<float>(kr[x]);
        p[j] = dot * ks[j] * shape.scale;
        m = std::fmax(m, p[j]);
      }
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (std::size_t j = 0; j < keys; ++j) {
        p[j] = exp_poly(p[j] - m);
        sum += p[j];
      }
#pragma omp simd
      for (std::size_t x = 0; x < d; ++x) acc[x] = 0.0f;
      for (std::size_t j = 0; j < keys; ++j) {
        const float w = p[j] * vs[j];
        const std::int8_t* vr = vb + j * d;
#pragma omp simd
        for (std::size_t x = 0; x < d; ++x) acc[x] += w * static_cast<float>(vr[x]);
      }
      float* o = out + r * d;
      const float inv = 1.0f / sum;
#pragma omp simd
      for (std::size_t x = 0; x < d; ++x) o[x] = acc[x] * inv;
    }
  }
}

}  // namespace aiopt::kernels::cpu
