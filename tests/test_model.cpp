// The GPT model: its weights' initialization, its forward against a plain double-precision
// reference GPT written below, decoding with the KV cache (f32 and i8) against the full forward,
// generation with and without the cache, the cache's measured bytes, input errors, sampling, and
// ([gpu]) the CUDA forward and decode against the CPU.
//
// Tolerances (max abs logit error, relative to the reference's largest |logit|, `scale` below):
//   forward vs the double reference: 1e-4. Every op is fp32 with fp32 accumulation over at most
//   4C = 256 terms (relative error ~ 256 · 6e-8 ≈ 1.5e-5 in the worst case, ~1e-6 typically), and
//   the GELU and exp polynomials are accurate to ~2e-7; LayerNorm renormalizes the residual
//   stream, so errors do not grow with depth.
//   decode with the cache vs forward: 1e-4, the same bound (both fp32; only the order of
//   summation differs, through GEMMs of other shapes and other attention tilings).
//   i8 cache vs f32: 3e-2. Each cached K and V value is off by at most s/2 = max|row|/254, 0.4%
//   of its row's largest value. The attention output is a convex combination of V rows, so the
//   V error moves it by at most 0.4% of max|v|; the K error moves each score by at most
//   scale·Σ|q_i|·s_k/2, a fraction of a percent of the scores' spread, and the softmax turns that
//   into a relative change of the same order in each probability. Through c_proj, the residual
//   and the unit-gain LayerNorms this stays a relative error of order 1% of the logits; 3% is
//   that bound with room for the several layers adding theirs.
//   CUDA vs CPU: 1e-4, fp32 on both (cuBLAS with TF32 forbidden, fp32 CUDA kernels); only the
//   order of summation differs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "nn/decoding.hpp"
#include "nn/gpt.hpp"
#include "nn/kv_cache.hpp"
#include "nn/weights.hpp"
#include "support/error_metric.hpp"
#include "support/near_tie.hpp"

using namespace aiopt;
using namespace aiopt::nn;

