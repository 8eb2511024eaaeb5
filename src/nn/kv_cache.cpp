#include "nn/kv_cache.hpp"

#include <string>

#include "core/error.hpp"

namespace aiopt::nn {

KvCache::KvCache(const GptConfig& config, std::size_t batch, std::size_t capacity, DType dtype,
                 const Device& device)
    : batch_(batch), capacity_(capacity), dtype_(dtype) {
  config.validate();
  if (dtype != DType::f32 && dtype != DType::i8)
    throw InputError("KV cache dtype '" + to_string(dtype) + "' is not supported (allowed: f32, i8)");
  if (batch == 0) throw InputError("KV cache batch must be positive");
  if (capacity == 0 || capacity > config.context)
    throw InputError("KV cache capacity " + std::to_string(capacity) + " is outside [1, " +
                     std::to_string(config.context) + "] (the model's context)");
  const auto b = static_cast<std::int64_t>(batch);
  const auto h = static_cast<std::int64_t>(config.heads);
  const auto t = static_cast<std::int64_t>(capacity);
  const auto d = static_cast<std::int64_t>(config.head_dim());
  layers_.resize(config.layers);
  for (auto& layer : layers_) {
    layer.k = Tensor::empty({b, h, t, d}, dtype, device);
    layer.v = Tensor::empty({b, h, t, d}, dtype, device);
    if (dtype == DType::i8) {
      layer.k_scale = Tensor::empty({b, h, t}, DType::f32, device);
      layer.v_scale = Tensor::empty({b, h, t}, DType::f32, device);
    }
  }
}

std::size_t KvCache::bytes() const {
  std::size_t total = 0;
  for (const auto& layer : layers_) total += layer.k.bytes() + layer.v.bytes() + layer.k_scale.bytes() + layer.v_scale.bytes();
  return total;
}

std::size_t KvCache::analytic_bytes(const GptConfig& config, std::size_t batch, std::size_t positions,
                                    DType dtype) {
  const std::size_t values = 2 * config.layers * positions * config.channels * batch;
  std::size_t total = storage_bytes(dtype, values);
  if (dtype == DType::i8) total += 2 * config.layers * batch * config.heads * positions * sizeof(float);
  return total;
}

void KvCache::advance(std::size_t n) {
  if (length_ + n > capacity_)
    throw InputError("KV cache overflow: " + std::to_string(length_) + " + " + std::to_string(n) +
                     " positions exceed its capacity of " + std::to_string(capacity_));
  length_ += n;
}

void KvCache::truncate(std::size_t n) {
  if (n > length_)
    throw InputError("KV cache truncate to " + std::to_string(n) + " positions: it holds only " +
                     std::to_string(length_));
  length_ = n;
}

}  // namespace aiopt::nn
