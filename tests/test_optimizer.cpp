// Optimizers: the AdamW kernel against its double reference and against a hand-computed value;
// SGD with momentum against its formula; sum_of_squares' determinism across thread counts; and
// nn::Optimizer's clipping, weight-decay selection, state and errors, and a trainable subset
// with the rest frozen; and ([gpu]) the CUDA adamw_update, sgd_update and sum_of_squares
// (kernels/cuda/optimizer.hpp) against the CPU's.
//
// Tolerances, and why:
//   adamw fast vs reference: 1e-6 + 1e-5·|p| per weight. The fast path rounds every fp32 op;
//   the update lr·m̂/(sqrt(v̂) + eps) has |m̂/sqrt(v̂)| <= ~3 here, so its fp32 error is a few ulps
//   of lr·3 = 3e-3 (~1e-9), and p itself (|p| < 1) rounds to 6e-8.
//   hand-computed 2-step value: 1e-7 absolute (the same fp32 rounding, values of order 1).
//   SGD: 1e-6 absolute (two fp32 multiply-adds on values of order 1).
//   clipped vs pre-scaled: 1e-6 + 1e-5·|p| (the two fold the factor in at different points, so
//   their fp32 roundings differ by an ulp or so).
#include <catch2/catch.hpp>

#include <cmath>
#include <utility>
#include <cstring>
#include <omp.h>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/optimizer.hpp"
#include "nn/optimizer.hpp"
#include "nn/weights.hpp"
#include "support/error_metric.hpp"
#include "support/random.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "kernels/cuda/optimizer.hpp"
#include "support/device_copy.hpp"
#endif

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
using aiopt::test::random_vector;

namespace {

nn::GptConfig tiny_config() { return {.layers = 1, .channels = 16, .heads = 2, .context = 8, .vocab = 32}; }

// Gradients of the config's shapes filled from `seed` in [-1, 1), each tensor
// its own stream.
nn::GptWeights random_grads(const nn::GptConfig& config, std::uint64_t seed) {
  auto g = nn::GptWeights::allocate(config, Device::cpu());
  std::uint64_t k = 0;
  for (auto& [name, t] : g.named()) t->fill_uniform(seed * 1000 + k++, -1.0f, 1.0f);
  return g;
}

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); }

void require_close(const std::vector<float>& got, const std::vector<float>& want, float atol, float rtol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("index " << i << ": got " << got[i] << ", want " << want[i]);
    // Written so that a NaN fails.
    REQUIRE(std::abs(got[i] - want[i]) <= atol + rtol * std::abs(want[i]));
  }
}

}  // namespace

TEST_CASE("adamw_update matches the double reference on random inputs", "[optimizer]") {
  const std::size_t n = 10007;  // not a multiple of any vector width
  for (std::int64_t step : {1, 2, 10, 1000}) {
    auto p = random_vector(n, 1), g = random_vector(n, 2), m = random_vector(n, 3, -0.1f, 0.1f),
         v = random_vector(n, 4, 0.0f, 0.01f);
    auto p2 = p, m2 = m, v2 = v;
    const cpu::AdamW h{3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step};
    cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), n, h, 0.7f);
    cpu::adamw_update_reference(p2.data(), g.data(), m2.data(), v2.data(), n, h, 0.7f);
    INFO("step " << step);
    require_close(p, p2, 1e-6f, 1e-5f);
    require_close(m, m2, 1e-7f, 1e-6f);
    require_close(v, v2, 1e-9f, 1e-6f);
  }
}

