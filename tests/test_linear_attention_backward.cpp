// Training the GPT with causal linear attention: the backward kernels
// (kernels/cpu/linear_attention_backward.hpp) against a float64 chain rule and against finite
// differences of a float64 forward, a deliberately wrong backward (the normalizer's term skipped)
// caught by both, a short training run with each kind (the whole model's gradient with each is
// checked in test_training.cpp), and the
// refusals: linformer (not causal), CUDA, and a linear-attention checkpoint where the softmax
// forward would run it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/rng.hpp"
#include "kernels/cpu/linear_attention.hpp"
#include "kernels/cpu/linear_attention_backward.hpp"
#include "nn/batches.hpp"
#include "nn/checkpoint.hpp"
#include "nn/corpus.hpp"
#include "nn/model_cache.hpp"
#include "nn/trainer.hpp"
#include "nn/training.hpp"
#include "support/files.hpp"
#include "support/process.hpp"
#include "support/random.hpp"

using namespace aiopt;
using namespace aiopt::nn;
namespace cpu = aiopt::kernels::cpu;

namespace {

constexpr double u = 0x1p-24;  // fp32 unit roundoff

cpu::LinearAttentionShape causal_shape(std::size_t batch, std::size_t heads, std::size_t n, std::size_t d,
                                       std::size_t features) {
  cpu::LinearAttentionShape s;
  s.batch = batch;
  s.heads = heads;
  s.seq_len = n;
  s.head_dim = d;
  s.features = features;
  s.causal = true;
  return s;
}

// Per entry, Σ|terms| of the sums that make the gradient (φ positive):
//   dφq_i: Σ_{j<=i} (|g_i|·|v_j| + |c_i|) φk_j,  dφk_j: Σ_{i>=j} (|g_i|·|v_j| + |c_i|) φq_i,
//   dv_j: Σ_{i>=j} w_ij |g_i|,
// with g_i = dout_i / den_i and c_i = g_i·out_i, in float64. An fp32 evaluation's error is within
// γ_n = n·u/(1 − n·u) of it for the longest chain of n roundings (Higham 2002, §3.1).
struct Magnitudes {
  std::vector<double> dq, dk, dv;
};
Magnitudes magnitudes(const std::vector<float>& pq, const std::vector<float>& pk, const std::vector<float>& v,
                      const std::vector<float>& dout, const cpu::LinearAttentionShape& s) {
  const std::size_t N = s.seq_len, F = s.features, d = s.head_dim;
  Magnitudes m{std::vector<double>(pq.size()), std::vector<double>(pk.size()), std::vector<double>(v.size())};
  std::vector<double> w(N), g(d), out(d);
  for (std::size_t grp = 0; grp < s.groups(); ++grp)
    for (std::size_t i = 0; i < N; ++i) {
      const std::size_t qi = grp * N + i;
      double den = 0.0;
      std::fill(out.begin(), out.end(), 0.0);
      for (std::size_t j = 0; j <= i; ++j) {
        double wij = 0.0;
        for (std::size_t f = 0; f < F; ++f) wij += static_cast<double>(pq[qi * F + f]) * pk[(grp * N + j) * F + f];
        w[j] = wij;
        den += wij;
        for (std::size_t t = 0; t < d; ++t) out[t] += wij * v[(grp * N + j) * d + t];
      }
      double c = 0.0;
      for (std::size_t t = 0; t < d; ++t) {
        g[t] = dout[qi * d + t] / den;
        c += std::abs(g[t] * out[t] / den);  // out still holds the numerator
      }
      for (std::size_t j = 0; j <= i; ++j) {
        const std::size_t kj = grp * N + j;
        double gv = 0.0;
        for (std::size_t t = 0; t < d; ++t) {
          gv += std::abs(g[t] * v[kj * d + t]);
          m.dv[kj * d + t] += w[j] * std::abs(g[t]);
        }
        for (std::size_t f = 0; f < F; ++f) {
          m.dq[qi * F + f] += (gv + c) * pk[kj * F + f];
          m.dk[kj * F + f] += (gv + c) * pq[qi * F + f];
        }
      }
    }
  return m;
}

// The worst of |fast − reference| / bound over a tensor: above 1 fails.
double worst_ratio(const std::vector<float>& fast, const std::vector<double>& ref, const std::vector<double>& mag,
                   double gamma) {
  double worst = 0.0;
  for (std::size_t i = 0; i < fast.size(); ++i) {
    // The floor covers an entry whose terms are all below the normal range's concern (1e-30).
    const double bound = gamma * mag[i] + 1e-30;
    worst = std::max(worst, std::abs(static_cast<double>(fast[i]) - ref[i]) / bound);
  }
  return worst;
}

struct KernelCase {
  cpu::LinearAttentionShape shape;
  std::vector<float> pq, pk, v, out, dout;
};

KernelCase kernel_case(const cpu::LinearAttentionShape& s, std::uint64_t seed) {
  KernelCase c{s, {}, {}, {}, {}, {}};
  const std::size_t nf = s.groups() * s.seq_len * s.features, nd = s.groups() * s.seq_len * s.head_dim;
  // Features are positive, as both feature maps make them; spread over 30x so weights differ.
  c.pq = test::random_vector(nf, seed, 0.05f, 1.5f);
  c.pk = test::random_vector(nf, seed + 1, 0.05f, 1.5f);
  c.v = test::random_vector(nd, seed + 2);
  c.dout = test::random_vector(nd, seed + 3);
  c.out.resize(nd);
  std::vector<float> ws(cpu::linear_attention_workspace_elements(s));
  cpu::linear_attention(c.pq.data(), c.pk.data(), c.v.data(), c.out.data(), ws.data(), s);
  return c;
}

// The fast backward's worst error over the three gradients, in units of its bound.
double backward_error(const KernelCase& c) {
  const auto& s = c.shape;
  const std::size_t nf = c.pq.size(), nd = c.v.size();
  std::vector<float> dq(nf), dk(nf), dv(nd), ws(cpu::linear_attention_backward_workspace_elements(s));
  cpu::linear_attention_causal_backward(c.pq.data(), c.pk.data(), c.v.data(), c.out.data(), c.dout.data(), dq.data(),
                                        dk.data(), dv.data(), ws.data(), s);
  std::vector<double> rq(nf), rk(nf), rv(nd);
  cpu::linear_attention_causal_backward_reference(c.pq.data(), c.pk.data(), c.v.data(), c.dout.data(), rq.data(),
                                                  rk.data(), rv.data(), s);
  const Magnitudes m = magnitudes(c.pq, c.pk, c.v, c.dout, s);
  // The longest chain of fp32 roundings behind one entry: the scan's running sum over N rows, a
  // dot over F features (den) or d values (S g, R v), the forward's own output (used for c_i,
  // itself a chunked sum over N rows and F features), and a handful of single operations. Twice
  // that covers the constant of γ_n and the chunked forward's different order.
  const double n = static_cast<double>(2 * s.seq_len + 2 * s.features + s.head_dim + 8);
  const double gamma = 2.0 * n * u;
  return std::max({worst_ratio(dq, rq, m.dq, gamma), worst_ratio(dk, rk, m.dk, gamma), worst_ratio(dv, rv, m.dv, gamma)});
}

// ---- the float64 forward of a whole linear attention, for finite differences

enum class Map { elu, favor };

// out (G, N, d) in float64 from q, k (G, N, d), v, with φ from the maps' float64 references
// (favor with the same stabilizers as the fp32 kernel) and the quadratic causal form.
std::vector<double> forward64(Map map, const std::vector<float>& q, const std::vector<float>& k,
                              const std::vector<float>& v, const std::vector<float>& w, std::size_t G, std::size_t N,
                              std::size_t d, std::size_t F) {
  std::vector<double> pq(G * N * F), pk(G * N * F);
  if (map == Map::elu) {
    cpu::elu_feature_map_reference(q.data(), pq.data(), q.size());
    cpu::elu_feature_map_reference(k.data(), pk.data(), k.size());
  } else {
    cpu::favor_feature_map_reference(q.data(), w.data(), pq.data(), G, N, d, F, cpu::FavorRole::query);
    cpu::favor_feature_map_reference(k.data(), w.data(), pk.data(), G, N, d, F, cpu::FavorRole::key);
  }
  std::vector<double> out(G * N * d, 0.0);
  for (std::size_t g = 0; g < G; ++g)
    for (std::size_t i = 0; i < N; ++i) {
      double den = 0.0;
      for (std::size_t j = 0; j <= i; ++j) {
        double wij = 0.0;
        for (std::size_t f = 0; f < F; ++f) wij += pq[(g * N + i) * F + f] * pk[(g * N + j) * F + f];
        den += wij;
        for (std::size_t t = 0; t < d; ++t) out[(g * N + i) * d + t] += wij * v[(g * N + j) * d + t];
      }
      for (std::size_t t = 0; t < d; ++t) out[(g * N + i) * d + t] /= den;
    }
  return out;
}

// The fp32 path the GPT runs: feature maps, linear_attention, then the backward through both.
struct Grads {
  std::vector<float> dq, dk, dv;
};
Grads fast_gradients(Map map, const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                     const std::vector<float>& w, const std::vector<float>& dout, const cpu::LinearAttentionShape& s) {
  const std::size_t G = s.groups(), N = s.seq_len, d = s.head_dim, F = s.features;
  std::vector<float> pq(G * N * F), pk(G * N * F), out(G * N * d);
  if (map == Map::elu) {
    cpu::elu_feature_map(q.data(), pq.data(), q.size());
    cpu::elu_feature_map(k.data(), pk.data(), k.size());
  } else {
    cpu::favor_feature_map(q.data(), w.data(), pq.data(), G, N, d, F, cpu::FavorRole::query);
    cpu::favor_feature_map(k.data(), w.data(), pk.data(), G, N, d, F, cpu::FavorRole::key);
  }
  std::vector<float> ws(cpu::linear_attention_workspace_elements(s));
  cpu::linear_attention(pq.data(), pk.data(), v.data(), out.data(), ws.data(), s);
  std::vector<float> dpq(pq.size()), dpk(pk.size());
  Grads g{std::vector<float>(q.size()), std::vector<float>(k.size()), std::vector<float>(v.size())};
  std::vector<float> bws(cpu::linear_attention_backward_workspace_elements(s));
  cpu::linear_attention_causal_backward(pq.data(), pk.data(), v.data(), out.data(), dout.data(), dpq.data(),
                                        dpk.data(), g.dv.data(), bws.data(), s);
  if (map == Map::elu) {
    cpu::elu_feature_map_backward(q.data(), pq.data(), dpq.data(), g.dq.data(), q.size());
    cpu::elu_feature_map_backward(k.data(), pk.data(), dpk.data(), g.dk.data(), k.size());
  } else {
    cpu::favor_feature_map_backward(q.data(), w.data(), pq.data(), dpq.data(), g.dq.data(), G * N, d, F);
    cpu::favor_feature_map_backward(k.data(), w.data(), pk.data(), dpk.data(), g.dk.data(), G * N, d, F);
  }
  return g;
}

// max |analytic − finite difference| / max |finite difference| over q, k and v, for L = Σ out·dout.
double finite_difference_error(Map map, std::uint64_t seed) {
  const std::size_t B = 2, H = 1, N = 9, d = 4, F = map == Map::elu ? d : 16;
  const auto s = causal_shape(B, H, N, d, F);
  const std::size_t n = B * H * N * d;
  std::vector<float> q = test::random_vector(n, seed, -1.5f, 1.5f), k = test::random_vector(n, seed + 1, -1.5f, 1.5f),
                     v = test::random_vector(n, seed + 2), dout = test::random_vector(n, seed + 3), w;
  if (map == Map::favor) {
    w.resize(F * d);
    cpu::orthogonal_gaussian_projection(w.data(), F, d, seed + 4);
  }
  const Grads g = fast_gradients(map, q, k, v, w, dout, s);
  auto loss = [&] {
    const std::vector<double> out = forward64(map, q, k, v, w, B * H, N, d, F);
    double l = 0.0;
    for (std::size_t i = 0; i < out.size(); ++i) l += out[i] * dout[i];
    return l;
  };
  double worst = 0.0, scale = 0.0;
  for (auto [x, an] : {std::pair{&q, &g.dq}, std::pair{&k, &g.dk}, std::pair{&v, &g.dv}})
    for (std::size_t i = 0; i < n; ++i) {
      const float saved = (*x)[i];
      // h = 1e-3 in float: the step actually taken is the difference of the rounded values, and
      // the float64 forward adds no rounding of note, so the quotient's error is the O(h²)
      // truncation, ~1e-6 of the derivatives' size here.
      const float up = saved + 1e-3f, down = saved - 1e-3f;
      (*x)[i] = up;
      const double l_up = loss();
      (*x)[i] = down;
      const double l_down = loss();
      (*x)[i] = saved;
      const double fd = (l_up - l_down) / (static_cast<double>(up) - static_cast<double>(down));
      worst = std::max(worst, std::abs(fd - (*an)[i]));
      scale = std::max(scale, std::abs(fd));
    }
  return worst / scale;
}

Batch corpus_batch(std::size_t batch, std::size_t len, std::uint64_t seed) {
  static const TokenSplit tokens = synthetic_tokens(SyntheticCorpus{7, 0}, 1 << 16, 1 << 14);
  BatchSampler sampler(tokens.train, batch, len, seed);
  return sampler.next();
}

constexpr TrainAttention linear_kinds[] = {TrainAttention::linear_elu, TrainAttention::performer};

}  // namespace

