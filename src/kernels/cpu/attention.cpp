#include "kernels/cpu/attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/softmax.hpp"
#include "kernels/cpu/thread_workspace.hpp"

namespace aiopt::kernels::cpu {

namespace {

constexpr float neg_inf = -std::numeric_limits<float>::infinity();

// Offsets of (b, h) in q/out and in k/v, in elements.
struct HeadOffsets {
  std::size_t q;
  std::size_t kv;
};
HeadOffsets head_offsets(const AttentionShape& s, std::size_t bh) {
  return {bh * s.q_len * s.head_dim, bh * s.kv_capacity * s.head_dim};
}

}  // namespace

void attention_reference(const float* q, const float* k, const float* v, double* out,
                         const AttentionShape& shape) {
  shape.validate();
  const std::size_t d = shape.head_dim;
  std::vector<double> p(shape.kv_len);
  for (std::size_t bh = 0; bh < shape.batch * shape.heads; ++bh) {
    const auto [qo, kvo] = head_offsets(shape, bh);
    for (std::size_t i = 0; i < shape.q_len; ++i) {
      const std::size_t n = shape.visible_keys(i);
      const float* qi = q + qo + i * d;
      double max = -std::numeric_limits<double>::infinity();
      for (std::size_t j = 0; j < n; ++j) {
        double dot = 0.0;
        for (std::size_t t = 0; t < d; ++t) dot += static_cast<double>(qi[t]) * k[kvo + j * d + t];
        p[j] = static_cast<double>(shape.scale) * dot;
        max = std::max(max, p[j]);
      }
      double sum = 0.0;
      for (std::size_t j = 0; j < n; ++j) {
        p[j] = std::exp(p[j] - max);
        sum += p[j];
      }
      double* oi = out + qo + i * d;
      for (std::size_t t = 0; t < d; ++t) oi[t] = 0.0;
      for (std::size_t j = 0; j < n; ++j)
        for (std::size_t t = 0; t < d; ++t) oi[t] += p[j] / sum * v[kvo + j * d + t];
    }
  }
}

std::size_t naive_workspace_elements(const AttentionShape& shape) {
  return shape.batch * shape.heads * shape.q_len * shape.kv_len;
}

void attention_naive(const float* q, const float* k, const float* v, float* out, float* scores,
                     const AttentionShape& shape) {
  shape.validate();
  const std::size_t d = shape.head_dim, tq = shape.q_len, tk = shape.kv_len;
  const std::size_t bh = shape.batch * shape.heads;
  // S = scale·q·kᵀ: (B·H) products of (Tq, d)·(d, Tk) into scores (B·H, Tq, Tk).
  sgemm_strided_batched(false, true, tq, tk, d, shape.scale, q, d, tq * d, k, d,
                        shape.kv_capacity * d, 0.0f, scores, tk, tq * tk, bh);
  // Masked row softmax: masked keys get probability 0, so only the visible prefix is normalized.
  const std::size_t rows = bh * tq;
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    float* row = scores + r * tk;
    const std::size_t n = shape.visible_keys(r % tq);
    softmax_row(row, row, n);
    std::fill(row + n, row + tk, 0.0f);
  }
  // out = P·v: (B·H) products of (Tq, Tk)·(Tk, d).
  sgemm_strided_batched(false, false, tq, d, tk, 1.0f, scores, tk, tq * tk, v, d,
                        shape.kv_capacity * d, 0.0f, out, d, tq * d, bh);
}

void attention_flash(const float* q, const float* k, const float* v, float* out,
                     const AttentionShape& shape, FlashTiles tiles) {
  attention_flash(q, k, v, out, nullptr, shape, tiles);
}