TEST_CASE("adamw_update gives the hand-computed value after two steps", "[optimizer]") {
  // One weight p0 = 0.5, grads 0.2 then -0.1 (scale 2: 0.4 then -0.2), lr 0.01,
  // b1 0.9, b2 0.99, eps 1e-8, wd 0.1. By hand:
  //   t=1: m = 0.04, v = 0.0016; m̂ = 0.04/0.1 = 0.4, v̂ = 0.0016/0.01 = 0.16,
  //   sqrt = 0.4
  //        p = 0.5 − 0.01·(0.4/(0.4 + 1e-8) + 0.1·0.5) = 0.5 −
  //        0.01·(0.999999975 + 0.05) = 0.48950000025
  //   t=2: m = 0.036 − 0.02 = 0.016; v = 0.001584 + 0.0004 = 0.001984
  //        m̂ = 0.016/0.19 = 0.0842105263; v̂ = 0.001984/0.0199 = 0.0996984925,
  //        sqrt = 0.3157506809 p = 0.48950000025 −
  //        0.01·(0.0842105263/0.3157506809 + 0.1·0.48950000025)
  //          = 0.48950000025 − 0.01·(0.2666994 + 0.04895) = 0.486343506
  float p = 0.5f, m = 0.0f, v = 0.0f;
  const float g1 = 0.2f, g2 = -0.1f;
  cpu::AdamW h{0.01f, 0.9f, 0.99f, 1e-8f, 0.1f, 1};
  cpu::adamw_update(&p, &g1, &m, &v, 1, h, 2.0f);
  CHECK(std::abs(p - 0.48950000025f) <= 1e-7f);
  h.step = 2;
  cpu::adamw_update(&p, &g2, &m, &v, 1, h, 2.0f);
  CHECK(std::abs(m - 0.016f) <= 1e-7f);
  CHECK(std::abs(v - 0.001984f) <= 1e-8f);
  CHECK(std::abs(p - 0.486343506f) <= 1e-7f);
}

TEST_CASE("sgd_update follows buf = momentum·buf + g and p -= lr·(buf + wd·p)", "[optimizer]") {
  const std::size_t n = 1003;
  auto p = random_vector(n, 11), g = random_vector(n, 12), buf = random_vector(n, 13, -0.5f, 0.5f);
  const auto p0 = p, buf0 = buf;
  const float lr = 0.05f, mom = 0.9f, wd = 0.01f, scale = 0.5f;
  cpu::sgd_update(p.data(), g.data(), buf.data(), n, lr, mom, wd, scale);
  std::vector<float> want_p(n), want_buf(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double b = double(mom) * buf0[i] + double(scale) * g[i];
    want_buf[i] = float(b);
    want_p[i] = float(p0[i] - double(lr) * (b + double(wd) * p0[i]));
  }
  require_close(buf, want_buf, 1e-6f, 0.0f);
  require_close(p, want_p, 1e-6f, 0.0f);
}

TEST_CASE(
    "sum_of_squares is bit-identical for 1 and 2 threads and close to "
    "the double sum",
    "[optimizer]") {
  const std::size_t n = 100003;  // many chunks and a ragged tail
  const auto x = random_vector(n, 21);
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = cpu::sum_of_squares(x.data(), n);
  omp_set_num_threads(2);
  const double two = cpu::sum_of_squares(x.data(), n);
  omp_set_num_threads(before);
  CHECK(std::memcmp(&one, &two, sizeof(double)) == 0);
  double plain = 0.0;
  for (float v : x) plain += double(v) * v;
  // Only the summation order differs: relative 1e-12 covers n·2^-53 with a wide
  // margin.
  CHECK(std::abs(one - plain) <= 1e-12 * plain);
  CHECK(cpu::sum_of_squares(x.data(), 0) == 0.0);
}

TEST_CASE(
    "Optimizer: clipping equals updating with gradients pre-scaled by "
    "clip/norm",
    "[optimizer]") {
  const auto config = tiny_config();
  auto params_a = nn::GptWeights::initialize(config, 5, Device::cpu());
  auto params_b = nn::GptWeights::initialize(config, 5, Device::cpu());
  const auto grads = random_grads(config, 7);
  const double norm = nn::global_norm(grads);
  REQUIRE(norm > 1.0);  // so that clip_norm = 0.5 clips

  nn::OptimizerConfig clipped_cfg;
  clipped_cfg.clip_norm = 0.5f;
  nn::Optimizer clipped(clipped_cfg, params_a);
  const auto info = clipped.step(params_a, grads, 1e-2f, 1.0f);
  CHECK(info.clipped);
  CHECK(std::abs(info.grad_norm - norm) <= 1e-12 * norm);

  nn::OptimizerConfig plain_cfg;
  plain_cfg.clip_norm = 0.0f;
  nn::Optimizer plain(plain_cfg, params_b);
  const auto unclipped = plain.step(params_b, grads, 1e-2f, static_cast<float>(0.5 / norm));
  CHECK_FALSE(unclipped.clipped);

  auto a = params_a.named();
  auto b = params_b.named();
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    require_close(values(*a[i].second), values(*b[i].second), 1e-6f, 1e-5f);
  }
  auto sa = clipped.state();
  auto sb = plain.state();
  REQUIRE(sa.size() == sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    INFO(sa[i].first);
    require_close(values(*sa[i].second), values(*sb[i].second), 1e-7f, 1e-5f);
  }
}