namespace {

constexpr double forward_tolerance = 1e-4;
constexpr double cache_tolerance = 1e-4;
constexpr double int8_tolerance = 3e-2;
constexpr double cuda_tolerance = 1e-4;

GptConfig tiny() { return preset("tiny"); }

std::vector<std::int32_t> random_tokens(std::size_t n, std::size_t vocab, std::uint64_t seed) {
  std::vector<std::int32_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<std::int32_t>(rng::bits(seed, i) % vocab);
  return t;
}

std::vector<float> host_values(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  return {h.data<float>(), h.data<float>() + h.numel()};
}

using aiopt::test::max_abs;

// Max |a − b| over n elements; a NaN anywhere gives +inf, which fails every `<=` check below.
double max_abs_diff(const float* a, const double* b, std::size_t n) {
  return aiopt::test::max_abs_error(std::span<const float>(a, n), std::span<const double>(b, n));
}
using aiopt::test::max_abs_error;

// ---- a plain GPT-2 in double: the reference the model is tested against

const float* values(const Tensor& t) { return t.data<float>(); }

// x: (T, C) in place.
void layernorm(std::vector<double>& x, std::size_t T, std::size_t C, const Tensor& g, const Tensor& b, double eps) {
  for (std::size_t t = 0; t < T; ++t) {
    double* r = &x[t * C];
    double mean = 0.0, var = 0.0;
    for (std::size_t c = 0; c < C; ++c) mean += r[c];
    mean /= static_cast<double>(C);
    for (std::size_t c = 0; c < C; ++c) var += (r[c] - mean) * (r[c] - mean);
    var /= static_cast<double>(C);
    for (std::size_t c = 0; c < C; ++c) r[c] = (r[c] - mean) / std::sqrt(var + eps) * values(g)[c] + values(b)[c];
  }
}

// y = x·Wᵀ + b. x: (T, in); W: (out, in); y: (T, out).
std::vector<double> linear(const std::vector<double>& x, std::size_t T, std::size_t in, const Tensor& w,
                           const Tensor* b, std::size_t out) {
  std::vector<double> y(T * out);
  for (std::size_t t = 0; t < T; ++t)
    for (std::size_t o = 0; o < out; ++o) {
      double s = b ? values(*b)[o] : 0.0;
      for (std::size_t i = 0; i < in; ++i) s += x[t * in + i] * values(w)[o * in + i];
      y[t * out + o] = s;
    }
  return y;
}

// Logits (T, V) of one sequence, every position.
std::vector<double> reference_logits(const GptWeights& w, const std::vector<std::int32_t>& tokens) {
  const GptConfig& cfg = w.config;
  const std::size_t T = tokens.size(), C = cfg.channels, H = cfg.heads, d = cfg.head_dim(), V = cfg.vocab;
  std::vector<double> x(T * C);  // (T, C)
  for (std::size_t t = 0; t < T; ++t)
    for (std::size_t c = 0; c < C; ++c)
      x[t * C + c] = double(values(w.wte)[tokens[t] * C + c]) + double(values(w.wpe)[t * C + c]);
  for (const BlockWeights& b : w.blocks) {
    std::vector<double> h = x;
    layernorm(h, T, C, b.ln_1_weight, b.ln_1_bias, cfg.layernorm_eps);
    const auto qkv = linear(h, T, C, b.attn_c_attn_weight, &b.attn_c_attn_bias, 3 * C);  // (T, 3C)
    std::vector<double> att(T * C, 0.0);                                                   // (T, C)
    for (std::size_t head = 0; head < H; ++head)
      for (std::size_t i = 0; i < T; ++i) {
        // Causal softmax over keys j <= i, written out.
        std::vector<double> p(i + 1);
        double top = -INFINITY;
        for (std::size_t j = 0; j <= i; ++j) {
          double s = 0.0;
          for (std::size_t e = 0; e < d; ++e) s += qkv[i * 3 * C + head * d + e] * qkv[j * 3 * C + C + head * d + e];
          p[j] = s / std::sqrt(static_cast<double>(d));
          top = std::max(top, p[j]);
        }
        double sum = 0.0;
        for (auto& v : p) sum += (v = std::exp(v - top));
        for (std::size_t j = 0; j <= i; ++j)
          for (std::size_t e = 0; e < d; ++e) att[i * C + head * d + e] += p[j] / sum * qkv[j * 3 * C + 2 * C + head * d + e];
      }
    const auto proj = linear(att, T, C, b.attn_c_proj_weight, &b.attn_c_proj_bias, C);
    for (std::size_t i = 0; i < T * C; ++i) x[i] += proj[i];
    h = x;
    layernorm(h, T, C, b.ln_2_weight, b.ln_2_bias, cfg.layernorm_eps);
    auto fc = linear(h, T, C, b.mlp_c_fc_weight, &b.mlp_c_fc_bias, 4 * C);
    for (auto& v : fc) v = 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
    const auto mlp = linear(fc, T, 4 * C, b.mlp_c_proj_weight, &b.mlp_c_proj_bias, C);
    for (std::size_t i = 0; i < T * C; ++i) x[i] += mlp[i];
  }
  layernorm(x, T, C, w.ln_f_weight, w.ln_f_bias, cfg.layernorm_eps);
  return linear(x, T, C, w.wte, nullptr, V);  // the head tied to wte
}

// LayerNorm gains and biases of 1 and 0 hide mistakes in their use: perturb them.
void perturb_layernorms(GptWeights& w, std::uint64_t seed) {
  std::uint64_t n = 0;
  for (auto& [name, t] : w.named())
    if (name.find("ln_") != std::string::npos) {
      float* v = t->data<float>();
      for (std::int64_t i = 0; i < t->numel(); ++i) v[i] += 0.2f * (rng::uniform(seed, n++) - 0.5f);
    }
}

Gpt tiny_model(std::uint64_t seed = 3) {
  GptWeights w = GptWeights::initialize(tiny(), seed, Device::cpu());
  perturb_layernorms(w, seed + 1);
  return Gpt(std::move(w));
}

// Greedy tokens with the KV cache of `dtype`, or recomputing when nullopt.
std::vector<std::int32_t> greedy(Gpt& model, const std::vector<std::int32_t>& prompt, std::size_t n,
                                 std::optional<DType> dtype) {
  return generate(model, prompt, n, SamplingParams{}, dtype).tokens;
}

// The model's logits at each choice of `generated` after `prompt`, by one forward over the whole
// sequence: (generated, vocab).
std::vector<float> choice_logits(Gpt& model, const std::vector<std::int32_t>& prompt,
                                 const std::vector<std::int32_t>& generated) {
  std::vector<std::int32_t> sequence(prompt);
  sequence.insert(sequence.end(), generated.begin(), generated.end() - 1);
  const auto all = host_values(model.forward(sequence, 1, sequence.size(), Logits::all));
  return {all.begin() + static_cast<std::ptrdiff_t>((prompt.size() - 1) * model.config().vocab), all.end()};
}

}  // namespace

