#include "kernels/cpu/linear_attention_backward.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "core/fault.hpp"
#include "core/memory.hpp"
#include "kernels/cpu/gemm.hpp"

namespace aiopt::kernels::cpu {

namespace {

void check_causal(const LinearAttentionShape& s) {
  s.validate();
  if (!s.causal) throw std::invalid_argument("linear_attention backward: causal shapes only");
}

}  // namespace

std::size_t linear_attention_backward_workspace_elements(const LinearAttentionShape& s) {
  return s.groups() * (s.seq_len * (s.head_dim + 1) + s.features * s.head_dim + s.features);
}

void linear_attention_causal_backward(const float* phi_q, const float* phi_k, const float* v, const float* out,
                                      const float* dout, float* dphi_q, float* dphi_k, float* dv, float* workspace,
                                      const LinearAttentionShape& s) {
  check_causal(s);
  const std::size_t G = s.groups(), N = s.seq_len, F = s.features, d = s.head_dim;
  const std::size_t per_group = linear_attention_backward_workspace_elements(s) / G;
  const float keep_normalizer = fault::active("linear_attention.skip_normalizer_gradient") ? 0.0f : 1.0f;
#pragma omp parallel for schedule(static)
  for (std::size_t grp = 0; grp < G; ++grp) {
    const float* pq = phi_q + grp * N * F;
    const float* pk = phi_k + grp * N * F;
    const float* vg = v + grp * N * d;
    const float* og = out + grp * N * d;
    const float* dog = dout + grp * N * d;
    float* dq = dphi_q + grp * N * F;
    float* dk = dphi_k + grp * N * F;
    float* dvg = dv + grp * N * d;
    float* gs = workspace + grp * per_group;  // (N, d): g_i
    float* cs = gs + N * d;                   // (N): c_i
    float* state = cs + N;                    // (F, d): S_i, then R_j
    float* vec = state + F * d;               // (F): z_i, then r_j
    std::fill(state, state + F * d, 0.0f);
    std::fill(vec, vec + F, 0.0f);
    // Prefix scan: S_i, z_i include row i; den_i = φq_i·z_i is the forward's normalizer.
    for (std::size_t i = 0; i < N; ++i) {
      const float* qi = pq + i * F;
      const float* ki = pk + i * F;
      const float* vi = vg + i * d;
      float den = 0.0f;
      for (std::size_t f = 0; f < F; ++f) {
        float* sf = state + f * d;
#pragma omp simd
        for (std::size_t t = 0; t < d; ++t) sf[t] += ki[f] * vi[t];
        vec[f] += ki[f];
        den += qi[f] * vec[f];
      }
      const float inv = 1.0f / den;
      float* gi = gs + i * d;
      float c = 0.0f;
#pragma omp simd reduction(+ : c)
      for (std::size_t t = 0; t < d; ++t) {
        gi[t] = dog[i * d + t] * inv;
        c += gi[t] * og[i * d + t];
      }
      c *= keep_normalizer;
      cs[i] = c;
      float* dqi = dq + i * F;
      for (std::size_t f = 0; f < F; ++f) {
        const float* sf = state + f * d;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (std::size_t t = 0; t < d; ++t) acc += sf[t] * gi[t];
        dqi[f] = acc - c * vec[f];
      }
    }
    // Suffix scan: R_j, r_j include row j.
    std::fill(state, state + F * d, 0.0f);
    std::fill(vec, vec + F, 0.0f);
    for (std::size_t j = N; j-- > 0;) {
      const float* qj = pq + j * F;
      const float* kj = pk + j * F;
      const float* vj = vg + j * d;
      const float* gj = gs + j * d;
      const float cj = cs[j];
      float* dkj = dk + j * F;
      float* dvj = dvg + j * d;
      std::fill(dvj, dvj + d, 0.0f);
      for (std::size_t f = 0; f < F; ++f) {
        float* rf = state + f * d;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (std::size_t t = 0; t < d; ++t) {
          rf[t] += qj[f] * gj[t];
          acc += rf[t] * vj[t];
          dvj[t] += rf[t] * kj[f];
        }
        vec[f] += cj * qj[f];
        dkj[f] = acc - vec[f];
      }
    }
  }
}

void linear_attention_causal_backward_reference(const float* phi_q, const float* phi_k, const float* v,
                                                const float* dout, double* dphi_q, double* dphi_k, double* dv,
                                                const LinearAttentionShape& s) {
  check_causal(s);
  const std::size_t N = s.seq_len, F = s.features, d = s.head_dim;
  std::fill(dphi_q, dphi_q + s.groups() * N * F, 0.0);
  std::fill(dphi_k, dphi_k + s.groups() * N * F, 0.0);
  std::fill(dv, dv + s.groups() * N * d, 0.0);
  std::vector<double> w(N), out(d);
  for (std::size_t grp = 0; grp < s.groups(); ++grp) {
    const float* pq = phi_q + grp * N * F;
    const float* pk = phi_k + grp * N * F;
    const float* vg = v + grp * N * d;
    const float* dog = dout + grp * N * d;
    for (std::size_t i = 0; i < N; ++i) {
      // The forward of row i: w_ij, den_i, out_i.
      double den = 0.0;
      std::fill(out.begin(), out.end(), 0.0);
      for (std::size_t j = 0; j <= i; ++j) {
        double wij = 0.0;
        for (std::size_t f = 0; f < F; ++f) wij += static_cast<double>(pq[i * F + f]) * pk[j * F + f];
        w[j] = wij;
        den += wij;
        for (std::size_t t = 0; t < d; ++t) out[t] += wij * vg[j * d + t];
      }
      for (std::size_t t = 0; t < d; ++t) out[t] /= den;
      // ∂L/∂out_i = dout_i; out_i = Σ_j w_ij v_j / den_i, so ∂L/∂w_ij = dout_i·(v_j − out_i) / den_i and
      // ∂L/∂v_j += dout_i·w_ij / den_i.
      for (std::size_t j = 0; j <= i; ++j) {
        double dw = 0.0;
        for (std::size_t t = 0; t < d; ++t) {
          const double go = dog[i * d + t] / den;
          dw += go * (vg[j * d + t] - out[t]);
          dv[(grp * N + j) * d + t] += go * w[j];
        }
        for (std::size_t f = 0; f < F; ++f) {
          dphi_q[(grp * N + i) * F + f] += dw * pk[j * F + f];
          dphi_k[(grp * N + j) * F + f] += dw * pq[i * F + f];
        }
      }
    }
  }
}

void elu_feature_map_backward(const float* x, const float* phi, const float* dphi, float* dx, std::size_t n) {
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dphi[i] : dphi[i] * phi[i];
}

void favor_feature_map_backward(const float* x, const float* w, const float* phi, const float* dphi, float* dx,
                                std::size_t rows, std::size_t d, std::size_t m) {
  if (rows == 0 || m == 0) return;
  // c = d^-1/4 as in favor_feature_map.
  const float c = static_cast<float>(std::pow(static_cast<double>(d), -0.25));
  memory::Buffer<float> t(Device::cpu(), rows * m), sums(Device::cpu(), rows);  // tracked workspace
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (std::size_t j = 0; j < m; ++j) {
      t[r * m + j] = dphi[r * m + j] * phi[r * m + j];
      sum += t[r * m + j];
    }
    sums[r] = sum;
  }
  // dx = c·(t W) − c²·x·Σ_r t_r.
  sgemm(false, false, rows, d, m, c, t.data(), m, w, d, 0.0f, dx, d);
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float k = c * c * sums[r];
#pragma omp simd
    for (std::size_t j = 0; j < d; ++j) dx[r * d + j] -= k * x[r * d + j];
  }
}

}  // namespace aiopt::kernels::cpu
