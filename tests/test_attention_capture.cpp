// The attention capture (nn/attention_capture.hpp): one layer's q, k, v of the trained tiny
// model on validation text are the model's own: its K and V are what the model writes to its KV
// cache, attention over the captured q, k, v with the model's causal attention kernel gives the
// layer's attention output, and capturing leaves the model's logits unchanged.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/attention.hpp"
#include "nn/attention_capture.hpp"
#include "nn/batches.hpp"
#include "nn/gpt.hpp"
#include "nn/kv_cache.hpp"
#include "nn/model_cache.hpp"
#include "nn/trainer.hpp"
#include "support/model_cache.hpp"

using namespace aiopt;

namespace {

double max_abs_difference(const float* a, const float* b, std::size_t n) {
  double worst = 0.0;
  for (std::size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
  return worst;
}

}  // namespace

TEST_CASE("the captured q k v are the trained model's and reproduce its attention output", "[attention_capture]") {
  const test::TestModelCache cache_dir;
  const nn::TrainConfig recipe = nn::standard_training("tiny");
  nn::Gpt model(nn::trained_model(recipe, Device::cpu()).weights);
  const nn::GptConfig& cfg = model.config();
  const std::size_t batch = 2, len = cfg.context;
  const nn::TokenSplit tokens = nn::load_tokens(recipe.data, len);
  const nn::Batch windows = nn::validation_batches(tokens.validation, batch, len, 1).at(0);

  // The plain forward: its logits, and the K and V it writes to a KV cache of len positions, which
  // is laid out (B, H, len, d) as the capture's k and v.
  nn::KvCache kv(cfg, batch, len, DType::f32, Device::cpu());
  const Tensor plain = model.step(windows.inputs, batch, len, kv, nn::Logits::last);

  for (std::size_t layer = 0; layer < cfg.layers; ++layer) {
    INFO("layer " << layer);
    const nn::AttentionCapture c = nn::capture_attention(model, windows.inputs, batch, len, layer);
    const std::size_t n = batch * cfg.heads * len * cfg.head_dim();
    REQUIRE(c.q.size() == n);
    CHECK(c.shape.heads == cfg.heads);
    CHECK(c.shape.head_dim == cfg.head_dim());
    CHECK(c.shape.causal);
    // Same weights, same ops: bit for bit.
    CHECK(max_abs_difference(c.k.data(), kv.layer(layer).k.data<float>(), n) == 0.0);
    CHECK(max_abs_difference(c.v.data(), kv.layer(layer).v.data<float>(), n) == 0.0);

    // The model's attention (Gpt::step calls attention_flash with this shape, capacity len, q_offset
    // 0) over the captured q, k, v: every output row is computed by one thread in a fixed order,
    // so it must reproduce the layer's output exactly.
    std::vector<float> out(n), swapped(n);
    kernels::cpu::attention_flash(c.q.data(), c.k.data(), c.v.data(), out.data(), c.shape);
    CHECK(max_abs_difference(out.data(), c.out.data(), n) == 0.0);
    // The comparison can fail: k and v exchanged are far off.
    kernels::cpu::attention_flash(c.q.data(), c.v.data(), c.k.data(), swapped.data(), c.shape);
    CHECK(max_abs_difference(swapped.data(), c.out.data(), n) > 1e-2);
  }

  // The capture leaves the model computing what it computed.
  nn::KvCache again(cfg, batch, len, DType::f32, Device::cpu());
  const Tensor after = model.step(windows.inputs, batch, len, again, nn::Logits::last);
  CHECK(max_abs_difference(after.data<float>(), plain.data<float>(), batch * cfg.vocab) == 0.0);
}

TEST_CASE("the trained capture takes validation windows and refuses what the model cannot give",
          "[attention_capture]") {
  const test::TestModelCache cache_dir;
  const nn::AttentionCapture c = nn::capture_trained_attention("tiny", 1, 3, 64);
  CHECK(c.shape.batch == 3);
  CHECK(c.shape.q_len == 64);
  CHECK(c.q.size() == 3 * 4 * 64 * 16);
  for (const auto* t : {&c.q, &c.k, &c.v, &c.out})
    CHECK(std::all_of(t->begin(), t->end(), [](float x) { return std::isfinite(x); }));
  CHECK_THROWS_AS(nn::capture_trained_attention("tiny", 2, 1, 64), InputError);    // tiny has 2 blocks
  CHECK_THROWS_AS(nn::capture_trained_attention("tiny", 0, 1, 129), InputError);   // its context is 128
  CHECK_THROWS_AS(nn::capture_trained_attention("tiny", 0, 5000, 128), InputError);  // 1023 windows of 128
}
