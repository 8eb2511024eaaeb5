#include "techniques/dynamic_batching/executor.hpp"

#include <algorithm>
#include <thread>

#include "nn/decoding.hpp"

namespace aiopt::dynamic_batching {

RealExecutor::RealExecutor(nn::Gpt& model, nn::PagedKvCache& cache)
    : model_(model), cache_(cache), start_(std::chrono::steady_clock::now()) {}

double RealExecutor::now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void RealExecutor::wait_until(double t) {
  // Sleep to shortly before t, then poll: a sleeping thread wakes tens of microseconds late, and
  // at this model's step times that would be a step's worth of latency no step caused.
  const auto until = start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                  std::chrono::duration<double>(t));
  std::this_thread::sleep_until(until - std::chrono::microseconds(500));
  while (std::chrono::steady_clock::now() < until) {
  }
}

std::vector<std::int32_t> RealExecutor::run(std::span<const nn::Gpt::RaggedSequence> batch, const StepShape&) {
  Tensor logits = model_.step(batch, cache_);
  // The copy waits for the device, so the step's time includes its work.
  if (!logits.device().is_cpu()) logits = logits.to(Device::cpu(), model_.stream());
  const std::size_t vocab = model_.config().vocab;
  std::vector<std::int32_t> next(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i)
    next[i] = nn::argmax(std::span<const float>(logits.data<float>() + i * vocab, vocab));
  return next;
}

std::vector<std::int32_t> VirtualExecutor::run(std::span<const nn::Gpt::RaggedSequence> batch, const StepShape& shape) {
  for (const auto& s : batch) tables_.advance(s.id, s.tokens.size());
  now_ += cost_.sample_ms(shape, seed_, steps_++) * 1e-3;
  return std::vector<std::int32_t>(batch.size(), 0);
}

}  // namespace aiopt::dynamic_batching