TEST_CASE("Optimizer: weight decay shrinks matrices, never biases or LayerNorm", "[optimizer]") {
  const auto config = tiny_config();
  for (auto kind : {nn::OptimizerKind::adamw, nn::OptimizerKind::sgd}) {
    INFO(std::string(nn::to_string(kind)));
    auto params = nn::GptWeights::initialize(config, 3, Device::cpu());
    // A nonzero bias, to see that decay leaves it alone.
    params.blocks[0].attn_c_attn_bias.fill_uniform(9, 0.5f, 1.0f);
    const auto bias0 = values(params.blocks[0].attn_c_attn_bias);
    const auto ln0 = values(params.blocks[0].ln_1_weight);
    const auto w0 = values(params.blocks[0].mlp_c_fc_weight);
    auto grads = nn::GptWeights::allocate(config, Device::cpu());
    for (auto& [name, t] : grads.named()) std::memset(t->data<float>(), 0, t->bytes());

    nn::OptimizerConfig cfg;
    cfg.kind = kind;
    cfg.weight_decay = 0.1f;
    nn::Optimizer opt(cfg, params);
    const float lr = 0.01f;
    const auto info = opt.step(params, grads, lr);
    CHECK(info.grad_norm == 0.0);
    CHECK(values(params.blocks[0].attn_c_attn_bias) == bias0);
    CHECK(values(params.blocks[0].ln_1_weight) == ln0);
    // With zero gradients and zero state both optimizers leave only p −=
    // lr·wd·p.
    std::vector<float> want(w0.size());
    for (std::size_t i = 0; i < w0.size(); ++i) want[i] = w0[i] - lr * 0.1f * w0[i];
    require_close(values(params.blocks[0].mlp_c_fc_weight), want, 1e-9f, 1e-6f);
    CHECK(opt.steps_taken() == 1);
  }
}

TEST_CASE("Optimizer: state tensors are zeroed and named by kind, slot and parameter", "[optimizer]") {
  const auto config = tiny_config();
  auto params = nn::GptWeights::initialize(config, 1, Device::cpu());
  const std::size_t count = params.named().size();
  nn::Optimizer adam({}, params);
  auto s = adam.state();
  REQUIRE(s.size() == 2 * count);
  CHECK(s[0].first == "adamw.m.wte");
  CHECK(s[count].first == "adamw.v.wte");
  bool found = false;
  for (auto& [name, t] : s) {
    found = found || name == "adamw.m.h.0.attn.c_attn.weight";
    for (float x : values(*t)) REQUIRE(x == 0.0f);
  }
  CHECK(found);
  nn::OptimizerConfig sgd_cfg;
  sgd_cfg.kind = nn::OptimizerKind::sgd;
  nn::Optimizer sgd(sgd_cfg, params);
  REQUIRE(sgd.state().size() == count);
  CHECK(sgd.state()[0].first == "sgd.momentum.wte");
}

TEST_CASE("Optimizer: mismatched gradients and unknown names are input errors", "[optimizer]") {
  const auto config = tiny_config();
  auto params = nn::GptWeights::initialize(config, 1, Device::cpu());
  nn::Optimizer opt({}, params);
  auto other = config;
  other.channels = 32;
  const auto wrong = random_grads(other, 1);
  CHECK_THROWS_AS(opt.step(params, wrong, 1e-3f), InputError);
  CHECK(opt.steps_taken() == 0);

  CHECK(nn::parse_optimizer("adamw") == nn::OptimizerKind::adamw);
  CHECK(nn::parse_optimizer("sgd") == nn::OptimizerKind::sgd);
  CHECK_THROWS_AS(nn::parse_optimizer("adam"), InputError);
  CHECK_THROWS_WITH(nn::parse_optimizer("adamv"),
                    Catch::Contains("did you mean 'adamw'") && Catch::Contains("adamw, sgd"));
}

