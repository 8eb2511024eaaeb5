#pragma once
// The GEMM ceiling of a training step on the CPU: the time the step's matrix products alone take
// when run back to back at the model's shapes (every linear layer's forward, input-gradient and
// weight-gradient products, and the tied LM head's), with nothing else in between. A training
// step can approach this time but not beat it, so its ratio to the measured step time says how
// much of the step is overhead (attention, LayerNorm, GELU, the optimizer, memory traffic).
#include <cstddef>

#include "nn/config.hpp"

namespace aiopt::nn {

struct GemmCeiling {
  double flops = 0.0;    // of the products: 6 · (linear and head weights) · tokens
  double seconds = 0.0;  // the fastest of `repeats` runs of all of them
  double gflops() const { return seconds > 0 ? flops / seconds * 1e-9 : 0.0; }
};

// Times the products of one training step of `config` on (batch, seq_len) windows, on the CPU
// with the current threads, on random operands.
GemmCeiling gemm_ceiling(const GptConfig& config, std::size_t batch, std::size_t seq_len, int repeats = 3);

// 6 · parameters · tokens: the usual estimate of a training step's FLOPs (Kaplan et al. 2020),
// forward 2 and backward 4 per parameter and token; attention's own products are not in it.
double training_step_flops(const GptConfig& config, std::size_t tokens);

}  // namespace aiopt::nn
