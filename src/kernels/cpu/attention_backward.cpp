#include "kernels/cpu/attention_backward.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/memory.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/softmax.hpp"
#include "kernels/cpu/thread_workspace.hpp"

namespace aiopt::kernels::cpu {

namespace {

float row_dot(const float* a, const float* b, std::size_t d) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (std::size_t t = 0; t < d; ++t) sum += a[t] * b[t];
  return sum;
}

}  // namespace

void attention_naive_backward(const float* q, const float* k, const float* v, const float* out,
                              const float* dout, float* dq, float* dk, float* dv, float* scores,
                              const AttentionShape& shape) {
  shape.validate_self("attention_naive_backward");
  const std::size_t n = shape.q_len, d = shape.head_dim, bh = shape.batch * shape.heads;
  check_blas_range({n, d}, "attention_naive_backward");
  // P = softmax(scale·q·kᵀ, masked): (B·H, N, N) in scores, as the forward computed it.
  sgemm_strided_batched(false, true, n, n, d, shape.scale, q, d, n * d, k, d, n * d, 0.0f, scores, n, n * n, bh);
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < bh * n; ++r) {
    float* row = scores + r * n;
    const std::size_t seen = shape.visible_keys(r % n);
    softmax_row(row, row, seen);
    std::fill(row + seen, row + n, 0.0f);
  }
  // dV = Pᵀ·dO: (B·H) products of (N, N)ᵀ·(N, d).
  sgemm_strided_batched(true, false, n, d, n, 1.0f, scores, n, n * n, dout, d, n * d, 0.0f, dv, d, n * d, bh);

  // dS = P∘(dO·Vᵀ − D) over P in place; dP = dO·Vᵀ is built a chunk of rows at a time in a
  // per-thread (chunk, N) workspace, so only one N×N buffer exists.
  const std::size_t chunk = std::min<std::size_t>(64, n);
  const std::size_t chunks = (n + chunk - 1) / chunk, tasks = bh * chunks;
  const std::size_t per_thread = whole_lines(chunk * n);
  over_tasks_in_workspace(tasks, per_thread, [&](std::size_t task, float* const dp) {
    const std::size_t head = task / chunks, i0 = (task % chunks) * chunk;
    const std::size_t rows = std::min(chunk, n - i0);
    const std::size_t off = head * n * d;
    // dP = dO_chunk·Vᵀ: (rows, d)·(d, N).
    sgemm(false, true, rows, n, d, 1.0f, dout + off + i0 * d, d, v + off, d, 0.0f, dp, n);
    for (std::size_t i = 0; i < rows; ++i) {
      const float di = row_dot(dout + off + (i0 + i) * d, out + off + (i0 + i) * d, d);
      float* p = scores + (head * n + i0 + i) * n;
      const float* dpi = dp + i * n;
#pragma omp simd
      for (std::size_t j = 0; j < n; ++j) p[j] = p[j] * (dpi[j] - di);
    }
  });
  // dQ = scale·dS·K and dK = scale·dSᵀ·Q: (B·H) products of (N, N)·(N, d).
  sgemm_strided_batched(false, false, n, d, n, shape.scale, scores, n, n * n, k, d, n * d, 0.0f, dq, d, n * d, bh);
  sgemm_strided_batched(true, false, n, d, n, shape.scale, scores, n, n * n, q, d, n * d, 0.0f, dk, d, n * d, bh);
}