// ---- weights

TEST_CASE("initialize follows GPT-2's scheme, deterministically, in the fixed order", "[model]") {
  const GptConfig cfg = preset("small");
  const GptWeights a = GptWeights::initialize(cfg, 11, Device::cpu());
  const GptWeights b = GptWeights::initialize(cfg, 11, Device::cpu());
  const GptWeights c = GptWeights::initialize(cfg, 12, Device::cpu());
  const auto named = a.named();
  REQUIRE(named.size() == 2 + 12 * cfg.layers + 2);
  CHECK(named.front().first == "wte");
  CHECK(named[1].first == "wpe");
  CHECK(named[2].first == "h.0.ln_1.weight");
  CHECK(named[4].first == "h.0.attn.c_attn.weight");
  CHECK(named.back().first == "ln_f.bias");
  std::size_t total = 0;
  for (const auto& [name, t] : named) total += static_cast<std::size_t>(t->numel());
  CHECK(total == cfg.parameter_count());
  CHECK(a.blocks[0].attn_c_attn_weight.shape() == std::vector<std::int64_t>{768, 256});
  CHECK(a.blocks[0].mlp_c_proj_weight.shape() == std::vector<std::int64_t>{256, 1024});

  const auto std_of = [](const Tensor& t) {
    double s = 0.0, s2 = 0.0;
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      s += t.data<float>()[i];
      s2 += double(t.data<float>()[i]) * t.data<float>()[i];
    }
    const double n = static_cast<double>(t.numel());
    return std::sqrt(s2 / n - (s / n) * (s / n));
  };
  // 200k+ samples: the sample std is within 1% of sigma with overwhelming probability.
  CHECK(std_of(a.blocks[0].mlp_c_fc_weight) == Approx(0.02).epsilon(0.01));
  CHECK(std_of(a.wte) == Approx(0.02).epsilon(0.02));
  CHECK(std_of(a.blocks[1].mlp_c_proj_weight) == Approx(0.02 / std::sqrt(2.0 * cfg.layers)).epsilon(0.01));
  CHECK(a.blocks[0].ln_1_weight.data<float>()[5] == 1.0f);
  CHECK(a.blocks[0].ln_1_bias.data<float>()[5] == 0.0f);
  CHECK(a.blocks[0].attn_c_attn_bias.data<float>()[7] == 0.0f);
  CHECK(max_abs_error(host_values(a.wte), host_values(b.wte)) == 0.0);
  CHECK(max_abs_error(host_values(a.blocks[2].attn_c_attn_weight), host_values(b.blocks[2].attn_c_attn_weight)) == 0.0);
  CHECK(max_abs_error(host_values(a.wte), host_values(c.wte)) > 0.0);
  // Different tensors draw different numbers.
  CHECK(a.blocks[0].attn_c_attn_weight.data<float>()[0] != a.blocks[1].attn_c_attn_weight.data<float>()[0]);
}

// ---- forward and decode

TEST_CASE("forward matches a plain double GPT on tiny", "[model]") {
  Gpt model = tiny_model();
  const GptConfig cfg = model.config();
  for (std::size_t T : {1, 7, 40}) {
    const auto tokens = random_tokens(T, cfg.vocab, 100 + T);
    const auto want = reference_logits(model.weights(), tokens);
    const double scale = max_abs(want);
    const auto all = host_values(model.forward(tokens, 1, T, Logits::all));
    REQUIRE(all.size() == T * cfg.vocab);
    const double err = max_abs_diff(all.data(), want.data(), all.size());
    INFO("T " << T << " logits scale " << scale << " max error " << err);
    CHECK(err <= forward_tolerance * scale);
    const auto last = host_values(model.forward(tokens, 1, T, Logits::last));
    REQUIRE(last.size() == cfg.vocab);
    CHECK(max_abs_diff(last.data(), want.data() + (T - 1) * cfg.vocab, cfg.vocab) <= forward_tolerance * scale);
  }
}

