#pragma once
// The two clocks of the serving loop (scheduler.hpp): the model run in real time, and a virtual
// clock advanced by the step-cost model.
#include <chrono>
#include <cstdint>
#include <vector>

#include "nn/gpt.hpp"
#include "nn/paged_kv_cache.hpp"
#include "techniques/dynamic_batching/scheduler.hpp"
#include "techniques/dynamic_batching/step_cost.hpp"

namespace aiopt::dynamic_batching {

// Runs every step on the model through its paged cache; the time is the machine's (steady
// clock, from construction); idle time is slept.
class RealExecutor : public Executor {
 public:
  RealExecutor(nn::Gpt& model, nn::PagedKvCache& cache);
  double now() const override;
  void wait_until(double t) override;
  std::vector<std::int32_t> run(std::span<const nn::Gpt::RaggedSequence> batch, const StepShape& shape) override;

 private:
  nn::Gpt& model_;
  nn::PagedKvCache& cache_;
  std::chrono::steady_clock::time_point start_;
};

// Runs no model: each step advances the time by the cost model's time for it (StepCost::sample_ms,
// seeded) and the tables' lengths by the step's tokens.
class VirtualExecutor : public Executor {
 public:
  VirtualExecutor(StepCost cost, nn::BlockTables& tables, std::uint64_t seed = 1)
      : cost_(std::move(cost)), tables_(tables), seed_(seed) {}
  double now() const override { return now_; }
  void wait_until(double t) override { now_ = std::max(now_, t); }
  std::vector<std::int32_t> run(std::span<const nn::Gpt::RaggedSequence> batch, const StepShape& shape) override;

 private:
  StepCost cost_;
  nn::BlockTables& tables_;
  std::uint64_t seed_;
  std::uint64_t steps_ = 0;
  double now_ = 0.0;
};

}  // namespace aiopt::dynamic_batching