TEST_CASE("Optimizer: a subset trains as in the full run and the rest stays frozen", "[optimizer]") {
  // The query-key-value projections and the final LayerNorm trainable, the rest frozen. Without
  // clipping each tensor's update reads its own gradient alone, so the trained tensors must match
  // the full run's bit for bit, the frozen ones their start, for AdamW and SGD.
  const auto config = tiny_config();
  const auto trained = [](const std::string& name) { return name.ends_with("c_attn.weight") || name.starts_with("ln_f"); };
  for (const auto kind : {nn::OptimizerKind::adamw, nn::OptimizerKind::sgd}) {
    INFO(nn::to_string(kind));
    nn::OptimizerConfig cfg;
    cfg.kind = kind;
    cfg.clip_norm = 0.0f;
    auto full = nn::GptWeights::initialize(config, 1, Device::cpu());
    auto part = nn::GptWeights::initialize(config, 1, Device::cpu());
    const auto start = nn::GptWeights::initialize(config, 1, Device::cpu());
    nn::Optimizer full_opt(cfg, full);
    std::vector<std::pair<std::string, const Tensor*>> chosen;
    std::size_t chosen_numel = 0;
    for (const auto& [name, t] : std::as_const(part).named())
      if (trained(name)) {
        chosen.emplace_back(name, t);
        chosen_numel += static_cast<std::size_t>(t->numel());
      }
    REQUIRE(chosen.size() == 3);  // c_attn.weight of the one block, ln_f weight and bias
    nn::Optimizer part_opt(cfg, chosen);
    // State for the trained tensors alone: one or two fp32 slots per weight.
    const std::size_t slots = kind == nn::OptimizerKind::adamw ? 2 : 1;
    CHECK(part_opt.state_bytes() == slots * 4 * chosen_numel);
    CHECK(full_opt.state_bytes() == slots * 4 * config.parameter_count());
    for (std::uint64_t step = 0; step < 3; ++step) {
      const auto grads = random_grads(config, 10 + step);
      full_opt.step(full, grads, 1e-2f);
      std::vector<nn::Trainable> list;
      for (const auto& t : nn::trainables(part, grads))
        if (trained(t.name)) list.push_back(t);
      part_opt.step(list, 1e-2f);
    }
    const auto f = full.named(), p = part.named();
    const auto s0 = start.named();
    for (std::size_t i = 0; i < p.size(); ++i) {
      INFO(p[i].first);
      CHECK(values(*p[i].second) == values(trained(p[i].first) ? *f[i].second : *s0[i].second));
    }
  }
}

TEST_CASE("Optimizer: a subset's clipping norm is its own gradient's", "[optimizer]") {
  const auto config = tiny_config();
  auto params = nn::GptWeights::initialize(config, 1, Device::cpu());
  const auto grads = random_grads(config, 3);
  std::vector<nn::Trainable> list;
  std::vector<std::pair<std::string, const Tensor*>> chosen;
  double sum = 0.0;
  for (const auto& t : nn::trainables(params, grads))
    if (t.name.starts_with("h.0.mlp")) {
      list.push_back(t);
      chosen.emplace_back(t.name, t.weight);
      for (float g : values(*t.grad)) sum += static_cast<double>(g) * g;
    }
  nn::Optimizer opt({}, chosen);
  const nn::OptimizerStep info = opt.step(list, 1e-3f);
  CHECK(info.grad_norm == Approx(std::sqrt(sum)).epsilon(1e-12));
  CHECK(info.clipped);  // the default clip norm 1 is far below this norm
  // A list that does not match the state is an input error.
  list.pop_back();
  CHECK_THROWS_WITH(opt.step(list, 1e-3f), Catch::Contains("tensors to update"));
}

// ---- the CUDA optimizers against the CPU's. Tolerances, with u = 2^-24: a handful of roundings
// and one sqrtf (2 ulp), stated at each check.

#ifdef AIOPT_HAVE_CUDA

namespace {
constexpr double u = aiopt::test::fp32_unit_roundoff;
using aiopt::test::download, aiopt::test::upload;
using aiopt::test::outside;
namespace gpu = aiopt::kernels::cuda;
}  // namespace

