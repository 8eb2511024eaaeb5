#pragma once
// The bookkeeping of a paged KV cache (TECHNIQUES.md §11; Kwon et al. 2023): a pool of fixed-size
// blocks and, for each sequence, its block table, the pool blocks holding its positions in order,
// and its length. Blocks are taken when a sequence grows past its last one and given back when it
// finishes or is preempted, so a sequence holds at most one partly filled block, whatever its
// final length. A contiguous cache is the same pool with one block per sequence of the longest
// length a request may reach. No storage: PagedKvCache pairs this with the pools, and a scheduler
// on a virtual clock uses it alone.
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace aiopt::nn {

class BlockTables {
 public:
  // InputError for zero blocks or a zero block_size.
  BlockTables(std::size_t blocks, std::size_t block_size);

  std::size_t block_size() const { return block_size_; }
  std::size_t block_count() const { return block_count_; }
  std::size_t free_blocks() const { return free_.size(); }
  std::size_t used_blocks() const { return block_count_ - free_.size(); }

  // Sequences, by a caller's id.
  bool contains(std::size_t seq) const { return sequences_.count(seq) != 0; }
  std::size_t sequence_count() const { return sequences_.size(); }
  // Blocks the table of `seq` (absent: an empty one) lacks to hold `positions` positions.
  std::size_t blocks_needed(std::size_t seq, std::size_t positions) const;
  // Grows the table of `seq` (added when absent) to hold `positions` positions. false, taking
  // nothing, when the pool has too few free blocks.
  bool reserve(std::size_t seq, std::size_t positions);
  // Gives every block of `seq` back to the pool and forgets it (InputError when absent).
  void release(std::size_t seq);
  // Positions written so far, and the table (InputError when absent).
  std::size_t length(std::size_t seq) const;
  const std::vector<std::int32_t>& table(std::size_t seq) const;
  // Records n more positions of `seq` written (InputError past its table).
  void advance(std::size_t seq, std::size_t n);
  // Positions the tables can hold (blocks in use × block_size) and positions written: their
  // difference is the cache's waste at this moment.
  std::size_t reserved_positions() const { return used_blocks() * block_size_; }
  std::size_t written_positions() const;

 private:
  struct Sequence {
    std::vector<std::int32_t> table;
    std::size_t length = 0;
  };
  const Sequence& find(std::size_t seq) const;
  Sequence& find(std::size_t seq);

  std::size_t block_count_, block_size_;
  std::vector<std::int32_t> free_;  // a stack: the block given back last is taken first
  std::unordered_map<std::size_t, Sequence> sequences_;
};

}  // namespace aiopt::nn
