#include "kernels/cpu/linear_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <vector>

#include "core/memory.hpp"
#include "core/rng.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/softmax.hpp"

namespace aiopt::kernels::cpu {

namespace {

// c = d^-1/4: q and k are scaled by it so that φ(q)·φ(k) estimates exp(q·k / sqrt(d)).
double favor_scale(std::size_t d) { return std::pow(static_cast<double>(d), -0.25); }

// A standard normal from two uniforms (Box–Muller); counter i of `seed`.
double gaussian(std::uint64_t seed, std::uint64_t i) {
  const double u1 = 1.0 - static_cast<double>(rng::uniform(seed, 2 * i));  // (0, 1]: log is finite
  const double u2 = rng::uniform(seed, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace

// ---- feature maps

void elu_feature_map(const float* x, float* phi, std::size_t n) {
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    const float e = exp_poly(x[i] < 0.0f ? x[i] : 0.0f);
    phi[i] = x[i] <= 0.0f ? e : x[i] + 1.0f;  // a NaN takes the x + 1 branch and stays NaN
  }
}

void elu_feature_map_reference(const float* x, double* phi, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const double v = x[i];
    phi[i] = v > 0.0 ? v + 1.0 : std::exp(v);
  }
}

void favor_feature_map(const float* x, const float* w, float* phi, std::size_t groups, std::size_t rows,
                       std::size_t d, std::size_t m, FavorRole role) {
  const std::size_t total = groups * rows;
  if (total == 0 || m == 0) return;
  const float c = static_cast<float>(favor_scale(d));
  const float inv_sqrt_m = static_cast<float>(1.0 / std::sqrt(static_cast<double>(m)));
  // phi = (c·x)·Wᵀ: (groups·rows, m), the projections w_r·(c·x) of every row at once.
  sgemm(false, true, total, m, d, c, x, d, w, d, 0.0f, phi, m);
  // Subtract |c·x|²/2 and find each row's largest exponent.
  memory::Buffer<float> row_max(Device::cpu(), total);  // tracked: part of the call's workspace
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < total; ++r) {
    const float* xr = x + r * d;
    float norm = 0.0f;
#pragma omp simd reduction(+ : norm)
    for (std::size_t j = 0; j < d; ++j) norm += xr[j] * xr[j];
    const float half = 0.5f * c * c * norm;
    float* p = phi + r * m;
    float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
    for (std::size_t j = 0; j < m; ++j) {
      p[j] -= half;
      mx = p[j] > mx ? p[j] : mx;
    }
    row_max[r] = mx;
  }
  if (role == FavorRole::key) {
    // One stabilizer for all keys of a group: the group's largest exponent.
    for (std::size_t g = 0; g < groups; ++g) {
      float* rm = row_max.data() + g * rows;
      const float mx = *std::max_element(rm, rm + rows);
      std::fill(rm, rm + rows, mx);
    }
  }
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < total; ++r) {
    float* p = phi + r * m;
    const float s = row_max[r];
#pragma omp simd
    for (std::size_t j = 0; j < m; ++j) p[j] = exp_poly(p[j] - s) * inv_sqrt_m;
  }
}

void favor_feature_map_reference(const float* x, const float* w, double* phi, std::size_t groups,
                                 std::size_t rows, std::size_t d, std::size_t m, FavorRole role) {
  const double c = favor_scale(d);
  for (std::size_t g = 0; g < groups; ++g) {
    // Exponents of the group's rows, then the stabilizer, then exp.
    std::vector<double> expo(rows * m);
    for (std::size_t i = 0; i < rows; ++i) {
      const float* xr = x + (g * rows + i) * d;
      double norm = 0.0;
      for (std::size_t j = 0; j < d; ++j) norm += c * xr[j] * c * xr[j];
      for (std::size_t r = 0; r < m; ++r) {
        double dot = 0.0;
        for (std::size_t j = 0; j < d; ++j) dot += static_cast<double>(w[r * d + j]) * c * xr[j];
        expo[i * m + r] = dot - 0.5 * norm;
      }
    }
    const double group_max = rows ? *std::max_element(expo.begin(), expo.end()) : 0.0;
    for (std::size_t i = 0; i < rows; ++i) {
      const double row_max = *std::max_element(expo.begin() + i * m, expo.begin() + (i + 1) * m);
      const double s = role == FavorRole::query ? row_max : group_max;
      for (std::size_t r = 0; r < m; ++r)
        phi[(g * rows + i) * m + r] = std::exp(expo[i * m + r] - s) / std::sqrt(static_cast<double>(m));
    }
  }
}

