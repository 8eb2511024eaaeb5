#pragma once
// A caching allocator of device memory blocks, under the tracked allocator (core/memory.hpp):
// a released block is kept and handed out again instead of being returned to the device, so that
// a step that allocates and frees its tensors costs no cudaMalloc or cudaFree once warm. (cudaFree
// waits for the whole device, so each one idles the GPU inside a timed step.) The ledger above it
// still counts exactly the bytes callers asked for; this class counts what it holds from the
// device (reserved_bytes), which the report gives beside the tracked peak.
//
// When a block may be reused. Work is queued on CUDA streams and runs after the host has moved
// on: a tensor freed at the end of an op may still be read by kernels queued on the op's stream.
// Reusing its block is safe only once that work has passed. The usual designs tag each block with
// the one stream that uses it (PyTorch's caching allocator, or CUDA's stream-ordered pool with
// cudaFreeAsync on that stream) and reuse it on that stream only, relying on stream order. That
// needs to know, at release, every stream that touched the block, and here nothing does: buffers
// are allocated and released without a stream (memory::Buffer holds none), and one tensor is
// commonly written on the legacy default stream (Tensor::from_host, set_zero, cudaMemcpy) and read
// by kernels on a run's cudaStreamNonBlocking stream, which does not wait for the legacy stream.
// A stream tag would then be wrong exactly where it matters. So this cache orders by the device,
// not by a stream: a released block waits as "pending" until a fence (cudaDeviceSynchronize: all
// work queued before it, on every stream, is done) and only then becomes "free" for reuse.
// cudaFree gives the same guarantee by synchronizing the device at every call, once per tensor;
// the cache pays one fence per many releases. With the slack = max(min_slack_bytes, bytes in use):
//   1. a request is served from the free blocks when one fits;
//   2. else, when the pending blocks hold at least the slack, one fence makes them all free, and a
//      fitting one serves the request;
//   3. else, when the free blocks hold at least the slack and none fits (the sizes asked for have
//      moved on), they go back to the device;
//   4. a new block comes from the device.
// In a steady loop of steps, each of which frees what it allocated, the pending blocks grow by
// one step's churn per step, so a fence falls about once per slack / churn steps (once per step
// when a step churns more than is in use). A new block is made only while the pending and the
// free blocks each hold less than the slack, so what the device holds for the cache only grows
// up to in use + 2·slack + the new block, in use and slack counted at that moment.
//
// Size classes. A request rounds up to a multiple of 512 bytes (the granule: cudaMalloc aligns to
// 256), and a new block is made at the request's class: four classes per power of two, the sizes
// m·2^e with m in {4, 5, 6, 7}, so it wastes less than a quarter of the request. A free block of
// b bytes serves a request when rounded size <= b <= the request's class, so a tensor that grows
// a little each step (a decode step's attention scores) keeps reusing the same few blocks.
//
// Out of memory: the cache fences (every pending block becomes free), reuses a free block if one
// fits, else returns every unused block to the device and retries once at the rounded size
// (not the class), and only then throws std::bad_alloc.
//
// Thread-safe: one mutex, held across a fence too (allocations are tensors, not hot scalars).
#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

namespace aiopt::memory {

// The device memory a BlockCache draws on.
class BlockSource {
 public:
  virtual ~BlockSource() = default;
  // A new block of `bytes`, or nullptr when the device has no room; any other failure throws.
  virtual void* allocate(std::size_t bytes) = 0;
  // Returns a block to the device. Queued work may still use it: the source must wait for that
  // work first (cudaFree synchronizes the device).
  virtual void free(void* block) noexcept = 0;
  // Returns once all work queued on the device before the call, on any stream, is done; throws
  // if the device reports a failure (a fault left by an earlier kernel).
  virtual void fence() = 0;
};

class BlockCache {
 public:
  static constexpr std::size_t granule = 512;
  // The slack when little is in use: 64 MiB lets a small model's steps (a few MiB of tensors
  // each) run many steps per fence while holding little beside what is in use.
  static constexpr std::size_t default_min_slack_bytes = std::size_t{64} << 20;

  explicit BlockCache(BlockSource& source, std::size_t min_slack_bytes = default_min_slack_bytes);
  // Returns every unused block; blocks still in use are their callers' (never freed here).
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // A block of at least `bytes` (> 0), reused or new; throws std::bad_alloc when the device has
  // no room even after the cache gave back its unused blocks.
  void* allocate(std::size_t bytes);
  // Takes back a block from allocate(); it is reused only after a later fence.
  void release(void* block) noexcept;
  // Returns every unused block (pending or free) to the device.
  void trim() noexcept;

  std::size_t reserved_bytes() const;  // held from the device: blocks in use, pending and free
  std::size_t in_use_bytes() const;    // blocks handed out and not released (their full sizes)

  static std::size_t rounded_size(std::size_t bytes);  // bytes up to a multiple of granule
  static std::size_t class_size(std::size_t bytes);    // the size a new block for `bytes` gets

 private:
  using Blocks = std::multimap<std::size_t, void*>;  // size -> block
  std::size_t slack() const;
  void* take_free(std::size_t rounded, std::size_t limit);
  void fence();
  void give_back(Blocks& blocks, std::size_t& bytes) noexcept;
  void* hand_out(void* block, std::size_t size);

  BlockSource& source_;
  const std::size_t min_slack_bytes_;
  mutable std::mutex mutex_;
  std::unordered_map<void*, std::size_t> in_use_;  // block -> size
  Blocks pending_;  // released since the last fence: queued work may still use them
  Blocks free_;     // released before a fence: safe to reuse
  std::size_t in_use_bytes_ = 0;
  std::size_t pending_bytes_ = 0;
  std::size_t free_bytes_ = 0;
  std::size_t reserved_bytes_ = 0;
};

}  // namespace aiopt::memory
