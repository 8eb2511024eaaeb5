#pragma once
// The paged KV cache (TECHNIQUES.md §11): for every layer, key and value pools of fixed-size blocks
// on the model's device, addressed through the block tables of nn/block_tables.hpp. Layout of the
// pools: kernels/paged_batch.hpp. All storage is tensors, so the tracked allocator sees it. f32.
#include <cstddef>
#include <vector>

#include "core/device.hpp"
#include "core/tensor.hpp"
#include "nn/block_tables.hpp"
#include "nn/config.hpp"

namespace aiopt::nn {

class PagedKvCache {
 public:
  // InputError for zero blocks or block_size, or a block longer than the model's context.
  PagedKvCache(const GptConfig& config, std::size_t blocks, std::size_t block_size, const Device& device);

  BlockTables& tables() { return tables_; }
  const BlockTables& tables() const { return tables_; }

  // Layer l's pools: k, v (blocks, heads, block_size, head_dim) f32.
  struct Layer {
    Tensor k, v;
  };
  std::size_t layer_count() const { return layers_.size(); }
  Layer& layer(std::size_t l) { return layers_.at(l); }
  const Layer& layer(std::size_t l) const { return layers_.at(l); }

 private:
  BlockTables tables_;
  std::vector<Layer> layers_;
};

}  // namespace aiopt::nn
