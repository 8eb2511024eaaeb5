#pragma once
// The backward of causal linear attention and of its two feature maps on the CPU, for training
// the GPT with linear attention (nn/training.hpp, TrainAttention::linear_elu and ::performer). The
// forward is kernels/cpu/linear_attention.hpp. fp32 in and out; each kernel has a plain float64
// reference beside it. Layouts as there: φ(q), φ(k): (groups, N, F); v, out, dout: (groups, N, d).
//
// Per group, with w_ij = φq_i·φk_j for j <= i, den_i = Σ_j w_ij and out_i = Σ_j w_ij v_j / den_i,
// the loss L reaches w through out. With g_i = dout_i / den_i and c_i = dout_i·out_i / den_i (the
// normalizer's term, ∂L/∂den_i = −c_i):
//   ∂L/∂w_ij = g_i·v_j − c_i                                         (j <= i)
//   dφq_i = Σ_{j<=i} (g_i·v_j − c_i) φk_j = S_i g_i − c_i z_i,         S_i = Σ_{j<=i} φk_j v_jᵀ, z_i = Σ_{j<=i} φk_j
//   dφk_j = Σ_{i>=j} (g_i·v_j − c_i) φq_i = R_j v_j − r_j,             R_j = Σ_{i>=j} φq_i g_iᵀ, r_j = Σ_{i>=j} c_i φq_i
//   dv_j  = Σ_{i>=j} w_ij g_i = R_jᵀ φk_j
// so the backward is two scans over the sequence, a prefix (S, z) and a suffix (R, r), each
// O(N·F·d) like the forward; no N×N matrix is formed.
#include <cstddef>

#include "kernels/cpu/linear_attention.hpp"

namespace aiopt::kernels::cpu {

// Floats of caller-owned workspace linear_attention_causal_backward needs: per group g_i (N, d),
// c_i (N) and one F×d state with its F-vector (S, z, then reused for R, r).
std::size_t linear_attention_backward_workspace_elements(const LinearAttentionShape& shape);

// The gradients of causal linear_attention: dphi_q, dphi_k (groups, N, F) and dv (groups, N, d)
// are written. out is the forward's output. Threads over groups. Throws std::invalid_argument for
// a non-causal shape (the GPT attends causally; the non-causal backward is not needed).
// The fault "linear_attention.skip_normalizer_gradient" (tests only, core/fault.hpp) drops the
// normalizer's terms (c_i above), the gradient one gets by treating den_i as a constant.
void linear_attention_causal_backward(const float* phi_q, const float* phi_k, const float* v, const float* out,
                                      const float* dout, float* dphi_q, float* dphi_k, float* dv, float* workspace,
                                      const LinearAttentionShape& shape);

// Float64 from the quadratic form's chain rule (w_ij for every pair, no scans): the tests'
// reference. Causal shapes only.
void linear_attention_causal_backward_reference(const float* phi_q, const float* phi_k, const float* v,
                                                const float* dout, double* dphi_q, double* dphi_k, double* dv,
                                                const LinearAttentionShape& shape);

// φ(x) = elu(x) + 1: dx = dphi · (1 for x > 0, e^x = φ(x) otherwise). x, phi, dphi, dx: (n).
void elu_feature_map_backward(const float* x, const float* phi, const float* dphi, float* dx, std::size_t n);

// FAVOR+ (favor_feature_map): with u = c·x, φ_r = exp(w_r·u − |u|²/2 − s) / √m, so
//   ∂φ_r/∂u = φ_r (w_r − u)  and  dx = c (t W − u Σ_r t_r),  t_r = dphi_r φ_r.
// The stabilizer s is held constant: it is a per-query-row or per-group-of-keys constant that
// multiplies numerator and denominator of every out_i alike, so out does not depend on it and
// this is out's exact gradient (see favor_feature_map; s still depends on x through the max, but
// that path contributes exactly zero to ∂out/∂x). x: (groups·rows, d); w: (m, d); phi, dphi:
// (groups·rows, m); dx (groups·rows, d) is written.
void favor_feature_map_backward(const float* x, const float* w, const float* phi, const float* dphi, float* dx,
                                std::size_t rows, std::size_t d, std::size_t m);

}  // namespace aiopt::kernels::cpu
