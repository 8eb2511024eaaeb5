#include "nn/gpt.hpp"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/attention_shape.hpp"
#include "nn/device_ops.hpp"

namespace aiopt::nn {

namespace {

std::int64_t dim(std::size_t n) { return static_cast<std::int64_t>(n); }

void check_step(const GptConfig& config, std::span<const std::int32_t> tokens, std::size_t batch,
                std::size_t len, const KvCache& cache, const Device& device) {
  if (batch == 0 || len == 0) throw InputError("Gpt: batch and len must be positive");
  if (tokens.size() != batch * len)
    throw InputError("Gpt: " + std::to_string(tokens.size()) + " tokens given for batch " + std::to_string(batch) +
                     " × len " + std::to_string(len));
  if (batch != cache.batch())
    throw InputError("Gpt: batch " + std::to_string(batch) + " differs from the KV cache's batch " +
                     std::to_string(cache.batch()));
  if (cache.length() + len > cache.capacity())
    throw InputError("Gpt: " + std::to_string(len) + " new positions after " + std::to_string(cache.length()) +
                     " overflow the KV cache's capacity of " + std::to_string(cache.capacity()));
  if (cache.capacity() > config.context)
    throw InputError("Gpt: KV cache capacity " + std::to_string(cache.capacity()) + " exceeds the context " +
                     std::to_string(config.context));
  const auto& k = cache.layer(0).k;
  if (k.device() != device || k.shape().size() != 4 || k.shape()[1] != dim(config.heads) ||
      k.shape()[3] != dim(config.head_dim()))
    throw InputError("Gpt: the KV cache " + k.shape_string() + " on " + to_string(k.device()) +
                     " was not made for this model (" + config.describe() + ") on " + to_string(device));
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= config.vocab)
      throw InputError("Gpt: token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                       " is outside the vocabulary [0, " + std::to_string(config.vocab) + ")");
}

}  // namespace

Gpt::Gpt(GptWeights weights) : weights_(std::move(weights)) {
  weights_.config.validate();
  if (weights_.blocks.size() != weights_.config.layers)
    throw InputError("Gpt: " + std::to_string(weights_.blocks.size()) + " blocks for a config of " +
                     std::to_string(weights_.config.layers) + " layers");
}

const Device& Gpt::device() const { return weights_.wte.device(); }

Tensor Gpt::step(std::span<const std::int32_t> tokens, std::size_t batch, std::size_t len, KvCache& cache,
                 Logits which) {
  const GptConfig& cfg = config();
  const Device& dev = device();
  check_step(cfg, tokens, batch, len, cache, dev);
  const DeviceOps ops{dev, stream_};
  const std::size_t C = cfg.channels, H = cfg.heads, d = cfg.head_dim(), V = cfg.vocab;
  const std::size_t rows = batch * len;  // B·T
  const std::size_t pos0 = cache.length();
  const auto B = dim(batch), T = dim(len);

  // Tokens were checked on the host; a CUDA model reads them from a device copy. DType has no
  // 32-bit integer, so the ids travel as 4-byte f32 elements, bit for bit.
  Tensor device_tokens;
  const std::int32_t* token_ptr = tokens.data();
  if (dev.is_cuda()) {
    device_tokens = Tensor::from_host(std::as_bytes(tokens), {dim(tokens.size())}, DType::f32, dev);
    token_ptr = reinterpret_cast<const std::int32_t*>(device_tokens.data<float>());
  }

  auto f32 = [&](std::vector<std::int64_t> shape) { return Tensor::empty(std::move(shape), DType::f32, dev); };
  const float* wte = weights_.wte.data<float>();
  Tensor x = f32({B, T, dim(C)});  // (B, T, C) the residual stream
  ops.embedding(token_ptr, wte, weights_.wpe.data<float>(), x.data<float>(), batch, len, pos0, V, cfg.context, C);

  const AttentionShape shape{batch, H, len, pos0 + len, d, cache.capacity(), pos0, true,
                             1.0f / std::sqrt(static_cast<float>(d))};
  run_blocks(x, rows, [&](std::size_t l, const float* qkv, float* out) {
    KvCache::Layer& kv = cache.layer(l);
    Tensor q = f32({B, dim(H), T, dim(d)});    // (B, H, T, d)
    Tensor att = f32({B, dim(H), T, dim(d)});  // (B, H, T, d)
    if (cache.dtype() == DType::f32) {
      ops.split_qkv(qkv, q.data<float>(), kv.k.data<float>(), kv.v.data<float>(), batch, len, H, d, cache.capacity(),
                    pos0);
      ops.attention_flash(q.data<float>(), kv.k.data<float>(), kv.v.data<float>(), att.data<float>(), shape);
    } else {
      ops.split_qkv_int8(qkv, q.data<float>(), kv.k.data<std::int8_t>(), kv.k_scale.data<float>(),
                         kv.v.data<std::int8_t>(), kv.v_scale.data<float>(), batch, len, H, d, cache.capacity(), pos0);
      ops.attention_int8_kv(q.data<float>(), kv.k.data<std::int8_t>(), kv.k_scale.data<float>(),
                            kv.v.data<std::int8_t>(), kv.v_scale.data<float>(), att.data<float>(), shape);
    }
    ops.merge_heads(att.data<float>(), out, batch, len, H, d);
  });
  cache.advance(len);

  Tensor h = f32({B, T, dim(C)});  // (B, T, C)
  ops.layernorm(x.data<float>(), weights_.ln_f_weight.data<float>(), weights_.ln_f_bias.data<float>(),
                h.data<float>(), rows, C, cfg.layernorm_eps);
  // The LM head, tied to wte (V, C). For Logits::last only the last position of each sequence:
  // B rows read T·C floats apart, so the (B·T, V) product that dominates prefill is not computed.
  if (which == Logits::all) {
    Tensor logits = f32({B, T, dim(V)});  // (B, T, V)
    ops.linear(h.data<float>(), wte, nullptr, logits.data<float>(), rows, C, V);
    return logits;
  }
  Tensor logits = f32({B, 1, dim(V)});  // (B, 1, V)
  ops.linear_strided(h.data<float>() + (len - 1) * C, len * C, wte, logits.data<float>(), batch, C, V);
  return logits;
}

Tensor Gpt::step(std::span<const RaggedSequence> batch, PagedKvCache& cache) {
  const GptConfig& cfg = config();
  const Device& dev = device();
  const DeviceOps ops{dev, stream_};
  const std::size_t C = cfg.channels, V = cfg.vocab;
  if (batch.empty()) throw InputError("Gpt: a ragged step needs at least one sequence");
  if (cache.layer_count() != cfg.layers || cache.layer(0).k.device() != dev ||
      cache.layer(0).k.shape()[1] != dim(cfg.heads) || cache.layer(0).k.shape()[3] != dim(cfg.head_dim()))
    throw InputError("Gpt: the paged KV cache " + cache.layer(0).k.shape_string() + " on " +
                     to_string(cache.layer(0).k.device()) + " was not made for this model (" + cfg.describe() +
                     ") on " + to_string(dev));
  BlockTables& paging = cache.tables();
  // The step's host arrays (kernels/paged_batch.hpp), checked here: the kernels trust them.
  std::vector<std::int32_t> tokens, positions, q_start{0}, context, table_start, tables, last_rows;
  for (const RaggedSequence& s : batch) {
    const std::size_t n = s.tokens.size(), pos0 = paging.length(s.id);
    if (n == 0) throw InputError("Gpt: sequence " + std::to_string(s.id) + " brings no tokens to the step");
    if (pos0 + n > cfg.context)
      throw InputError("Gpt: sequence " + std::to_string(s.id) + " reaches position " + std::to_string(pos0 + n) +
                       " past the context of " + std::to_string(cfg.context));
    const std::vector<std::int32_t>& table = paging.table(s.id);
    if (pos0 + n > table.size() * paging.block_size())
      throw InputError("Gpt: sequence " + std::to_string(s.id) + " needs " + std::to_string(pos0 + n) +
                       " positions and holds blocks for " + std::to_string(table.size() * paging.block_size()) +
                       "; reserve them first");
    for (std::size_t i = 0; i < n; ++i) {
      const std::int32_t t = s.tokens[i];
      if (t < 0 || static_cast<std::size_t>(t) >= V)
        throw InputError("Gpt: token " + std::to_string(t) + " of sequence " + std::to_string(s.id) +
                         " is outside the vocabulary [0, " + std::to_string(V) + ")");
      tokens.push_back(t);
      positions.push_back(static_cast<std::int32_t>(pos0 + i));
    }
    q_start.push_back(static_cast<std::int32_t>(tokens.size()));
    last_rows.push_back(static_cast<std::int32_t>(tokens.size() - 1));
    context.push_back(static_cast<std::int32_t>(pos0 + n));
    table_start.push_back(static_cast<std::int32_t>(tables.size()));
    tables.insert(tables.end(), table.begin(), table.end());
  }
  for (std::size_t i = 0; i < batch.size(); ++i)
    for (std::size_t j = i + 1; j < batch.size(); ++j)
      if (batch[i].id == batch[j].id)
        throw InputError("Gpt: sequence " + std::to_string(batch[i].id) + " appears twice in one ragged step");
  const std::size_t rows = tokens.size(), seqs = batch.size();

  // The arrays where the kernels read them: a CUDA model's from device copies. DType has no
  // 32-bit integer, so they travel as 4-byte f32 elements, bit for bit.
  std::vector<Tensor> uploads;
  auto on_device = [&](const std::vector<std::int32_t>& v) -> const std::int32_t* {
    if (!dev.is_cuda()) return v.data();
    uploads.push_back(Tensor::from_host(std::as_bytes(std::span(v)), {dim(v.size())}, DType::f32, dev));
    return reinterpret_cast<const std::int32_t*>(uploads.back().data<float>());
  };
  uploads.reserve(7);
  kernels::PagedBatch paged{seqs, rows, cfg.heads, cfg.head_dim(), paging.block_size(), paging.block_count(),
                            1.0f / std::sqrt(static_cast<float>(cfg.head_dim()))};
  // The CPU kernels check the arrays themselves; the CUDA ones cannot read them, so here.
  if (dev.is_cuda()) {
    kernels::PagedBatch on_host = paged;
    on_host.q_start = q_start.data();
    on_host.context = context.data();
    on_host.table_start = table_start.data();
    on_host.block_tables = tables.data();
    kernels::cpu::check_paged_batch(on_host);
  }
  paged.q_start = on_device(q_start);
  paged.context = on_device(context);
  paged.table_start = on_device(table_start);
  paged.block_tables = on_device(tables);
  const std::int32_t* token_ptr = on_device(tokens);
  const std::int32_t* position_ptr = on_device(positions);
  const std::int32_t* last_ptr = on_device(last_rows);

  auto f32 = [&](std::vector<std::int64_t> shape) { return Tensor::empty(std::move(shape), DType::f32, dev); };
  const auto R = dim(rows);
  Tensor x = f32({R, dim(C)});  // (rows, C) the residual stream
  ops.embedding_at(token_ptr, position_ptr, weights_.wte.data<float>(), weights_.wpe.data<float>(), x.data<float>(),
                   rows, V, cfg.context, C);
  run_blocks(x, rows, [&](std::size_t l, const float* qkv, float* out) {
    PagedKvCache::Layer& kv = cache.layer(l);
    Tensor q = f32({R, dim(C)});  // (rows, H, d)
    ops.paged_kv_write(qkv, q.data<float>(), kv.k.data<float>(), kv.v.data<float>(), paged);
    ops.paged_attention(q.data<float>(), kv.k.data<float>(), kv.v.data<float>(), out, paged);
  });
  for (const RaggedSequence& s : batch) paging.advance(s.id, s.tokens.size());

  // The LM head on each sequence's last row only.
  Tensor last = f32({dim(seqs), dim(C)});
  ops.gather_rows(x.data<float>(), last_ptr, last.data<float>(), seqs, C);
  Tensor h = f32({dim(seqs), dim(C)});
  ops.layernorm(last.data<float>(), weights_.ln_f_weight.data<float>(), weights_.ln_f_bias.data<float>(),
                h.data<float>(), seqs, C, cfg.layernorm_eps);
  Tensor logits = f32({dim(seqs), dim(V)});
  ops.linear(h.data<float>(), weights_.wte.data<float>(), nullptr, logits.data<float>(), seqs, C, V);
  return logits;
}

void Gpt::run_blocks(Tensor& x, std::size_t rows, const Attention& attention) const {
  const GptConfig& cfg = config();
  const Device& dev = device();
  const DeviceOps ops{dev, stream_};
  const std::size_t C = cfg.channels;
  auto f32 = [&](std::vector<std::int64_t> shape) { return Tensor::empty(std::move(shape), DType::f32, dev); };
  // A block's linear layer: the replacement when one is set, else the fp32 weights. w: (out, in).
  auto block_linear = [&](std::size_t layer, BlockLinear which, const float* in, const Tensor& w, const Tensor& b,
                          float* out, std::size_t m) {
    if (linear_layers_) return linear_layers_->linear(layer, which, in, out, m);
    ops.linear(in, w.data<float>(), b.data<float>(), out, m, static_cast<std::size_t>(w.shape()[1]),
               static_cast<std::size_t>(w.shape()[0]));
  };
  const auto R = dim(rows);
  for (std::size_t l = 0; l < cfg.layers; ++l) {
    const BlockWeights& w = weights_.blocks[l];
    Tensor h = f32({R, dim(C)});  // (rows, C)
    ops.layernorm(x.data<float>(), w.ln_1_weight.data<float>(), w.ln_1_bias.data<float>(), h.data<float>(), rows,
                  C, cfg.layernorm_eps);
    {
      Tensor qkv = f32({R, 3 * dim(C)});  // (rows, 3, H, d)
      block_linear(l, BlockLinear::attn_qkv, h.data<float>(), w.attn_c_attn_weight, w.attn_c_attn_bias,
                   qkv.data<float>(), rows);
      attention(l, qkv.data<float>(), h.data<float>());
    }
    Tensor proj = f32({R, dim(C)});  // (rows, C)
    block_linear(l, BlockLinear::attn_proj, h.data<float>(), w.attn_c_proj_weight, w.attn_c_proj_bias,
                 proj.data<float>(), rows);
    ops.residual_add(x.data<float>(), proj.data<float>(), x.data<float>(), rows * C);
    ops.layernorm(x.data<float>(), w.ln_2_weight.data<float>(), w.ln_2_bias.data<float>(), h.data<float>(), rows,
                  C, cfg.layernorm_eps);
    Tensor fc = f32({R, 4 * dim(C)});  // (rows, 4C)
    block_linear(l, BlockLinear::mlp_fc, h.data<float>(), w.mlp_c_fc_weight, w.mlp_c_fc_bias, fc.data<float>(),
                 rows);
    ops.gelu_tanh(fc.data<float>(), fc.data<float>(), rows * 4 * C);
    block_linear(l, BlockLinear::mlp_proj, fc.data<float>(), w.mlp_c_proj_weight, w.mlp_c_proj_bias,
                 proj.data<float>(), rows);
    ops.residual_add(x.data<float>(), proj.data<float>(), x.data<float>(), rows * C);
  }
}

Tensor Gpt::forward(std::span<const std::int32_t> tokens, std::size_t batch, std::size_t len, Logits which) {
  if (len > config().context)
    throw InputError("Gpt: a sequence of " + std::to_string(len) + " tokens exceeds the context of " +
                     std::to_string(config().context));
  KvCache scratch(config(), batch, len, DType::f32, device());
  return step(tokens, batch, len, scratch, which);
}

}  // namespace aiopt::nn