void attention_flash(const float* q, const float* k, const float* v, float* out, float* lse,
                     const AttentionShape& shape, FlashTiles tiles) {
  shape.validate();
  if (tiles.q_tile == 0 || tiles.kv_tile == 0)
    throw std::invalid_argument("attention_flash: q_tile and kv_tile must be positive");
  const std::size_t d = shape.head_dim, tq = shape.q_len;
  const std::size_t bq = std::min(tiles.q_tile, tq), bk = std::min(tiles.kv_tile, shape.kv_len);
  check_blas_range({bq, bk, d}, "attention_flash");
  const std::size_t q_tiles = (tq + bq - 1) / bq;
  const std::size_t tasks = shape.batch * shape.heads * q_tiles;

  // Per thread: scores (bq, bk), accumulator (bq, d), row max and sum (bq).
  const std::size_t s_size = whole_lines(bq * bk), acc_size = whole_lines(bq * d);
  const std::size_t row_size = whole_lines(bq);
  const std::size_t per_thread = s_size + acc_size + 2 * row_size;
  // The two tile products go through single-threaded BLAS; the threads share the tiles. Causal
  // work grows with the query tile, so tiles are handed out as threads free up.
  over_tasks_in_workspace(tasks, per_thread, [&](std::size_t task, float* const s) {
    float* const acc = s + s_size;
    float* const row_max = acc + acc_size;
    float* const row_sum = row_max + row_size;

    const std::size_t head = task / q_tiles, i0 = (task % q_tiles) * bq;
    const std::size_t rows = std::min(bq, tq - i0);
    const auto [qo, kvo] = head_offsets(shape, head);
    const float* qt = q + qo + i0 * d;  // (rows, d)
    // The tile's last query sees the most keys; tiles of keys past it are skipped whole.
    const std::size_t keys = shape.visible_keys(i0 + rows - 1);

    std::fill(acc, acc + rows * d, 0.0f);
    std::fill(row_max, row_max + rows, neg_inf);
    std::fill(row_sum, row_sum + rows, 0.0f);

    for (std::size_t j0 = 0; j0 < keys; j0 += bk) {
      const std::size_t cols = std::min(bk, keys - j0);
      // s = scale·q_tile·k_tileᵀ: (rows, d)·(d, cols).
      sgemm(false, true, rows, cols, d, shape.scale, qt, d, k + kvo + j0 * d, d, 0.0f, s, bk);
      for (std::size_t i = 0; i < rows; ++i) {
        float* si = s + i * bk;  // (cols)
        // Causal mask inside a diagonal tile: keys past the query's position.
        const std::size_t seen = shape.visible_keys(i0 + i);
        const std::size_t valid = seen > j0 ? std::min(cols, seen - j0) : 0;
        float tile_max = neg_inf;
#pragma omp simd reduction(max : tile_max)
        for (std::size_t j = 0; j < cols; ++j) {
          si[j] = j < valid ? si[j] : neg_inf;
          tile_max = si[j] > tile_max ? si[j] : tile_max;
        }
        // Online softmax: the new running max rescales what was summed under the old one.
        // Key 0 is visible to every query, so the running max is finite after the first tile;
        // a masked score becomes exp_poly(−inf) = 0.
        const float new_max = std::max(row_max[i], tile_max);
        const float correction = exp_poly(row_max[i] - new_max);
        float tile_sum = 0.0f;
#pragma omp simd reduction(+ : tile_sum)
        for (std::size_t j = 0; j < cols; ++j) {
          si[j] = exp_poly(si[j] - new_max);
          tile_sum += si[j];
        }
        row_max[i] = new_max;
        row_sum[i] = row_sum[i] * correction + tile_sum;
        float* ai = acc + i * d;
#pragma omp simd
        for (std::size_t t = 0; t < d; ++t) ai[t] *= correction;
      }
      // acc += p·v_tile: (rows, cols)·(cols, d).
      sgemm(false, false, rows, d, cols, 1.0f, s, bk, v + kvo + j0 * d, d, 1.0f, acc, d);
    }

    for (std::size_t i = 0; i < rows; ++i) {
      const float inv = 1.0f / row_sum[i];
      float* oi = out + qo + (i0 + i) * d;
      const float* ai = acc + i * d;
#pragma omp simd
      for (std::size_t t = 0; t < d; ++t) oi[t] = ai[t] * inv;
    }
    // The softmax denominator of row i is row_sum·e^row_max, so its log is row_max + log(row_sum).
    if (lse != nullptr)
      for (std::size_t i = 0; i < rows; ++i) lse[head * tq + i0 + i] = row_max[i] + std::log(row_sum[i]);
  });
}

void attention_memory_efficient(const float* q, const float* k, const float* v, float* out,
                                const AttentionShape& shape, std::size_t chunk) {
  shape.validate();
  if (chunk == 0) throw std::invalid_argument("attention_memory_efficient: chunk must be positive");
  const std::size_t d = shape.head_dim, tq = shape.q_len, tk = shape.kv_len;
  const std::size_t bq = std::min(chunk, tq);
  const std::size_t chunks = (tq + bq - 1) / bq;
  const std::size_t tasks = shape.batch * shape.heads * chunks;

  // Per thread: the chunk's full score rows (bq, Tk).
  const std::size_t per_thread = whole_lines(bq * tk);
  check_blas_range({bq, tk, d}, "attention_memory_efficient");
  // One BLAS thread per product while our threads share the chunks.
  over_tasks_in_workspace(tasks, per_thread, [&](std::size_t task, float* const s) {
    const std::size_t head = task / chunks, i0 = (task % chunks) * bq;
    const std::size_t rows = std::min(bq, tq - i0);
    const auto [qo, kvo] = head_offsets(shape, head);
    // Keys past the chunk's last visible one are never needed: (rows, keys) of scores.
    const std::size_t keys = shape.visible_keys(i0 + rows - 1);
    sgemm(false, true, rows, keys, d, shape.scale, q + qo + i0 * d, d, k + kvo, d, 0.0f, s, keys);
    for (std::size_t i = 0; i < rows; ++i) {
      float* row = s + i * keys;
      const std::size_t n = shape.visible_keys(i0 + i);
      softmax_row(row, row, n);
      std::fill(row + n, row + keys, 0.0f);
    }
    sgemm(false, false, rows, d, keys, 1.0f, s, keys, v + kvo, d, 0.0f, out + qo + i0 * d, d);
  });
}

void attention_uniform(const float* v, float* out, const AttentionShape& shape) {
  shape.validate();
  const std::size_t d = shape.head_dim;
#pragma omp parallel for schedule(static)
  for (std::size_t bh = 0; bh < shape.batch * shape.heads; ++bh) {
    const auto [qo, kvo] = head_offsets(shape, bh);
    std::vector<double> sum(d, 0.0);
    std::size_t summed = 0;  // keys in sum; queries come in order, each seeing at least as many
    for (std::size_t i = 0; i < shape.q_len; ++i) {
      for (const std::size_t n = shape.visible_keys(i); summed < n; ++summed)
        for (std::size_t t = 0; t < d; ++t) sum[t] += v[kvo + summed * d + t];
      for (std::size_t t = 0; t < d; ++t) out[qo + i * d + t] = static_cast<float>(sum[t] / static_cast<double>(summed));
    }
  }
}

}  // namespace aiopt::kernels::cpu