TEST_CASE("a batch of sequences equals each sequence alone", "[model]") {
  Gpt model = tiny_model();
  const std::size_t V = model.config().vocab, T = 9;
  const auto tokens = random_tokens(3 * T, V, 5);
  const auto batched = host_values(model.forward(tokens, 3, T, Logits::last));
  REQUIRE(batched.size() == 3 * V);
  for (std::size_t b = 0; b < 3; ++b) {
    const std::vector<std::int32_t> one(tokens.begin() + b * T, tokens.begin() + (b + 1) * T);
    const auto want = reference_logits(model.weights(), one);
    CHECK(max_abs_diff(batched.data() + b * V, want.data() + (T - 1) * V, V) <= forward_tolerance * max_abs(want));
  }
}

TEST_CASE("decoding with the f32 cache gives forward's logits at every position", "[model]") {
  Gpt model = tiny_model();
  const std::size_t V = model.config().vocab, T = 48, prefill = 13, batch = 2;
  const auto tokens = random_tokens(batch * T, V, 21);  // (batch, T)
  const auto full = host_values(model.forward(tokens, batch, T, Logits::all));  // (batch, T, V)
  std::vector<double> full_d(full.begin(), full.end());
  double scale = 0.0;
  for (double v : full_d) scale = std::max(scale, std::fabs(v));

  KvCache cache(model.config(), batch, T, DType::f32, Device::cpu());
  std::vector<std::int32_t> chunk;
  for (std::size_t b = 0; b < batch; ++b)
    chunk.insert(chunk.end(), tokens.begin() + b * T, tokens.begin() + b * T + prefill);
  const auto first = host_values(model.step(chunk, batch, prefill, cache, Logits::all));  // (batch, prefill, V)
  CHECK(cache.length() == prefill);
  for (std::size_t b = 0; b < batch; ++b)
    CHECK(max_abs_diff(first.data() + b * prefill * V, full_d.data() + b * T * V, prefill * V) <= cache_tolerance * scale);
  double worst = 0.0;
  for (std::size_t t = prefill; t < T; ++t) {
    const std::vector<std::int32_t> next{tokens[t], tokens[T + t]};
    const auto logits = host_values(model.step(next, batch, 1, cache));  // (batch, 1, V)
    for (std::size_t b = 0; b < batch; ++b)
      worst = std::max(worst, max_abs_diff(logits.data() + b * V, full_d.data() + (b * T + t) * V, V));
  }
  INFO("logits scale " << scale << ", worst decode error " << worst);
  CHECK(worst <= cache_tolerance * scale);
  CHECK(cache.length() == T);
}

TEST_CASE("greedy generation with the cache gives recompute's tokens", "[model]") {
  Gpt model = tiny_model(8);
  const auto prompt = random_tokens(10, model.config().vocab, 2);
  const auto recompute = greedy(model, prompt, 30, std::nullopt);
  const auto cached = greedy(model, prompt, 30, DType::f32);
  REQUIRE(recompute.size() == 30);
  CHECK(cached == recompute);
  // Each token is the argmax of the reference's logits for the sequence so far.
  std::vector<std::int32_t> seq = prompt;
  for (std::size_t i = 0; i < 5; ++i) {
    const auto logits = reference_logits(model.weights(), seq);
    const std::vector<float> last(logits.end() - model.config().vocab, logits.end());
    CHECK(recompute[i] == argmax(last));
    seq.push_back(recompute[i]);
  }
}

TEST_CASE("the int8 cache stays within its quantization bound of the f32 cache", "[model]") {
  Gpt model = tiny_model();
  const std::size_t V = model.config().vocab, T = 64, prefill = 16;
  const auto tokens = random_tokens(T, V, 31);
  KvCache f(model.config(), 1, T, DType::f32, Device::cpu());
  KvCache q(model.config(), 1, T, DType::i8, Device::cpu());
  const std::vector<std::int32_t> head(tokens.begin(), tokens.begin() + prefill);
  auto a = host_values(model.step(head, 1, prefill, f, Logits::all));
  auto b = host_values(model.step(head, 1, prefill, q, Logits::all));
  double scale = 0.0, worst = max_abs_error(a, b);
  for (float v : a) scale = std::max(scale, double(std::fabs(v)));
  std::size_t same_argmax = 0;
  for (std::size_t t = prefill; t < T; ++t) {
    a = host_values(model.step({&tokens[t], 1}, 1, 1, f));
    b = host_values(model.step({&tokens[t], 1}, 1, 1, q));
    worst = std::max(worst, max_abs_error(a, b));
    same_argmax += argmax(a) == argmax(b);
  }
  // The agreement, for the record: printed with -s.
  INFO("int8 cache: max logit error " << worst << " (" << worst / scale << " of the logits' scale), same argmax at "
                                      << same_argmax << " of " << T - prefill << " decode steps");
  CHECK(worst <= int8_tolerance * scale);
  CHECK(worst > 0.0);  // the cache really is quantized
  const auto cached = greedy(model, head, 20, DType::i8);
  CHECK(cached.size() == 20);
}