void orthogonal_gaussian_projection(float* w, std::size_t m, std::size_t d, std::uint64_t seed) {
  const std::uint64_t block_seed = rng::bits(seed, 0), norm_seed = rng::bits(seed, 1);
  std::vector<double> block(d * d);
  for (std::size_t b0 = 0; b0 < m; b0 += d) {
    const std::size_t b = b0 / d;
    for (std::size_t i = 0; i < d * d; ++i) block[i] = gaussian(block_seed, b * d * d + i);
    // Modified Gram–Schmidt on the rows: an orthonormal basis (almost surely full rank).
    for (std::size_t i = 0; i < d; ++i) {
      double* ri = block.data() + i * d;
      for (std::size_t j = 0; j < i; ++j) {
        const double* rj = block.data() + j * d;
        double dot = 0.0;
        for (std::size_t t = 0; t < d; ++t) dot += ri[t] * rj[t];
        for (std::size_t t = 0; t < d; ++t) ri[t] -= dot * rj[t];
      }
      double norm = 0.0;
      for (std::size_t t = 0; t < d; ++t) norm += ri[t] * ri[t];
      norm = std::sqrt(norm);
      for (std::size_t t = 0; t < d; ++t) ri[t] /= norm;
    }
    for (std::size_t i = 0; i < d && b0 + i < m; ++i) {
      const std::size_t row = b0 + i;
      // The length of an independent Gaussian d-vector: a chi(d) row norm, as i.i.d. rows have.
      double length = 0.0;
      for (std::size_t t = 0; t < d; ++t) {
        const double g = gaussian(norm_seed, row * d + t);
        length += g * g;
      }
      length = std::sqrt(length);
      for (std::size_t t = 0; t < d; ++t) w[row * d + t] = static_cast<float>(block[i * d + t] * length);
    }
  }
}

// ---- attention over features

void LinearAttentionShape::validate() const {
  if (batch == 0 || heads == 0 || seq_len == 0 || head_dim == 0 || features == 0 || chunk == 0)
    throw std::invalid_argument("linear_attention: batch, heads, seq_len, head_dim, features and chunk must be positive");
}

std::size_t linear_attention_workspace_elements(const LinearAttentionShape& s) {
  const std::size_t G = s.groups(), F = s.features, d = s.head_dim;
  if (!s.causal) return G * F * d + G * F;
  const std::size_t nc = s.chunks(), C = s.chunk, np = s.padded_len();
  std::size_t n = G * nc * C * C + G * nc * F * d + G * nc * F;
  if (s.padded()) n += 2 * G * np * F + 2 * G * np * d;
  return n;
}

