#include "techniques/kv_caching/int8_attention_check.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/error.hpp"
#include "kernels/cpu/gemm.hpp"

namespace aiopt::kv_caching {

AttentionRecorder::AttentionRecorder(const nn::GptWeights& weights, std::size_t batch, std::size_t capacity)
    : weights_(weights), batch_(batch), capacity_(capacity), channels_(weights.config.channels),
      qkv_(weights.config.layers, std::vector<float>(batch * capacity * 3 * weights.config.channels)),
      att_(weights.config.layers, std::vector<float>(batch * capacity * weights.config.channels)),
      filled_(weights.config.layers, 0) {}

void AttentionRecorder::linear(std::size_t layer, nn::BlockLinear which, const float* x, float* y,
                               std::size_t m) const {
  const nn::BlockWeights& b = weights_.blocks[layer];
  const Tensor* weight = nullptr;
  const Tensor* bias = nullptr;
  switch (which) {
    case nn::BlockLinear::attn_qkv: weight = &b.attn_c_attn_weight, bias = &b.attn_c_attn_bias; break;
    case nn::BlockLinear::attn_proj: weight = &b.attn_c_proj_weight, bias = &b.attn_c_proj_bias; break;
    case nn::BlockLinear::mlp_fc: weight = &b.mlp_c_fc_weight, bias = &b.mlp_c_fc_bias; break;
    case nn::BlockLinear::mlp_proj: weight = &b.mlp_c_proj_weight, bias = &b.mlp_c_proj_bias; break;
  }
  const auto n = static_cast<std::size_t>(weight->shape()[0]), k = static_cast<std::size_t>(weight->shape()[1]);
  kernels::cpu::linear(x, weight->data<float>(), bias->data<float>(), y, m, k, n);

  if (which != nn::BlockLinear::attn_qkv && which != nn::BlockLinear::attn_proj) return;
  // Rows are (batch, len) of this call, at positions filled_ .. filled_ + len.
  const std::size_t len = m / batch_, pos0 = filled_[layer];
  if (pos0 + len > capacity_) throw std::logic_error("AttentionRecorder: more positions than its capacity");
  const auto keep = [&](const float* rows, std::size_t width, std::vector<float>& into) {
    for (std::size_t b = 0; b < batch_; ++b)
      std::copy_n(rows + b * len * width, len * width, into.begin() + static_cast<std::ptrdiff_t>((b * capacity_ + pos0) * width));
  };
  if (which == nn::BlockLinear::attn_qkv) keep(y, 3 * channels_, qkv_[layer]);
  if (which == nn::BlockLinear::attn_proj) {
    keep(x, channels_, att_[layer]);
    filled_[layer] += len;
  }
}

// The bound, for one query q (head_dim d) at position p attending the keys and values
// j = 0 .. p, with c = 1/√d. The cache stores each row x (a k_j or a v_j) as s·round(x/s),
// s = max|x|/127 (kernels/cpu/kv_int8.hpp), so each stored value is x + e with |e| <= s/2.
// Write z_j = c·q·k_j, p = softmax(z), o = Σ_j p_j·v_j (exact), and for the int8 keys
// δ_j = c·q·e^k_j, p̂ = softmax(z + δ). As Σ p̂ = Σ p = 1,
//   ô − o = Σ_j p̂_j·e^v_j + Σ_j (p̂_j − p_j)·(v_j − o).
// Keys: |δ_j| <= ε = max_j c·|q|₁·s^k_j/2. With δ̄ = Σ_k p_k·δ_k, ln Σ_k p_k·e^{δ_k} = δ̄ + r with
// 0 <= r <= ε²/2 (Jensen, and Hoeffding's lemma for δ within a range of 2ε), so
// p̂_j/p_j = e^{u_j} with u_j = δ_j − δ̄ − r, |u_j| <= w = 2ε + ε²/2, and
// p̂_j − p_j = p_j·(δ_j − δ̄) + ρ_j, |ρ_j| <= p_j·(w²·e^w/2 + ε²/2) (|e^u − 1 − u| <= u²·e^|u|/2).
// Σ_j p_j·(v_j − o) = 0 removes the δ̄ term, so for each output element x
//   ô_x − o_x = Σ_j p̂_j·e^v_jx + Σ_j Σ_i p_j·(v_jx − o_x)·c·q_i·e^k_ji + Σ_j ρ_j·(v_jx − o_x).
// The first two are sums of the single roundings. Round-to-nearest errors of different values
// are modelled as independent with mean 0 (the standard model of rounding: the fractions x/s
// mod 1 of unrelated activations spread evenly), each within an interval of width s, so
// Hoeffding's inequality bounds each sum, but for a probability δ, by z·sqrt(Σ (weight·width)²),
// z = sqrt(ln(2/δ)/2):
//   values (given the keys' roundings): Σ_j (p̂_j·s^v_j)² <= e^{2w}·Σ_j (p_j·s^v_j)²,
//   keys:   c²·|q|₂²·Σ_j (p_j·|v_jx − o_x|·s^k_j)²,
// and the remainder is at most (w²·e^w/2 + ε²/2)·max_j |v_jx − o_x|. δ = 1e-12 for each sum (over
// a million checked elements, below 1e-5 per case) gives z = sqrt(ln(2e12)/2) = 3.76. The worst
// case over the roundings' signs, Σ_j p̂_j·s^v_j/2 for the values, is what one key's rounding can
// do alone; attention spread over n keys averages the roundings to about 1/√n of it, which is how
// a bound on the logits from that worst case (2·layers/254) sat 44× above the measured error on
// `small`.
// The kernel computes in fp32: scores of d products, an exponential within 2e-7 (exp_poly), sums
// over p + 1 keys, and the dequantization s·q; each costs at most about its count of units in the
// last place u = 2^-24 relative to max_j |v_jx|, so 2·(p + 1 + d + 16)·u·max_j |v_jx| is added
// (twice the count, for margin).
namespace {

constexpr double hoeffding_z = 3.7634;  // sqrt(ln(2 / 1e-12) / 2)
constexpr double unit_roundoff = 0x1p-24;

}  // namespace

AttentionAgreement check_int8_attention(const AttentionRecorder& recorded, const nn::GptConfig& model,
                                        std::size_t batch, std::size_t first, std::size_t end) {
  const std::size_t C = model.channels, H = model.heads, d = C / H, L = model.layers;
  const double c = 1.0 / std::sqrt(static_cast<double>(d));
  AttentionAgreement out;
  std::vector<double> p, sk, sv, o(d), key_sum(d), spread(d), largest(d);
  for (std::size_t l = 0; l < L; ++l) {
    if (recorded.positions(l) < end) throw std::logic_error("kv_caching: fewer positions recorded than checked");
    const std::size_t capacity = recorded.qkv(l).size() / (batch * 3 * C);
    const float* qkv = recorded.qkv(l).data();
    const float* att = recorded.attention(l).data();
    for (std::size_t b = 0; b < batch; ++b) {
      for (std::size_t h = 0; h < H; ++h) {
        const auto row = [&](std::size_t pos, std::size_t part) { return qkv + (b * capacity + pos) * 3 * C + part * C + h * d; };
        // Each row's int8 step, as the quantizer sets it from the unquantized row.
        sk.assign(end, 0.0);
        sv.assign(end, 0.0);
        for (std::size_t j = 0; j < end; ++j)
          for (std::size_t i = 0; i < d; ++i) {
            sk[j] = std::max(sk[j], std::fabs(static_cast<double>(row(j, 1)[i])) / 127.0);
            sv[j] = std::max(sv[j], std::fabs(static_cast<double>(row(j, 2)[i])) / 127.0);
          }
        for (std::size_t pos = first; pos < end; ++pos) {
          const float* q = row(pos, 0);
          const std::size_t keys = pos + 1;
          double q1 = 0.0, q2 = 0.0;
          for (std::size_t i = 0; i < d; ++i) {
            q1 += std::fabs(static_cast<double>(q[i]));
            q2 += static_cast<double>(q[i]) * q[i];
          }
          p.assign(keys, 0.0);
          double top = -INFINITY, eps = 0.0;
          for (std::size_t j = 0; j < keys; ++j) {
            double z = 0.0;
            for (std::size_t i = 0; i < d; ++i) z += static_cast<double>(q[i]) * row(j, 1)[i];
            p[j] = c * z;
            top = std::max(top, p[j]);
            eps = std::max(eps, c * q1 * sk[j] / 2.0);
          }
          double total = 0.0;
          for (std::size_t j = 0; j < keys; ++j) total += (p[j] = std::exp(p[j] - top));
          double value_sum = 0.0;
          std::fill(o.begin(), o.end(), 0.0);
          std::fill(largest.begin(), largest.end(), 0.0);
          for (std::size_t j = 0; j < keys; ++j) {
            p[j] /= total;
            value_sum += (p[j] * sv[j]) * (p[j] * sv[j]);
            for (std::size_t x = 0; x < d; ++x) {
              const double v = row(j, 2)[x];
              o[x] += p[j] * v;
              largest[x] = std::max(largest[x], std::fabs(v));
            }
          }
          std::fill(key_sum.begin(), key_sum.end(), 0.0);
          std::fill(spread.begin(), spread.end(), 0.0);
          for (std::size_t j = 0; j < keys; ++j)
            for (std::size_t x = 0; x < d; ++x) {
              const double dv = std::fabs(row(j, 2)[x] - o[x]);
              key_sum[x] += (p[j] * dv * sk[j]) * (p[j] * dv * sk[j]);
              spread[x] = std::max(spread[x], dv);
            }
          const double w = 2.0 * eps + eps * eps / 2.0;
          const double remainder = w * w * std::exp(w) / 2.0 + eps * eps / 2.0;
          const double fp32 = 2.0 * static_cast<double>(keys + d + 16) * unit_roundoff;
          const float* got = att + (b * capacity + pos) * C + h * d;
          for (std::size_t x = 0; x < d; ++x) {
            const double bound = hoeffding_z * (std::exp(w) * std::sqrt(value_sum) + c * std::sqrt(q2 * key_sum[x])) +
                                 remainder * spread[x] + fp32 * largest[x];
            const double error = std::fabs(got[x] - o[x]);
            if (!(error <= bound)) {
              std::ostringstream m;
              m << "kv_caching: the int8 cache's attention output of layer " << l << ", position " << pos
                << " (sequence " << b << ", head " << h << ", element " << x << ") is off by " << error
                << " from exact attention over the unquantized keys and values, beyond the bound " << bound
                << " that the int8 rounding of the cached rows allows";
              throw CheckFailed(m.str());
            }
            if (bound > 0) out.max_error_of_bound = std::max(out.max_error_of_bound, error / bound);
            if (largest[x] > 0) out.max_rel_error = std::max(out.max_rel_error, error / largest[x]);
          }
        }
      }
    }
  }
  return out;
}

}  // namespace aiopt::kv_caching