TEST_CASE("the cache's measured bytes equal the analytic size", "[model]") {
  const GptConfig cfg = preset("small");
  for (DType dtype : {DType::f32, DType::i8})
    for (std::size_t batch : {1, 3}) {
      memory::Scope scope(Device::cpu());
      KvCache cache(cfg, batch, 200, dtype, Device::cpu());
      INFO(to_string(dtype) << " batch " << batch);
      CHECK(cache.bytes() == KvCache::analytic_bytes(cfg, batch, 200, dtype));
      CHECK(scope.peak_bytes() == cache.bytes());
    }
  CHECK(KvCache::analytic_bytes(cfg, 1, 512, DType::f32) == 2u * 4 * 512 * 256 * 4);
  CHECK(KvCache::analytic_bytes(cfg, 1, 512, DType::i8) == 2u * 4 * 512 * 256 + 2u * 4 * 8 * 512 * 4);
}

TEST_CASE("bad tokens, overflow and mismatched caches are input errors", "[model]") {
  Gpt model = tiny_model();
  const GptConfig cfg = model.config();
  KvCache cache(cfg, 1, 8, DType::f32, Device::cpu());
  CHECK_THROWS_AS(model.step(std::vector<std::int32_t>{1, 256}, 1, 2, cache), InputError);
  CHECK_THROWS_AS(model.step(std::vector<std::int32_t>{-1}, 1, 1, cache), InputError);
  CHECK(cache.length() == 0);
  CHECK_THROWS_AS(model.step(std::vector<std::int32_t>{1, 2}, 1, 3, cache), InputError);    // count
  CHECK_THROWS_AS(model.step(std::vector<std::int32_t>{1, 2}, 2, 1, cache), InputError);    // batch
  CHECK_THROWS_AS(model.step(random_tokens(9, 256, 1), 1, 9, cache), InputError);           // overflow
  model.step(random_tokens(8, 256, 1), 1, 8, cache);
  CHECK_THROWS_AS(model.step(std::vector<std::int32_t>{1}, 1, 1, cache), InputError);       // full
  CHECK_THROWS_AS(model.forward(random_tokens(129, 256, 1), 1, 129), InputError);           // context
  CHECK_THROWS_AS(KvCache(cfg, 1, 129, DType::f32, Device::cpu()), InputError);
  CHECK_THROWS_AS(KvCache(cfg, 1, 8, DType::bf16, Device::cpu()), InputError);
  GptConfig other = cfg;
  other.heads = 8;
  KvCache wrong(other, 1, 8, DType::f32, Device::cpu());
  CHECK_THROWS_AS(model.step(std::vector<std::int32_t>{1}, 1, 1, wrong), InputError);
  CHECK_THROWS_AS(generate(model, random_tokens(100, 256, 1), 30, SamplingParams{}, DType::f32), InputError);
  CHECK_THROWS_AS(generate(model, {}, 3, SamplingParams{}, DType::f32), InputError);
}

// ---- sampling