TEST_CASE("causal linear attention backward matches the float64 chain rule within its rounding bound",
          "[linear_attention_backward]") {
  // N = 1, a sequence within one chunk, and one past two chunks (the forward pads); F = d and F = 4d.
  for (const auto& s : {causal_shape(1, 1, 1, 8, 8), causal_shape(2, 3, 37, 8, 12), causal_shape(1, 2, 130, 16, 64)}) {
    INFO("N " << s.seq_len << ", d " << s.head_dim << ", F " << s.features);
    const double err = backward_error(kernel_case(s, 100 + s.seq_len));
    INFO("worst error / bound " << err);
    CHECK(err <= 1.0);
  }
}

TEST_CASE("a backward that skips the normalizer's term fails the chain-rule comparison",
          "[linear_attention_backward]") {
  const KernelCase c = kernel_case(causal_shape(2, 3, 37, 8, 12), 7);
  const fault::Scope skipped("linear_attention.skip_normalizer_gradient");
  const double err = backward_error(c);
  INFO("worst error / bound with the fault " << err);
  // The dropped c_i·z_i and r_j are the size of the gradients themselves: far past the bound.
  CHECK(err > 100.0);
}

TEST_CASE("linear attention's gradient through both feature maps matches finite differences of a float64 forward",
          "[linear_attention_backward]") {
  // 1e-3 of the largest derivative: the quotient's truncation is ~1e-6 of it and the fp32 path's
  // rounding (bounded above) ~1e-6; a wrong term is of the derivatives' own size.
  for (const Map map : {Map::elu, Map::favor}) {
    INFO((map == Map::elu ? "elu" : "favor"));
    const double err = finite_difference_error(map, 31);
    INFO("max |analytic - fd| / max |fd| = " << err);
    CHECK(err < 1e-3);
    const fault::Scope skipped("linear_attention.skip_normalizer_gradient");
    CHECK(finite_difference_error(map, 31) > 1e-2);
  }
}