void attention_flash_backward(const float* q, const float* k, const float* v, const float* out,
                              const float* dout, const float* lse, float* dq, float* dk, float* dv,
                              const AttentionShape& shape, FlashTiles tiles) {
  shape.validate_self("attention_flash_backward");
  if (tiles.q_tile == 0 || tiles.kv_tile == 0)
    throw std::invalid_argument("attention_flash_backward: q_tile and kv_tile must be positive");
  const std::size_t n = shape.q_len, d = shape.head_dim, bh = shape.batch * shape.heads;
  const std::size_t bq = std::min(tiles.q_tile, n), bk = std::min(tiles.kv_tile, n);
  check_blas_range({bq, bk, d}, "attention_flash_backward");
  const std::size_t key_tiles = (n + bk - 1) / bk;

  // D_i = Σ_t dO_it·O_it: (B·H·N).
  memory::Buffer<float> row_d(Device::cpu(), bh * n);
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < bh * n; ++r) row_d[r] = row_dot(dout + r * d, out + r * d, d);

  // Each key tile's share of dQ: key tile 0 writes dq itself, tiles 1.. write their own
  // (B·H, N, d) slice here, summed into dq afterwards in tile order. (key_tiles − 1, B·H, N, d).
  memory::Buffer<float> dq_part(Device::cpu(), (key_tiles - 1) * bh * n * d);

  const std::size_t tasks = bh * key_tiles;
  // Per thread: P (bq, bk) and dP, then dS in its place (bq, bk).
  const std::size_t tile_size = whole_lines(bq * bk), per_thread = 2 * tile_size;
  // Under the causal mask a key tile's work shrinks with its position, so tiles are handed out
  // as threads free up.
  over_tasks_in_workspace(tasks, per_thread, [&](std::size_t task, float* const p) {
    float* const ds = p + tile_size;
    const std::size_t head = task / key_tiles, tile = task % key_tiles;
    const std::size_t j0 = tile * bk, cols = std::min(bk, n - j0);
    const std::size_t off = head * n * d;
    const float* kt = k + off + j0 * d;  // (cols, d)
    const float* vt = v + off + j0 * d;  // (cols, d)
    float* dkt = dk + off + j0 * d;      // (cols, d), this task's alone
    float* dvt = dv + off + j0 * d;      // (cols, d), this task's alone
    float* dq_tile = tile == 0 ? dq + off : dq_part.data() + ((tile - 1) * bh + head) * n * d;  // (N, d)
    std::fill(dkt, dkt + cols * d, 0.0f);
    std::fill(dvt, dvt + cols * d, 0.0f);

    // Queries before the tile's first key see none of it under the causal mask.
    for (std::size_t i0 = shape.causal ? j0 : 0; i0 < n; i0 += bq) {
      const std::size_t rows = std::min(bq, n - i0);
      const float* qt = q + off + i0 * d;      // (rows, d)
      const float* dot = dout + off + i0 * d;  // (rows, d)
      // P = exp(scale·q·kᵀ − lse): (rows, d)·(d, cols); keys past a query's position are 0.
      sgemm(false, true, rows, cols, d, shape.scale, qt, d, kt, d, 0.0f, p, bk);
      for (std::size_t i = 0; i < rows; ++i) {
        float* pi = p + i * bk;
        const float li = lse[head * n + i0 + i];
        const std::size_t seen = shape.visible_keys(i0 + i);
        const std::size_t valid = seen > j0 ? std::min(cols, seen - j0) : 0;
#pragma omp simd
        for (std::size_t j = 0; j < cols; ++j) pi[j] = j < valid ? exp_poly(pi[j] - li) : 0.0f;
      }
      // dV_tile += Pᵀ·dO: (cols, rows)·(rows, d).
      sgemm(true, false, cols, d, rows, 1.0f, p, bk, dot, d, 1.0f, dvt, d);
      // dP = dO·V_tileᵀ: (rows, d)·(d, cols); then dS = P∘(dP − D) in its place.
      sgemm(false, true, rows, cols, d, 1.0f, dot, d, vt, d, 0.0f, ds, bk);
      for (std::size_t i = 0; i < rows; ++i) {
        const float* pi = p + i * bk;
        float* dsi = ds + i * bk;
        const float di = row_d[head * n + i0 + i];
#pragma omp simd
        for (std::size_t j = 0; j < cols; ++j) dsi[j] = pi[j] * (dsi[j] - di);
      }
      // dK_tile += scale·dSᵀ·Q: (cols, rows)·(rows, d).
      sgemm(true, false, cols, d, rows, shape.scale, ds, bk, qt, d, 1.0f, dkt, d);
      // This tile's dQ rows = scale·dS·K_tile: (rows, cols)·(cols, d).
      sgemm(false, false, rows, d, cols, shape.scale, ds, bk, kt, d, 0.0f, dq_tile + i0 * d, d);
    }
  });

  if (key_tiles == 1) return;
  // dQ = Σ over key tiles in tile order; query i has shares from the tiles it sees.
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < bh * n; ++r) {
    const std::size_t head = r / n, i = r % n;
    const std::size_t last = shape.causal ? i / bk : key_tiles - 1;
    float* dqi = dq + r * d;
    for (std::size_t tile = 1; tile <= last; ++tile) {
      const float* part = dq_part.data() + ((tile - 1) * bh + head) * n * d + i * d;
#pragma omp simd
      for (std::size_t t = 0; t < d; ++t) dqi[t] += part[t];
    }
  }
}

void attention_backward_reference(const float* q, const float* k, const float* v, const float* dout,
                                  double* dq, double* dk, double* dv, const AttentionShape& shape) {
  shape.validate_self("attention_backward_reference");
  const std::size_t n = shape.q_len, d = shape.head_dim, bh = shape.batch * shape.heads;
  const double scale = shape.scale;
  std::fill(dk, dk + bh * n * d, 0.0);
  std::fill(dv, dv + bh * n * d, 0.0);
  std::vector<double> p(n), dp(n), o(d);
  for (std::size_t head = 0; head < bh; ++head) {
    const std::size_t off = head * n * d;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t seen = shape.visible_keys(i);
      const float* qi = q + off + i * d;
      const float* doi = dout + off + i * d;
      double max = -std::numeric_limits<double>::infinity();
      for (std::size_t j = 0; j < seen; ++j) {
        double dot = 0.0;
        for (std::size_t t = 0; t < d; ++t) dot += static_cast<double>(qi[t]) * k[off + j * d + t];
        p[j] = scale * dot;
        max = std::max(max, p[j]);
      }
      double sum = 0.0;
      for (std::size_t j = 0; j < seen; ++j) {
        p[j] = std::exp(p[j] - max);
        sum += p[j];
      }
      for (std::size_t j = 0; j < seen; ++j) p[j] /= sum;
      // O_i = Σ_j P_ij·V_j, D_i = dO_i·O_i, dP_ij = dO_i·V_j.
      std::fill(o.begin(), o.end(), 0.0);
      for (std::size_t j = 0; j < seen; ++j)
        for (std::size_t t = 0; t < d; ++t) o[t] += p[j] * v[off + j * d + t];
      double di = 0.0;
      for (std::size_t t = 0; t < d; ++t) di += static_cast<double>(doi[t]) * o[t];
      for (std::size_t j = 0; j < seen; ++j) {
        double dot = 0.0;
        for (std::size_t t = 0; t < d; ++t) dot += static_cast<double>(doi[t]) * v[off + j * d + t];
        dp[j] = dot;
      }
      double* dqi = dq + off + i * d;
      std::fill(dqi, dqi + d, 0.0);
      for (std::size_t j = 0; j < seen; ++j) {
        const double dsij = p[j] * (dp[j] - di);
        for (std::size_t t = 0; t < d; ++t) {
          dqi[t] += scale * dsij * k[off + j * d + t];
          dk[off + j * d + t] += scale * dsij * qi[t];
          dv[off + j * d + t] += p[j] * doi[t];
        }
      }
    }
  }
}

}  // namespace aiopt::kernels::cpu
