#pragma once
// (batch, seq_len) training windows over a token array: inputs are tokens[o, o + T) and targets
// tokens[o + 1, o + T + 1) for a window offset o. Training windows are drawn at random offsets
// from a counter-based RNG, so the sampler's whole state is (seed, draws) and a resumed run
// draws the same windows; validation windows are a fixed, evenly spaced set.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace aiopt::nn {

struct Batch {
  std::size_t batch = 0;
  std::size_t seq_len = 0;
  std::vector<std::int32_t> inputs;   // (batch, seq_len)
  std::vector<std::int32_t> targets;  // (batch, seq_len)
};

class BatchSampler {
 public:
  // Throws InputError when tokens.size() < seq_len + 1 or batch/seq_len is zero. The sampler
  // keeps a view: `tokens` must outlive it.
  BatchSampler(std::span<const std::int32_t> tokens, std::size_t batch, std::size_t seq_len, std::uint64_t seed);

  Batch next();
  std::uint64_t draws() const { return draws_; }  // windows drawn so far (the resume state)
  void set_draws(std::uint64_t draws) { draws_ = draws; }

 private:
  std::span<const std::int32_t> tokens_;
  std::size_t batch_, seq_len_;
  std::uint64_t seed_;
  std::uint64_t draws_ = 0;
};

// Up to `max_batches` full batches of non-overlapping windows spread evenly over `tokens`, the
// same every call: window k of the (N − 1) / seq_len that fit side by side starts at k·seq_len.
// Throws InputError when not even one full batch of windows fits.
std::vector<Batch> validation_batches(std::span<const std::int32_t> tokens, std::size_t batch,
                                      std::size_t seq_len, std::size_t max_batches);

}  // namespace aiopt::nn
