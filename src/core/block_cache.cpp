#include "core/block_cache.hpp"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <new>

namespace aiopt::memory {

BlockCache::BlockCache(BlockSource& source, std::size_t min_slack_bytes)
    : source_(source), min_slack_bytes_(min_slack_bytes) {}

BlockCache::~BlockCache() { trim(); }

std::size_t BlockCache::rounded_size(std::size_t bytes) {
  if (bytes > std::numeric_limits<std::size_t>::max() - granule) throw std::bad_alloc();
  return (bytes + granule - 1) / granule * granule;
}

std::size_t BlockCache::class_size(std::size_t bytes) {
  const std::size_t rounded = rounded_size(bytes);
  // Steps of a quarter of the power of two at or below the size: 2^e·{1, 1.25, 1.5, 1.75, 2}.
  const std::size_t step = std::max(granule, std::bit_floor(rounded) / 4);
  if (rounded > std::numeric_limits<std::size_t>::max() - step) throw std::bad_alloc();
  return (rounded + step - 1) / step * step;
}

std::size_t BlockCache::slack() const { return std::max(min_slack_bytes_, in_use_bytes_); }

// The smallest free block of rounded..limit bytes, taken out of the free blocks; else nullptr.
void* BlockCache::take_free(std::size_t rounded, std::size_t limit) {
  const auto it = free_.lower_bound(rounded);
  if (it == free_.end() || it->first > limit) return nullptr;
  const std::size_t size = it->first;
  void* block = it->second;
  free_.erase(it);
  free_bytes_ -= size;
  return hand_out(block, size);
}

void BlockCache::fence() {
  source_.fence();
  for (const auto& [size, block] : pending_) free_.emplace(size, block);
  free_bytes_ += pending_bytes_;
  pending_.clear();
  pending_bytes_ = 0;
}

void BlockCache::give_back(Blocks& blocks, std::size_t& bytes) noexcept {
  for (const auto& [size, block] : blocks) source_.free(block);
  reserved_bytes_ -= bytes;
  blocks.clear();
  bytes = 0;
}

void* BlockCache::hand_out(void* block, std::size_t size) {
  in_use_.emplace(block, size);
  in_use_bytes_ += size;
  return block;
}

void* BlockCache::allocate(std::size_t bytes) {
  const std::size_t rounded = rounded_size(bytes);
  const std::size_t size = class_size(bytes);
  std::lock_guard lock(mutex_);
  if (void* block = take_free(rounded, size)) return block;
  if (pending_bytes_ >= slack()) {
    fence();
    if (void* block = take_free(rounded, size)) return block;
  }
  if (free_bytes_ >= slack()) give_back(free_, free_bytes_);
  if (void* block = source_.allocate(size)) {
    reserved_bytes_ += size;
    return hand_out(block, size);
  }
  // Out of memory: reuse what a fence frees, else give every unused block back and retry once
  // at the rounded size.
  fence();
  if (void* block = take_free(rounded, size)) return block;
  give_back(free_, free_bytes_);
  void* block = source_.allocate(rounded);
  if (!block) throw std::bad_alloc();
  reserved_bytes_ += rounded;
  return hand_out(block, rounded);
}

void BlockCache::release(void* block) noexcept {
  if (!block) return;
  std::lock_guard lock(mutex_);
  const auto it = in_use_.find(block);
  if (it == in_use_.end()) {
    // Not a block of this cache, or released twice: continuing would hand one block to two owners.
    std::fprintf(stderr, "aiopt: BlockCache::release of %p, which this cache did not hand out\n", block);
    std::abort();
  }
  const std::size_t size = it->second;
  in_use_.erase(it);
  in_use_bytes_ -= size;
  pending_.emplace(size, block);
  pending_bytes_ += size;
}

void BlockCache::trim() noexcept {
  std::lock_guard lock(mutex_);
  give_back(pending_, pending_bytes_);
  give_back(free_, free_bytes_);
}

std::size_t BlockCache::reserved_bytes() const {
  std::lock_guard lock(mutex_);
  return reserved_bytes_;
}

std::size_t BlockCache::in_use_bytes() const {
  std::lock_guard lock(mutex_);
  return in_use_bytes_;
}

}  // namespace aiopt::memory