TEST_CASE("training tiny with linear attention lowers the loss and keeps it finite", "[linear_attention_backward]") {
  for (const TrainAttention attention : linear_kinds) {
    INFO("attention " << to_string(attention));
    TrainConfig c = standard_training("tiny");
    c.data.train_bytes = 1 << 18;
    c.data.validation_bytes = 1 << 14;
    c.steps = 40;
    c.schedule.total_steps = 40;
    c.schedule.warmup_steps = 4;
    c.eval_every = 0;
    c.eval_batches = 4;
    c.training.attention = attention;
    Trainer t(c, Device::cpu());
    const double before = t.evaluate();
    t.run();
    for (const StepRecord& r : t.history()) {
      INFO("step " << r.step << " loss " << r.loss << " grad norm " << r.grad_norm);
      REQUIRE(std::isfinite(r.loss));
      REQUIRE(std::isfinite(r.grad_norm));
    }
    const double after = t.evals().back().loss;
    INFO("validation loss " << before << " -> " << after);
    REQUIRE(std::isfinite(after));
    // 40 steps from uniform-ish logits (ln 256 ≈ 5.55): the byte frequencies alone are worth
    // more than 1 nat on this corpus, which the model learns within a few dozen steps.
    CHECK(after < before - 1.0);
  }
}