namespace {

// Column sums of `rows` rows of width F per block: out (blocks, F).
void column_sums(const float* x, float* out, std::size_t blocks, std::size_t rows, std::size_t F) {
#pragma omp parallel for schedule(static)
  for (std::size_t b = 0; b < blocks; ++b) {
    float* o = out + b * F;
    std::fill(o, o + F, 0.0f);
    for (std::size_t i = 0; i < rows; ++i) {
      const float* r = x + (b * rows + i) * F;
#pragma omp simd
      for (std::size_t f = 0; f < F; ++f) o[f] += r[f];
    }
  }
}

// x: (groups, chunks, width) becomes its exclusive prefix sum over chunks: slot c holds the sum
// of slots 0..c−1, slot 0 zero.
void exclusive_chunk_scan(float* x, std::size_t groups, std::size_t chunks, std::size_t width) {
  constexpr std::size_t block = 64;
  const std::size_t blocks = (width + block - 1) / block;
#pragma omp parallel for schedule(static)
  for (std::size_t task = 0; task < groups * blocks; ++task) {
    const std::size_t g = task / blocks, e0 = (task % blocks) * block;
    const std::size_t len = std::min(block, width - e0);
    float run[block] = {};
    for (std::size_t c = 0; c < chunks; ++c) {
      float* u = x + (g * chunks + c) * width + e0;
      for (std::size_t e = 0; e < len; ++e) {
        const float t = u[e];
        u[e] = run[e];
        run[e] += t;
      }
    }
  }
}

// (groups, n, width) into (groups, padded, width), rows n.. zero.
void pad_rows(const float* x, float* y, std::size_t groups, std::size_t n, std::size_t padded, std::size_t width) {
#pragma omp parallel for schedule(static)
  for (std::size_t g = 0; g < groups; ++g) {
    std::copy(x + g * n * width, x + (g + 1) * n * width, y + g * padded * width);
    std::fill(y + (g * padded + n) * width, y + (g + 1) * padded * width, 0.0f);
  }
}

float dot(const float* a, const float* b, std::size_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (std::size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void linear_attention_noncausal(const float* phi_q, const float* phi_k, const float* v, float* out,
                                float* workspace, const LinearAttentionShape& s) {
  const std::size_t G = s.groups(), N = s.seq_len, F = s.features, d = s.head_dim;
  float* kv = workspace;         // (G, F, d)
  float* z = kv + G * F * d;     // (G, F)
  sgemm_strided_batched(true, false, F, d, N, 1.0f, phi_k, F, N * F, v, d, N * d, 0.0f, kv, d, F * d, G);
  column_sums(phi_k, z, G, N, F);
  sgemm_strided_batched(false, false, N, d, F, 1.0f, phi_q, F, N * F, kv, d, F * d, 0.0f, out, d, N * d, G);
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < G * N; ++r) {
    const float inv = 1.0f / dot(phi_q + r * F, z + (r / N) * F, F);
    float* o = out + r * d;
#pragma omp simd
    for (std::size_t j = 0; j < d; ++j) o[j] *= inv;
  }
}

void linear_attention_causal(const float* phi_q, const float* phi_k, const float* v, float* out,
                             float* workspace, const LinearAttentionShape& s) {
  const std::size_t G = s.groups(), N = s.seq_len, F = s.features, d = s.head_dim;
  const std::size_t C = s.chunk, nc = s.chunks(), np = s.padded_len(), batch = G * nc;
  float* a = workspace;            // (G, nc, C, C)
  float* state = a + batch * C * C;  // (G, nc, F, d)
  float* z = state + batch * F * d;  // (G, nc, F)
  float* num = out;                // (G, np, d): the numerator, normalized in place
  if (s.padded()) {
    float* pq = z + batch * F;
    float* pk = pq + G * np * F;
    float* pv = pk + G * np * F;
    num = pv + G * np * d;
    pad_rows(phi_q, pq, G, N, np, F);
    pad_rows(phi_k, pk, G, N, np, F);
    pad_rows(v, pv, G, N, np, d);
    phi_q = pq;
    phi_k = pk;
    v = pv;
  }
  // Every chunk of every group is one matrix of a batch: chunk (g, c) starts at row g·np + c·C.
  sgemm_strided_batched(false, true, C, C, F, 1.0f, phi_q, F, C * F, phi_k, F, C * F, 0.0f, a, C, C * C, batch);
#pragma omp parallel for schedule(static)
  for (std::size_t row = 0; row < batch * C; ++row) {
    const std::size_t t = row % C;
    std::fill(a + row * C + t + 1, a + (row + 1) * C, 0.0f);  // key t' > t is later than query t
  }
  sgemm_strided_batched(true, false, F, d, C, 1.0f, phi_k, F, C * F, v, d, C * d, 0.0f, state, d, F * d, batch);
  column_sums(phi_k, z, batch, C, F);
  exclusive_chunk_scan(state, G, nc, F * d);
  exclusive_chunk_scan(z, G, nc, F);
  // num_c = A_c V_c + φ(Q_c) S_c.
  sgemm_strided_batched(false, false, C, d, C, 1.0f, a, C, C * C, v, d, C * d, 0.0f, num, d, C * d, batch);
  sgemm_strided_batched(false, false, C, d, F, 1.0f, phi_q, F, C * F, state, d, F * d, 1.0f, num, d, C * d, batch);
  // out = num / (A_c 1 + φ(Q_c) z_c), rows of the padding dropped.
#pragma omp parallel for schedule(static)
  for (std::size_t row = 0; row < G * np; ++row) {
    const std::size_t g = row / np, i = row % np;
    if (i >= N) continue;
    const std::size_t chunk = row / C;  // (g, c) flattened: rows are chunk-aligned per group
    const float* ar = a + row * C;
    float den = dot(phi_q + row * F, z + chunk * F, F);
    for (std::size_t t = 0; t <= i % C; ++t) den += ar[t];
    const float inv = 1.0f / den;
    const float* nr = num + row * d;
    float* o = out + (g * N + i) * d;
#pragma omp simd
    for (std::size_t j = 0; j < d; ++j) o[j] = nr[j] * inv;
  }
}

}  // namespace

void linear_attention(const float* phi_q, const float* phi_k, const float* v, float* out, float* workspace,
                      const LinearAttentionShape& shape) {
  shape.validate();
  if (shape.causal)
    linear_attention_causal(phi_q, phi_k, v, out, workspace, shape);
  else
    linear_attention_noncausal(phi_q, phi_k, v, out, workspace, shape);
}

void linear_attention_quadratic(const float* phi_q, const float* phi_k, const float* v, double* out,
                                const LinearAttentionShape& s) {
  s.validate();
  const std::size_t N = s.seq_len, F = s.features, d = s.head_dim;
  std::vector<double> num(d);
  for (std::size_t g = 0; g < s.groups(); ++g)
    for (std::size_t i = 0; i < N; ++i) {
      const float* q = phi_q + (g * N + i) * F;
      std::fill(num.begin(), num.end(), 0.0);
      double den = 0.0;
      const std::size_t keys = s.causal ? i + 1 : N;
      for (std::size_t j = 0; j < keys; ++j) {
        const float* k = phi_k + (g * N + j) * F;
        double w = 0.0;
        for (std::size_t f = 0; f < F; ++f) w += static_cast<double>(q[f]) * k[f];
        const float* vj = v + (g * N + j) * d;
        for (std::size_t t = 0; t < d; ++t) num[t] += w * vj[t];
        den += w;
      }
      for (std::size_t t = 0; t < d; ++t) out[(g * N + i) * d + t] = num[t] / den;
    }
}

// ---- Linformer

namespace {

void check_linformer(const AttentionShape& s, std::size_t proj_rows) {
  s.validate();
  if (s.causal)
    throw std::invalid_argument("linformer: causal attention is not supported (the projection along the "
                                "sequence mixes later positions into every projected row)");
  if (s.q_len != s.kv_len || s.kv_len != s.kv_capacity || s.q_offset != 0)
    throw std::invalid_argument("linformer: self-attention only (q_len == kv_len == kv_capacity, q_offset 0)");
  if (proj_rows == 0) throw std::invalid_argument("linformer: proj_rows must be positive");
}

}  // namespace

std::size_t linformer_workspace_elements(const AttentionShape& s, std::size_t proj_rows) {
  const std::size_t G = s.batch * s.heads;
  return 2 * G * proj_rows * s.head_dim + G * s.q_len * proj_rows;
}

void linformer_attention(const float* q, const float* k, const float* v, const float* e, const float* f,
                         float* out, float* workspace, const AttentionShape& s, std::size_t proj_rows) {
  check_linformer(s, proj_rows);
  const std::size_t G = s.batch * s.heads, N = s.q_len, d = s.head_dim, kr = proj_rows;
  float* kp = workspace;         // E·K: (G, kr, d)
  float* vp = kp + G * kr * d;   // F·V: (G, kr, d)
  float* scores = vp + G * kr * d;  // (G, N, kr)
  // E and F are shared by every group: stride 0.
  sgemm_strided_batched(false, false, kr, d, N, 1.0f, e, N, 0, k, d, N * d, 0.0f, kp, d, kr * d, G);
  sgemm_strided_batched(false, false, kr, d, N, 1.0f, f, N, 0, v, d, N * d, 0.0f, vp, d, kr * d, G);
  sgemm_strided_batched(false, true, N, kr, d, s.scale, q, d, N * d, kp, d, kr * d, 0.0f, scores, kr, N * kr, G);
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < G * N; ++r) softmax_row(scores + r * kr, scores + r * kr, kr);
  sgemm_strided_batched(false, false, N, d, kr, 1.0f, scores, kr, N * kr, vp, d, kr * d, 0.0f, out, d, N * d, G);
}