TEST_CASE("greedy picks the argmax, top-k 1 is greedy, and a seed fixes the draws", "[model][sampling]") {
  const std::vector<float> logits{0.1f, 2.0f, -1.0f, 2.0f, 1.9f};
  CHECK(argmax(logits) == 1);  // the lower index among ties
  CHECK(sample_token(logits, SamplingParams{0.0f, 0, 1}, 0) == 1);
  for (std::uint64_t draw = 0; draw < 100; ++draw) {
    CHECK(sample_token(logits, SamplingParams{1.5f, 1, 9}, draw) == 1);
    const auto t = sample_token(logits, SamplingParams{5.0f, 3, 9}, draw);
    CHECK((t == 1 || t == 3 || t == 4));  // only the top 3
    CHECK(sample_token(logits, SamplingParams{0.8f, 0, 4}, draw) == sample_token(logits, SamplingParams{0.8f, 0, 4}, draw));
  }
  CHECK_THROWS_AS(sample_token(logits, SamplingParams{-1.0f, 0, 1}, 0), InputError);
  CHECK_THROWS_AS(sample_token(logits, SamplingParams{NAN, 0, 1}, 0), InputError);

  Gpt model = tiny_model();
  const auto prompt = random_tokens(5, 256, 4);
  const SamplingParams p{0.9f, 40, 77};
  const auto a = generate(model, prompt, 20, p, DType::f32).tokens;
  CHECK(a == generate(model, prompt, 20, p, DType::f32).tokens);
  CHECK(a == generate(model, prompt, 20, p, std::nullopt).tokens);
  CHECK(a != generate(model, prompt, 20, SamplingParams{0.9f, 40, 78}, DType::f32).tokens);
}

TEST_CASE("the token distribution is the top-k softmax and draw_token inverts its CDF", "[model][sampling]") {
  const std::vector<float> logits{1.0f, 0.0f, 2.0f, -0.5f, 2.0f};
  const std::vector<double> greedy = token_distribution(logits, SamplingParams{0.0f, 0, 1});
  CHECK(greedy == std::vector<double>{0, 0, 1, 0, 0});  // the lower index among ties
  // Top 3 at T = 0.5: indices 2, 4 (tied) and 0.
  const std::vector<double> p = token_distribution(logits, SamplingParams{0.5f, 3, 1});
  const double z = 2 * std::exp(4.0) + std::exp(2.0);
  CHECK(p[2] == Approx(std::exp(4.0) / z));
  CHECK(p[4] == Approx(std::exp(4.0) / z));
  CHECK(p[0] == Approx(std::exp(2.0) / z));
  CHECK(p[1] == 0.0);
  CHECK(p[3] == 0.0);
  // Weights 1, 0, 3: u·4 below 1 draws 0, below 4 draws 2; a zero weight is never drawn.
  const std::vector<double> w{1.0, 0.0, 3.0};
  CHECK(draw_token(w, 0.0) == 0);
  CHECK(draw_token(w, 0.2499) == 0);
  CHECK(draw_token(w, 0.25) == 2);
  CHECK(draw_token(w, 0.9999999) == 2);
  CHECK_THROWS_AS(draw_token(std::vector<double>{0.0, 0.0}, 0.5), std::invalid_argument);
}

TEST_CASE("temperature sampling follows the softmax", "[model][sampling]") {
  const std::vector<float> logits{1.0f, 0.0f, 2.0f, -0.5f, 1.5f};
  const float temperature = 0.7f;
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (std::size_t i = 0; i < p.size(); ++i) sum += (p[i] = std::exp(logits[i] / temperature));
  for (auto& v : p) v /= sum;
  const std::size_t draws = 50000;
  std::vector<double> count(logits.size(), 0.0);
  for (std::uint64_t d = 0; d < draws; ++d) count[sample_token(logits, SamplingParams{temperature, 0, 123}, d)] += 1;
  // Pearson's chi-square with 4 degrees of freedom: P(X > 30) ≈ 5e-6 for a correct sampler;
  // a sampler off by 5% in one probability of ~0.1 scores well over 100 here.
  double chi2 = 0.0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double expected = p[i] * static_cast<double>(draws);
    chi2 += (count[i] - expected) * (count[i] - expected) / expected;
  }
  INFO("chi-square " << chi2);
  CHECK(chi2 < 30.0);
}

// ---- CUDA

TEST_CASE("greedy tokens across devices compare only before the reference's first near-tie", "[model]") {
  // Three steps of a vocabulary of 3: a clear choice, two logits 1e-5 of 5 apart, a clear choice.
  const std::vector<float> logits = {0.0f, 1.0f, 5.0f, 5.0f, 4.99995f, 0.0f, 2.0f, 0.0f, 0.0f};
  CHECK(aiopt::test::rows_before_near_tie(logits, 3, 1e-4) == 1);
  CHECK(aiopt::test::rows_before_near_tie(logits, 3, 1e-6) == 3);
  const std::vector<std::int32_t> want = {2, 0, 0};
  CHECK(aiopt::test::tokens_agree_before_near_tie({2, 1, 1}, want, logits, 3, 1e-4));
  CHECK_FALSE(aiopt::test::tokens_agree_before_near_tie({1, 0, 0}, want, logits, 3, 1e-4));
  CHECK_FALSE(aiopt::test::tokens_agree_before_near_tie({2, 1, 0}, want, logits, 3, 1e-6));
}