TEST_CASE("the attention kind is part of a training run's identity", "[linear_attention_backward]") {
  TrainConfig flash = standard_training("tiny");
  TrainConfig elu = flash, performer = flash;
  elu.training.attention = TrainAttention::linear_elu;
  performer.training.attention = TrainAttention::performer;
  CHECK(model_cache_key(elu) != model_cache_key(flash));
  CHECK(model_cache_key(performer) != model_cache_key(elu));
  // The projections' seed changes a performer run and nothing else.
  TrainConfig performer2 = performer, flash2 = flash;
  performer2.training.feature_seed = 2;
  flash2.training.feature_seed = 2;
  CHECK(model_cache_key(performer2) != model_cache_key(performer));
  CHECK(model_cache_key(flash2) == model_cache_key(flash));
  // The model cache serves the softmax forward only.
  CHECK_THROWS_AS(trained_model(elu, Device::cpu()), InputError);
}

TEST_CASE("linformer cannot train the GPT and says why", "[linear_attention_backward]") {
  CHECK(parse_train_attention("linear_elu") == TrainAttention::linear_elu);
  CHECK(parse_train_attention("performer") == TrainAttention::performer);
  CHECK_THROWS_WITH(parse_train_attention("linformer"), Catch::Contains("no causal mask"));
  const auto r = test::run_aiopt({"train", "--preset", "tiny", "--steps", "1", "--attention", "linformer"});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("no causal mask") != std::string::npos);
}