void linformer_attention_reference(const float* q, const float* k, const float* v, const float* e,
                                   const float* f, double* out, const AttentionShape& s, std::size_t proj_rows) {
  check_linformer(s, proj_rows);
  const std::size_t N = s.q_len, d = s.head_dim, kr = proj_rows;
  std::vector<double> kp(kr * d), vp(kr * d), p(kr);
  for (std::size_t g = 0; g < s.batch * s.heads; ++g) {
    const float* kg = k + g * N * d;
    const float* vg = v + g * N * d;
    for (std::size_t r = 0; r < kr; ++r)
      for (std::size_t t = 0; t < d; ++t) {
        double sk = 0.0, sv = 0.0;
        for (std::size_t j = 0; j < N; ++j) {
          sk += static_cast<double>(e[r * N + j]) * kg[j * d + t];
          sv += static_cast<double>(f[r * N + j]) * vg[j * d + t];
        }
        kp[r * d + t] = sk;
        vp[r * d + t] = sv;
      }
    for (std::size_t i = 0; i < N; ++i) {
      const float* qi = q + (g * N + i) * d;
      double mx = -std::numeric_limits<double>::infinity();
      for (std::size_t r = 0; r < kr; ++r) {
        double dot = 0.0;
        for (std::size_t t = 0; t < d; ++t) dot += static_cast<double>(qi[t]) * kp[r * d + t];
        p[r] = static_cast<double>(s.scale) * dot;
        mx = std::max(mx, p[r]);
      }
      double sum = 0.0;
      for (std::size_t r = 0; r < kr; ++r) sum += p[r] = std::exp(p[r] - mx);
      for (std::size_t t = 0; t < d; ++t) {
        double o = 0.0;
        for (std::size_t r = 0; r < kr; ++r) o += p[r] * vp[r * d + t];
        out[(g * N + i) * d + t] = o / sum;
      }
    }
  }
}

}  // namespace aiopt::kernels::cpu
