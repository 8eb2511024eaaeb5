#pragma once
// The GPT-2 model's forward pass on the CPU or a CUDA device (DESIGN.md "The model"): embedding,
// pre-LayerNorm blocks (fused QKV projection, causal multi-head attention, output projection,
// 4× GELU MLP, residuals), final LayerNorm, LM head tied to wte. All fp32. Every activation is a
// tensor from the tracked allocator. The device is the weights' device.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>

#include "core/tensor.hpp"
#include "nn/kv_cache.hpp"
#include "nn/paged_kv_cache.hpp"
#include "nn/weights.hpp"

namespace aiopt::nn {

enum class Logits { last, all };

// The four linear layers of a block.
enum class BlockLinear { attn_qkv, attn_proj, mlp_fc, mlp_proj };

// Computes the blocks' linear layers in place of the fp32 weights (quantized weights, for one):
// y (m, out) = x (m, in)·Wᵀ + b, pointers on the model's device. The LM head and everything else
// stay fp32.
class LinearLayers {
 public:
  virtual ~LinearLayers() = default;
  virtual void linear(std::size_t layer, BlockLinear which, const float* x, float* y, std::size_t m) const = 0;
};

class Gpt {
 public:
  explicit Gpt(GptWeights weights);

  const GptConfig& config() const { return weights_.config; }
  const Device& device() const;
  const GptWeights& weights() const { return weights_; }
  GptWeights& weights() { return weights_; }
  // CUDA stream (cudaStream_t) the model's kernels run on; nullptr: the default stream.
  void set_stream(void* stream) { stream_ = stream; }
  void* stream() const { return stream_; }
  // Replaces the blocks' linear layers; nullptr restores the fp32 weights.
  void set_linear_layers(std::shared_ptr<const LinearLayers> layers) { linear_layers_ = std::move(layers); }

  // Runs `len` new tokens per sequence at positions [cache.length(), cache.length() + len),
  // appends their keys and values to `cache`, and returns the logits on the model's device:
  // (batch, len, vocab) for Logits::all, (batch, 1, vocab) of the last position for Logits::last.
  // tokens: host (batch, len), row-major. A prefill is one call with the prompt; a decode step is
  // a call with len 1. Throws InputError when a token is outside [0, vocab) or the cache would
  // overflow its capacity, or when batch differs from the cache's.
  Tensor step(std::span<const std::int32_t> tokens, std::size_t batch, std::size_t len, KvCache& cache,
              Logits which = Logits::last);

  // One step of a ragged batch through a paged KV cache (iteration-level scheduling): sequence i
  // brings batch[i].tokens new tokens (a prefill chunk or one decode token) at positions
  // [cache.length(id), + its count), for which the cache already holds blocks
  // (PagedKvCache::reserve), and all of them run as one set of products. Returns the logits of each
  // sequence's last new position, (sequences, vocab) on the model's device. Throws InputError for
  // an empty batch or sequence, a sequence twice, a token outside the vocabulary, or positions
  // past the context or the sequence's blocks.
  struct RaggedSequence {
    std::size_t id;
    std::span<const std::int32_t> tokens;
  };
  Tensor step(std::span<const RaggedSequence> batch, PagedKvCache& cache);

  // The whole sequence from position 0 with a scratch f32 cache of `len` positions (what
  // recompute-style generation runs at every step). tokens: (batch, len).
  Tensor forward(std::span<const std::int32_t> tokens, std::size_t batch, std::size_t len,
                 Logits which = Logits::all);

 private:
  // The blocks over the residual stream x ((rows, C), updated in place), the same for every kind
  // of step; `attention(layer, qkv, out)` turns the fused projection's rows (rows, 3C) into the
  // merged heads (rows, C), writing the layer's keys and values into its cache on the way.
  using Attention = std::function<void(std::size_t layer, const float* qkv, float* out)>;
  void run_blocks(Tensor& x, std::size_t rows, const Attention& attention) const;

  GptWeights weights_;
  void* stream_ = nullptr;
  std::shared_ptr<const LinearLayers> linear_layers_;
};

}  // namespace aiopt::nn