TEST_CASE("a checkpoint trained with linear attention is refused by the softmax forward",
          "[linear_attention_backward]") {
  test::TempDir dir;
  const GptWeights w = GptWeights::initialize(preset("tiny"), 1, Device::cpu());
  save_checkpoint(w, dir.file("flash.safetensors"), {{"attention", "flash"}});
  save_checkpoint(w, dir.file("elu.safetensors"), {{"attention", "linear_elu"}});
  CHECK_NOTHROW(load_checkpoint(dir.file("flash.safetensors"), Device::cpu()));
  CHECK_THROWS_WITH(load_checkpoint(dir.file("elu.safetensors"), Device::cpu()),
                    Catch::Contains("trained with 'linear_elu' attention"));
  // Through the commands: train writes the kind, generate refuses it with exit code 2.
  const std::string out = dir.file("trained.safetensors");
  const auto t = test::run_aiopt({"train", "--preset", "tiny", "--steps", "2", "--eval-batches", "1", "--attention",
                                  "performer", "--threads", "1", "--out", out});
  INFO(t.out << t.err);
  REQUIRE(t.exit_code == 0);
  const auto g = test::run_aiopt({"generate", "--checkpoint", out, "--tokens", "2", "--prompt", "ab"});
  INFO(g.err);
  CHECK(g.exit_code == 2);
  CHECK(g.err.find("trained with 'performer' attention") != std::string::npos);
}

TEST_CASE("linear attention training is refused on CUDA", "[linear_attention_backward][gpu]") {
  const GptConfig config = preset("tiny");
  const GptWeights w = GptWeights::initialize(config, 1, Device::cuda());
  GptWeights g = GptWeights::zeros(config, Device::cuda());
  const Batch b = corpus_batch(2, 16, 1);
  for (const TrainAttention attention : linear_kinds) {
    TrainingOptions o;
    o.attention = attention;
    CHECK_THROWS_WITH(forward_backward(w, b, g, o), Catch::Contains("not implemented on"));
  }
}
