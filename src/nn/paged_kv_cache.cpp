#include "nn/paged_kv_cache.hpp"

#include <string>

#include "core/error.hpp"

namespace aiopt::nn {

PagedKvCache::PagedKvCache(const GptConfig& config, std::size_t blocks, std::size_t block_size, const Device& device)
    : tables_(blocks, block_size) {
  config.validate();
  if (block_size > config.context)
    throw InputError("paged KV cache: block_size " + std::to_string(block_size) + " exceeds the model's context of " +
                     std::to_string(config.context));
  const auto n = static_cast<std::int64_t>(blocks);
  const auto h = static_cast<std::int64_t>(config.heads);
  const auto t = static_cast<std::int64_t>(block_size);
  const auto d = static_cast<std::int64_t>(config.head_dim());
  layers_.resize(config.layers);
  for (auto& layer : layers_) {
    layer.k = Tensor::empty({n, h, t, d}, DType::f32, device);
    layer.v = Tensor::empty({n, h, t, d}, DType::f32, device);
  }
}

}  // namespace aiopt::nn