TEST_CASE("cuda adamw_update, sgd_update and sum_of_squares match the CPU", "[optimizer][gpu]") {
  const std::size_t n = 10000;
  const auto p0 = random_vector(n, 60), g = random_vector(n, 61), m0 = random_vector(n, 62);
  const auto v0 = random_vector(n, 63, 0.01f, 1.0f);
  const float grad_scale = 0.5f;
  cpu::AdamW h;
  h.lr = 3e-3f;
  h.weight_decay = 0.1f;
  h.step = 7;

  auto p = p0, m = m0, v = v0;
  cpu::adamw_update_reference(p.data(), g.data(), m.data(), v.data(), n, h, grad_scale);
  auto d_p = upload(p0), d_g = upload(g), d_m = upload(m0), d_v = upload(v0);
  gpu::adamw_update(d_p.data(), d_g.data(), d_m.data(), d_v.data(), n, h, grad_scale, nullptr);
  // m, v: two products and a sum (fp32, maybe fused): 4u of |b·m| + |(1 − b)·g|. p: the update
  // ratio m̂/(√v̂ + eps) within 16u of its absolute terms (m's and v's errors, two divisions by the
  // corrections, rounded from double on the host, a sqrtf and a division), times lr, plus the
  // final subtraction's 2u of |p|.
  std::vector<double> m_tol(n), v_tol(n), p_tol(n);
  const double bc1 = 1.0 - std::pow(double{h.beta1}, 7.0), bc2 = 1.0 - std::pow(double{h.beta2}, 7.0);
  for (std::size_t i = 0; i < n; ++i) {
    const double gi = grad_scale * g[i];
    const double m_abs = h.beta1 * std::abs(m0[i]) + (1.0 - h.beta1) * std::abs(gi);
    const double v_abs = h.beta2 * v0[i] + (1.0 - h.beta2) * gi * gi;
    m_tol[i] = 4.0 * u * m_abs;
    v_tol[i] = 4.0 * u * v_abs;
    const double ratio_abs = (m_abs / bc1) / (std::sqrt(v[i] / bc2) + h.eps);
    p_tol[i] = 4.0 * u * std::abs(p0[i]) + 16.0 * u * h.lr * (ratio_abs + h.weight_decay * std::abs(p0[i]));
  }
  CHECK(outside(download(d_m), m, m_tol) == 0);
  CHECK(outside(download(d_v), v, v_tol) == 0);
  CHECK(outside(download(d_p), p, p_tol) == 0);

  const float lr = 0.05f, momentum = 0.9f, wd = 0.01f;
  auto sp = p0, buf = m0;
  cpu::sgd_update(sp.data(), g.data(), buf.data(), n, lr, momentum, wd, grad_scale);
  auto d_sp = upload(p0), d_buf = upload(m0);
  gpu::sgd_update(d_sp.data(), d_g.data(), d_buf.data(), n, lr, momentum, wd, grad_scale, nullptr);
  // buf: two products and a sum, fused or not, either side: 4u of the absolute terms. p: the
  // update lr·(buf + wd·p) grouped differently on the two sides: 4u of its absolute terms, plus
  // 2u of |p| for the subtraction.
  std::vector<double> buf_tol(n), sp_tol(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double b_abs = momentum * std::abs(m0[i]) + grad_scale * std::abs(g[i]);
    buf_tol[i] = 4.0 * u * b_abs;
    sp_tol[i] = 4.0 * u * std::abs(p0[i]) + 8.0 * u * lr * (b_abs + wd * std::abs(p0[i]));
  }
  CHECK(outside(download(d_buf), buf, buf_tol) == 0);
  CHECK(outside(download(d_sp), sp, sp_tol) == 0);

  // Squares of floats are exact in double; two double sums of `count` nonnegative terms in
  // different orders differ by at most 2·count·2^-53 of the total.
  for (std::size_t count : {std::size_t{1}, std::size_t{1000}, std::size_t{300001}}) {
    INFO("count " << count);
    const auto x = random_vector(count, 64, -3.0f, 3.0f);
    const double want = cpu::sum_of_squares(x.data(), count);
    auto d_x = upload(x);
    const double got = gpu::sum_of_squares(d_x.data(), count, nullptr);
    CHECK(std::abs(got - want) <= 2.0 * static_cast<double>(count) * std::ldexp(1.0, -53) * want);
  }
}

#endif  // AIOPT_HAVE_CUDA