TEST_CASE("the CUDA forward matches the CPU forward", "[model][gpu]") {
  Gpt cpu_model = tiny_model();
  Gpt cuda_model(cpu_model.weights().to(Device::cuda()));
  const std::size_t V = cpu_model.config().vocab;
  for (std::size_t T : {1, 33, 128}) {
    const auto tokens = random_tokens(2 * T, V, 40 + T);
    const auto want = host_values(cpu_model.forward(tokens, 2, T, Logits::all));
    std::vector<double> want_d(want.begin(), want.end());
    const auto got = host_values(cuda_model.forward(tokens, 2, T, Logits::all));
    const double err = max_abs_diff(got.data(), want_d.data(), got.size());
    INFO("T " << T << " max error " << err << " scale " << max_abs(want_d));
    CHECK(err <= cuda_tolerance * max_abs(want_d));
    const auto last = host_values(cuda_model.forward(tokens, 2, T, Logits::last));
    const auto last_cpu = host_values(cpu_model.forward(tokens, 2, T, Logits::last));
    CHECK(max_abs_error(last, last_cpu) <= cuda_tolerance * max_abs(want_d));
  }
  const GptWeights back = cuda_model.weights().to(Device::cpu());
  CHECK(max_abs_error(host_values(back.wte), host_values(cpu_model.weights().wte)) == 0.0);
  // initialize on the device gives the host's numbers.
  const GptWeights on_device = GptWeights::initialize(tiny(), 3, Device::cuda());
  const GptWeights on_host = GptWeights::initialize(tiny(), 3, Device::cpu());
  CHECK(max_abs_error(host_values(on_device.blocks[1].mlp_c_fc_weight), host_values(on_host.blocks[1].mlp_c_fc_weight)) == 0.0);
}

TEST_CASE("CUDA decoding with the cache matches the CPU", "[model][gpu]") {
  Gpt cpu_model = tiny_model();
  Gpt cuda_model(cpu_model.weights().to(Device::cuda()));
  const std::size_t V = cpu_model.config().vocab, T = 40, prefill = 9;
  const auto tokens = random_tokens(T, V, 50);
  for (DType dtype : {DType::f32, DType::i8}) {
    INFO(to_string(dtype));
    KvCache cc(cpu_model.config(), 1, T, dtype, Device::cpu());
    KvCache gc(cpu_model.config(), 1, T, dtype, Device::cuda());
    const std::vector<std::int32_t> head(tokens.begin(), tokens.begin() + prefill);
    auto want = host_values(cpu_model.step(head, 1, prefill, cc));
    auto got = host_values(cuda_model.step(head, 1, prefill, gc));
    double scale = 0.0;
    for (float v : want) scale = std::max(scale, double(std::fabs(v)));
    double worst = max_abs_error(got, want);
    for (std::size_t t = prefill; t < T; ++t) {
      want = host_values(cpu_model.step({&tokens[t], 1}, 1, 1, cc));
      got = host_values(cuda_model.step({&tokens[t], 1}, 1, 1, gc));
      worst = std::max(worst, max_abs_error(got, want));
    }
    INFO("worst " << worst << " scale " << scale);
    // i8: the same rounding of the same values on both sides, except where a value lies within
    // fp32 rounding of a half step: then one int8 level (s) apart in one value, well inside the
    // i8 cache's own bound.
    CHECK(worst <= (dtype == DType::f32 ? cuda_tolerance : int8_tolerance) * scale);
  }
  const auto prompt = random_tokens(6, V, 60);
  for (const std::optional<DType> cache : {std::optional<DType>(DType::f32), std::optional<DType>()}) {
    const auto want = greedy(cpu_model, prompt, 20, cache);
    CHECK(aiopt::test::tokens_agree_before_near_tie(greedy(cuda_model, prompt, 20, cache), want,
                                                    choice_logits(cpu_model, prompt, want), V, cuda_tolerance));
  }
}
