#include "nn/batches.hpp"

#include <algorithm>
#include <string>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace aiopt::nn {

namespace {

// Copies the window at `offset` into row `row` of the batch: inputs [o, o + T), targets shifted by one.
void fill_row(Batch& b, std::span<const std::int32_t> tokens, std::size_t row, std::size_t offset) {
  const std::size_t T = b.seq_len;
  std::copy_n(tokens.begin() + static_cast<std::ptrdiff_t>(offset), T, b.inputs.begin() + static_cast<std::ptrdiff_t>(row * T));
  std::copy_n(tokens.begin() + static_cast<std::ptrdiff_t>(offset + 1), T,
              b.targets.begin() + static_cast<std::ptrdiff_t>(row * T));
}

Batch empty_batch(std::size_t batch, std::size_t seq_len) {
  return {batch, seq_len, std::vector<std::int32_t>(batch * seq_len), std::vector<std::int32_t>(batch * seq_len)};
}

}  // namespace

BatchSampler::BatchSampler(std::span<const std::int32_t> tokens, std::size_t batch, std::size_t seq_len,
                           std::uint64_t seed)
    : tokens_(tokens), batch_(batch), seq_len_(seq_len), seed_(seed) {
  if (batch == 0 || seq_len == 0)
    throw InputError("batch sampler: batch (" + std::to_string(batch) + ") and seq_len (" + std::to_string(seq_len) +
                     ") must be positive");
  if (tokens.size() < seq_len + 1)
    throw InputError("batch sampler: " + std::to_string(tokens.size()) + " tokens are too few for one window of seq_len " +
                     std::to_string(seq_len) + " (it needs seq_len + 1 = " + std::to_string(seq_len + 1) + ")");
}

Batch BatchSampler::next() {
  Batch b = empty_batch(batch_, seq_len_);
  // Offsets o in [0, N − T − 1]: the window's targets end at o + T, the last token.
  const std::uint64_t offsets = tokens_.size() - seq_len_;
  for (std::size_t r = 0; r < batch_; ++r) {
    // Draw k is a pure function of (seed, k): resuming at set_draws(k) repeats the same windows.
    // The modulo's bias is at most offsets / 2^64: nil for any corpus.
    const std::uint64_t offset = rng::bits(seed_, draws_++) % offsets;
    fill_row(b, tokens_, r, static_cast<std::size_t>(offset));
  }
  return b;
}

std::vector<Batch> validation_batches(std::span<const std::int32_t> tokens, std::size_t batch, std::size_t seq_len,
                                      std::size_t max_batches) {
  if (batch == 0 || seq_len == 0 || max_batches == 0)
    throw InputError("validation batches: batch (" + std::to_string(batch) + "), seq_len (" + std::to_string(seq_len) +
                     ") and max_batches (" + std::to_string(max_batches) + ") must be positive");
  // Window k starts at k·T; its targets end at k·T + T, so (N − 1) / T windows fit side by side.
  const std::size_t windows = tokens.empty() ? 0 : (tokens.size() - 1) / seq_len;
  const std::size_t batches = std::min(max_batches, windows / batch);
  if (batches == 0)
    throw InputError("validation batches: " + std::to_string(tokens.size()) + " tokens hold " +
                     std::to_string(windows) + " windows of seq_len " + std::to_string(seq_len) +
                     ", fewer than one batch of " + std::to_string(batch));
  // Evenly spaced window indices i·windows/used, distinct because used <= windows.
  const std::size_t used = batches * batch;
  std::vector<Batch> out;
  for (std::size_t j = 0; j < batches; ++j) {
    Batch b = empty_batch(batch, seq_len);
    for (std::size_t r = 0; r < batch; ++r) {
      const std::size_t i = j * batch + r;
      const std::size_t window = i * windows / used;  // i·windows < windows² fits 64 bits below 2^32 windows
      fill_row(b, tokens, r, window * seq_len);
    }
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace aiopt::nn
