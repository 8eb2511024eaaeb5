#pragma once
// kv_caching: the int8 cache checked where its error enters the model, at every layer's attention
// output. During one host generation an AttentionRecorder keeps what each block's attention
// reads and writes; check_int8_attention then recomputes each checked query's attention exactly
// (double) from the unquantized keys and values and bounds the int8 output's distance to it by
// the rounding of the cached rows (the derivation is in int8_attention_check.cpp).
#include <cstddef>
#include <vector>

#include "nn/gpt.hpp"
#include "nn/weights.hpp"

namespace aiopt::kv_caching {

// A host model's blocks' linear layers, computed as the fp32 weights compute them (cpu::linear, so
// the generation is unchanged), recording per layer the fused QKV projection's output (q, k and v
// of every position, before the cache quantizes k and v) and the attention's merged output (the
// output projection's input).
class AttentionRecorder : public nn::LinearLayers {
 public:
  // `capacity`: the positions a generation reaches, as its cache's.
  AttentionRecorder(const nn::GptWeights& weights, std::size_t batch, std::size_t capacity);
  void linear(std::size_t layer, nn::BlockLinear which, const float* x, float* y, std::size_t m) const override;

  const std::vector<float>& qkv(std::size_t layer) const { return qkv_[layer]; }        // (batch, capacity, 3C)
  const std::vector<float>& attention(std::size_t layer) const { return att_[layer]; }  // (batch, capacity, C)
  std::size_t positions(std::size_t layer) const { return filled_[layer]; }            // recorded so far

 private:
  const nn::GptWeights& weights_;
  std::size_t batch_, capacity_, channels_;
  mutable std::vector<std::vector<float>> qkv_, att_;
  mutable std::vector<std::size_t> filled_;  // per layer; advanced by the output projection's call
};

// How the int8 attention outputs sat against their bound.
struct AttentionAgreement {
  double max_error_of_bound = 0.0;  // the largest |int8 output − exact| / its bound (the check: <= 1)
  double max_rel_error = 0.0;       // the largest |int8 output − exact| / max |v| of its head and column
};

// Checks the recorded attention outputs of query positions [first, end) in every layer, batch row
// and head against exact attention over the recorded (unquantized) keys and values: each element
// within the bound derived in the .cpp. Throws CheckFailed naming the layer, position and head
// beyond it.
AttentionAgreement check_int8_attention(const AttentionRecorder& recorded, const nn::GptConfig& model,
                                        std::size_t batch, std::size_t first, std::size_t end);

}  // namespace aiopt::kv_caching
