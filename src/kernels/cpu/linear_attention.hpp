#pragma once
// Linear attention on the CPU (TECHNIQUES.md §8): softmax(q·kᵀ)·v replaced by a kernel
// φ(q)·φ(k)ᵀ whose feature maps let the product be reassociated, so no N×N matrix is formed:
//   out_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / φ(q_i)ᵀ (Σ_j φ(k_j))   (Katharopoulos et al. 2020, eq. 5)
// with j over all keys, or causal j <= i by prefix sums over the sequence. Also Linformer
// (Wang et al. 2020), which keeps the softmax but projects K and V along the sequence to k rows.
// All fp32 in and out; every fast path has a plain float64 reference beside it.
//
// Layouts, row-major, `groups` = batch·heads:
//   x (queries or keys), v, out: (groups, N, d)      — (B, H, N, d) of kernels/attention_shape.hpp
//   φ(q), φ(k):                   (groups, N, F)      — F features per row
#include <cstddef>
#include <cstdint>

#include "kernels/attention_shape.hpp"

namespace aiopt::kernels::cpu {

// ---- feature maps

// φ(x) = elu(x) + 1: x + 1 for x > 0, e^x otherwise (Katharopoulos et al. 2020, eq. 7); positive,
// so every normalizer is positive. x, phi: (n).
void elu_feature_map(const float* x, float* phi, std::size_t n);
void elu_feature_map_reference(const float* x, double* phi, std::size_t n);

// FAVOR+ positive random features (Choromanski et al. 2021, eq. 7 and Lemma 1): with x scaled by
// c = d^-1/4 so that E[φ(q)·φ(k)] = exp(q·k / sqrt(d)), the softmax kernel of attention,
//   φ(x)_r = exp(w_r·(c·x) − |c·x|²/2 − stabilizer) / sqrt(m),   r = 0..m−1.
// The stabilizer keeps exp in range and cancels in out's ratio (it scales numerator and
// denominator alike): for queries the row's own largest exponent, for keys the largest over the
// whole (b, h) group (one constant for all keys of the group, as the kernel must be shared).
// x: (groups, rows, d); w: (m, d); phi: (groups, rows, m).
enum class FavorRole { query, key };
void favor_feature_map(const float* x, const float* w, float* phi, std::size_t groups, std::size_t rows,
                       std::size_t d, std::size_t m, FavorRole role);
void favor_feature_map_reference(const float* x, const float* w, double* phi, std::size_t groups,
                                 std::size_t rows, std::size_t d, std::size_t m, FavorRole role);

// The orthogonal random projection of FAVOR+ (w: (m, d)), drawn from `seed`: blocks of d rows
// that are orthonormal (Gram–Schmidt of a Gaussian block), each row then scaled by the norm of
// an independent Gaussian d-vector, so rows are marginally N(0, I) and exactly orthogonal
// within a block ("ORF", Choromanski et al. 2021, section 2.4). m need not be a multiple of d.
void orthogonal_gaussian_projection(float* w, std::size_t m, std::size_t d, std::uint64_t seed);

// ---- attention over features

struct LinearAttentionShape {
  std::size_t batch = 1;
  std::size_t heads = 1;
  std::size_t seq_len = 0;   // N
  std::size_t head_dim = 0;  // d, of v and out
  std::size_t features = 0;  // F, of φ(q) and φ(k)
  bool causal = false;
  std::size_t chunk = 64;    // causal: rows per chunk of the chunked prefix sum

  std::size_t groups() const { return batch * heads; }
  std::size_t chunks() const { return (seq_len + chunk - 1) / chunk; }
  std::size_t padded_len() const { return chunks() * chunk; }  // N rounded up to whole chunks
  // Causal with N not a multiple of chunk: inputs are copied into zero-padded workspace rows.
  bool padded() const { return causal && padded_len() != seq_len; }
  // Throws std::invalid_argument when a size is zero.
  void validate() const;
};

// Floats of caller-owned workspace linear_attention needs:
//   non-causal: Σ_j φ(k_j) v_jᵀ (groups, F, d) and Σ_j φ(k_j) (groups, F);
//   causal: per chunk the masked block φ(Q_c)φ(K_c)ᵀ (groups, chunks, C, C), the state before the
//   chunk S_c (groups, chunks, F, d) and z_c (groups, chunks, F); padded: also φ(q), φ(k) (groups,
//   padded_len, F), v and the numerator (groups, padded_len, d).
std::size_t linear_attention_workspace_elements(const LinearAttentionShape& shape);

// Non-causal: KV = φ(K)ᵀV and z = φ(K)ᵀ1 per group, out = φ(Q)·KV / φ(Q)·z: batched GEMMs,
// O(N·F·d). Causal, chunked (all chunks at once, so every product is one batched GEMM):
//   A_c = mask(φ(Q_c)φ(K_c)ᵀ) (lower triangle with the diagonal), U_c = φ(K_c)ᵀV_c,
//   S_c = Σ_{c'<c} U_c' and z_c = Σ_{c'<c} φ(K_c')ᵀ1 (an exclusive scan over chunks),
//   out_c = (A_c V_c + φ(Q_c) S_c) / (A_c 1 + φ(Q_c) z_c),
// which is the recurrence S_i = S_{i−1} + φ(k_i) v_iᵀ evaluated a chunk at a time.
void linear_attention(const float* phi_q, const float* phi_k, const float* v, float* out, float* workspace,
                      const LinearAttentionShape& shape);

// The plain quadratic form of the same kernel, float64 throughout: w_ij = φ(q_i)·φ(k_j) for all
// j (or j <= i when causal), out_i = Σ_j w_ij v_j / Σ_j w_ij. O(N²·(F + d)): the tests' reference.
void linear_attention_quadratic(const float* phi_q, const float* phi_k, const float* v, double* out,
                                const LinearAttentionShape& shape);

// ---- Linformer

// out = softmax(scale · Q (E K)ᵀ) (F V) per (b, h): K and V projected along the sequence to
// `proj_rows` rows by e, f: (proj_rows, N), shared by every (b, h) (Wang et al. 2020, eq. 7).
// Non-causal self-attention only (q_len == kv_len == kv_capacity, q_offset 0): a projection
// along the sequence mixes later positions into every row, so no causal mask applies; a causal
// shape throws std::invalid_argument.
std::size_t linformer_workspace_elements(const AttentionShape& shape, std::size_t proj_rows);
void linformer_attention(const float* q, const float* k, const float* v, const float* e, const float* f,
                         float* out, float* workspace, const AttentionShape& shape, std::size_t proj_rows);
void linformer_attention_reference(const float* q, const float* k, const float* v, const float* e,
                                   const float* f, double* out, const AttentionShape& shape,
                                   std::size_t proj_rows);

}  // namespace aiopt::kernels::cpu
