#include "nn/block_tables.hpp"

#include <string>

#include "core/error.hpp"
#include "core/fault.hpp"

namespace aiopt::nn {

BlockTables::BlockTables(std::size_t blocks, std::size_t block_size) : block_count_(blocks), block_size_(block_size) {
  if (blocks == 0) throw InputError("paged KV cache: the pool needs at least one block (blocks = 0)");
  if (block_size == 0) throw InputError("paged KV cache: block_size = 0; a block holds at least one position");
  free_.reserve(blocks);
  for (std::size_t b = blocks; b-- > 0;) free_.push_back(static_cast<std::int32_t>(b));
}

const BlockTables::Sequence& BlockTables::find(std::size_t seq) const {
  const auto it = sequences_.find(seq);
  if (it == sequences_.end())
    throw InputError("paged KV cache: no sequence " + std::to_string(seq) + " (never reserved, or released)");
  return it->second;
}

BlockTables::Sequence& BlockTables::find(std::size_t seq) {
  return const_cast<Sequence&>(static_cast<const BlockTables&>(*this).find(seq));
}

std::size_t BlockTables::blocks_needed(std::size_t seq, std::size_t positions) const {
  const std::size_t want = (positions + block_size_ - 1) / block_size_;
  const auto it = sequences_.find(seq);
  const std::size_t have = it == sequences_.end() ? 0 : it->second.table.size();
  return want > have ? want - have : 0;
}

bool BlockTables::reserve(std::size_t seq, std::size_t positions) {
  const std::size_t need = blocks_needed(seq, positions);
  if (need > free_.size()) return false;
  Sequence& s = sequences_[seq];
  // The fault: a sequence's new block put first in its table instead of last, so its earlier
  // positions are read from a block never written for them (what a broken table update does).
  const bool misorder = fault::active("dynamic_batching.table_order");
  for (std::size_t i = 0; i < need; ++i) {
    const auto at = misorder && !s.table.empty() ? s.table.begin() : s.table.end();
    s.table.insert(at, free_.back());
    free_.pop_back();
  }
  return true;
}

void BlockTables::release(std::size_t seq) {
  const Sequence& s = find(seq);
  for (auto b = s.table.rbegin(); b != s.table.rend(); ++b) free_.push_back(*b);
  sequences_.erase(seq);
}

std::size_t BlockTables::length(std::size_t seq) const { return find(seq).length; }

const std::vector<std::int32_t>& BlockTables::table(std::size_t seq) const { return find(seq).table; }

void BlockTables::advance(std::size_t seq, std::size_t n) {
  Sequence& s = find(seq);
  if (s.length + n > s.table.size() * block_size_)
    throw InputError("paged KV cache: sequence " + std::to_string(seq) + " writes positions up to " +
                     std::to_string(s.length + n) + " past its " + std::to_string(s.table.size()) + " blocks of " +
                     std::to_string(block_size_));
  s.length += n;
}

std::size_t BlockTables::written_positions() const {
  std::size_t total = 0;
  for (const auto& [id, s] : sequences_) total += s.length;
  return total;
}

}  // namespace aiopt::nn
