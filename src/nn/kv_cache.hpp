#pragma once
// The KV cache of incremental decoding (TECHNIQUES.md §1): for every layer, the keys and values
// of all positions so far, preallocated for `capacity` positions, so a decode step computes one
// new position and appends it. Stored f32, or i8 with one fp32 scale per (batch, head, position)
// row (kernels/cpu/kv_int8.hpp). All storage is tensors, so the tracked allocator sees it.
#include <cstddef>
#include <vector>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "core/tensor.hpp"
#include "nn/config.hpp"

namespace aiopt::nn {

class KvCache {
 public:
  // dtype f32 or i8 (else InputError); capacity <= config.context (else InputError).
  KvCache(const GptConfig& config, std::size_t batch, std::size_t capacity, DType dtype,
          const Device& device);

  std::size_t batch() const { return batch_; }
  std::size_t capacity() const { return capacity_; }
  std::size_t length() const { return length_; }  // positions filled so far
  DType dtype() const { return dtype_; }
  // Bytes of every tensor the cache holds, as allocated (capacity positions).
  std::size_t bytes() const;
  // The analytic size of a cache of `positions` positions: 2·layers·positions·channels·batch
  // values of the dtype, plus for i8 the 2·layers·batch·heads·positions fp32 scales.
  static std::size_t analytic_bytes(const GptConfig& config, std::size_t batch, std::size_t positions,
                                    DType dtype);

  void clear() { length_ = 0; }
  // Keeps the first n positions (n <= length(), else InputError) and forgets the rest: the next
  // step writes over them. The rollback of speculative decoding after a rejected draft token.
  // Only the length changes, so it is the same on every device.
  void truncate(std::size_t n);
  // Called by Gpt after it has written positions [length, length + n).
  void advance(std::size_t n);

  // Layer l's tensors: k, v (batch, heads, capacity, head_dim) f32 or i8; for i8 also
  // k_scale, v_scale (batch, heads, capacity) f32 (empty tensors for f32).
  struct Layer {
    Tensor k, v, k_scale, v_scale;
  };
  std::size_t layer_count() const { return layers_.size(); }
  Layer& layer(std::size_t l) { return layers_.at(l); }
  const Layer& layer(std::size_t l) const { return layers_.at(l); }

 private:
  std::size_t batch_, capacity_, length_ = 0;
  DType dtype_;
  std::vector<Layer> layers_;
};

}  // namespace aiopt::nn
