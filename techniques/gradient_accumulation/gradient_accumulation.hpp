#pragma once
// gradient_accumulation: memory vs training dynamics (TECHNIQUES.md §14). The gradient of one
// optimizer step over an effective batch of B = b·k sequences, from one pass over all B
// (large_batch) or from k passes over micro-batches of b, each entering with 1/k (accumulate):
// for a mean-reduced loss the two are the same gradient, at a 1/k of the activation memory.
// The run checks that equality, trains both ways from one initialization to compare the loss
// trajectories, and estimates the gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al.
// 2018) from the micro-batch and the large-batch gradients. One code path for the CPU and CUDA:
// the device is where the weights live. See README.md beside this file.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "nn/batches.hpp"
#include "nn/config.hpp"
#include "nn/corpus.hpp"
#include "nn/trainer.hpp"
#include "nn/weights.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_gradient_accumulation();

// The pieces the run and the tests share.
namespace gradient_accumulation {

enum class Method { large_batch, accumulate };
const VariantTable<Method>& methods();  // the variants, one per method
inline Method parse_method(const std::string& variant) { return methods().parse(variant); }
inline const std::string& to_string(Method method) { return methods().name(method); }

// One case, parsed and checked.
struct Shape {
  nn::GptConfig model;
  std::size_t micro_batch = 0;  // b, sequences
  std::size_t k = 0;            // micro-batches per optimizer step
  std::size_t seq_len = 0;
  std::size_t steps = 0;          // optimizer steps of the loss-trajectory comparison
  std::size_t noise_batches = 0;  // large batches the noise scale is averaged over
  std::uint64_t seed = 0;         // the case seed: weights and the trainers' windows
  std::uint64_t window_seed = 0;  // the fixed step's and the noise scale's windows

  std::size_t effective_batch() const { return micro_batch * k; }  // B = b·k

  // Throws InputError naming the parameter, the bad value and what is allowed.
  static Shape from(const Case& c);
};

// The corpus of a case: synthetic, large enough for `steps` large batches of distinct windows and
// one validation batch of B windows.
nn::TokenSplit load_tokens(const Shape& shape);

// The trainer's configuration for one way of taking the step: batch b and accumulate k, or batch
// b·k and accumulate 1. Everything else (initialization, windows, AdamW, schedule) is the same.
nn::TrainConfig train_config(const Shape& shape, Method method);

// Rows [first, first + rows) of `batch`.
nn::Batch rows_of(const nn::Batch& batch, std::size_t first, std::size_t rows);

// grads = the mean-loss gradient of `batch` (B rows) taken the method's way: one pass, or k passes
// over consecutive micro-batches of B / k rows, each with grad_scale 1/k. grads is zeroed first.
void step_gradient(Method method, const nn::GptWeights& weights, const nn::Batch& batch, std::size_t k,
                   nn::GptWeights& grads, void* stream = nullptr);

// The simple noise scale's pieces (McCandlish et al. 2018, appendix A): with E|G_b|² = |G|² + trΣ/b
// for the mean gradient of b independent sequences, the squared norms at two batch sizes b < B
// give unbiased estimates
//   |G|² ≈ (B·|G_B|² − b·|G_b|²) / (B − b),   tr Σ ≈ (|G_b|² − |G_B|²) / (1/b − 1/B),
// and B_simple = tr Σ / |G|², in sequences.
struct NoiseScale {
  double small_norm_sq = 0.0;  // mean |G_b|² over the micro-batches
  double large_norm_sq = 0.0;  // mean |G_B|² over the large batches
  double gradient_norm_sq = 0.0;  // |G|² estimate
  double trace_sigma = 0.0;       // tr Σ estimate (per sequence)
  double simple = 0.0;            // tr Σ / |G|², sequences
};
NoiseScale noise_scale(double small_norm_sq, double small_batch, double large_norm_sq, double large_batch);

// The noise measurement at `weights`: `batches` large batches of b·k fresh windows, each split into
// k micro-batch gradients (b sequences each, grad_scale 1). `group_norm_sq` gets, for each batch
// size s·b with s a power of two dividing k (and s = k), the mean squared norm of the gradients of
// s consecutive micro-batches averaged: E|G_{s·b}|² = |G|² + trΣ/(s·b) (the series the README plots).
struct NoiseMeasurement {
  NoiseScale scale;
  std::vector<double> batch_sizes;    // s·b, sequences
  std::vector<double> group_norm_sq;  // mean |G_{s·b}|²
};
NoiseMeasurement measure_noise(const nn::GptWeights& weights, const nn::TokenSplit& tokens, const Shape& shape,
                               void* stream = nullptr);

// The gradient equality: the same fp32 sums grouped by micro-batch; only reassociation and the
// rounding of 1/k and 1/(b·T) differ, ~1e-7 relative.
inline constexpr double gradient_tolerance = 1e-6;
// The loss trajectories: each step's gradients agree to ~1e-7 relative, AdamW's update is a smooth
// function of them except where an entry's gradient is within that rounding of zero, and such
// entries move the loss only to second order. Over 20 steps the losses stay within 2e-6 nats
// (README); 1e-4 nats is 50× that yet 100× below the ~1e-2 nats that training on other windows
// or at another batch size changes the loss by, so a real divergence cannot pass.
inline constexpr double loss_tolerance = 1e-4;

}  // namespace gradient_accumulation
}  // namespace aiopt
