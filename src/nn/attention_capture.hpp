#pragma once
// One attention layer's queries, keys and values as the GPT computes them on real text: the
// layer's input after its LayerNorm (ln_1) and fused QKV projection, split into heads, in the
// layout the attention kernels take (kernels/attention_shape.hpp), beside the attention output
// the model computed from them. Attention techniques run their kernels on these inputs, whose
// scores have the structure a trained model gives them, instead of only on generated ones.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "core/memory.hpp"
#include "kernels/attention_shape.hpp"

namespace aiopt::nn {

class Gpt;  // nn/gpt.hpp; declared only, so that technique headers the CUDA runs include stay light

struct AttentionCapture {
  kernels::AttentionShape shape;  // (B, H, T, d) causal self-attention, scale 1/√d: the model's
  memory::Buffer<float> q, k, v;  // (B, H, T, d) each, host
  memory::Buffer<float> out;      // (B, H, T, d): the layer's attention output, before attn.c_proj
};

// Runs the CPU `model` over `tokens` (batch, len) and captures block `layer`'s q, k, v and
// attention output. The model's weights and its outputs are those of a plain forward: the capture
// reads the layer's projections as they pass. Throws InputError when `layer` is not a block of
// the model, and for a model not on the CPU or tokens the model rejects (Gpt::forward).
AttentionCapture capture_attention(Gpt& model, std::span<const std::int32_t> tokens, std::size_t batch,
                                   std::size_t len, std::size_t layer);

// The same for the trained model of `preset` (its standard recipe, standard_training, from the
// model cache: trained on first use) over the first `batch` of the validation windows of `len`
// tokens (validation_batches), the text it was evaluated on and never trained on. Throws
// InputError when len exceeds the model's context or the validation text holds fewer than
// `batch` windows.
AttentionCapture capture_trained_attention(const std::string& preset, std::size_t layer, std::size_t batch,
                                           std::size_t len);

}  // namespace aiopt::nn
