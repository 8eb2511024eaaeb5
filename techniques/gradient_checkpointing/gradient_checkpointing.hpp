#pragma once
// gradient_checkpointing: training time vs activation memory (TECHNIQUES.md §5). One forward and
// backward pass of the GPT over a fixed batch, keeping every block's activations (store_all),
// only the residual stream entering every k-th block and re-running each segment's forward in
// the backward (checkpoint_every_k; sqrt_n with k = round(√L), Chen et al. 2016), or every
// block's matrix-product outputs but not the cheap, large LayerNorm/GELU/merged-head outputs
// (selective, Korthikanti et al. 2022). The engine (nn/training.hpp) implements the policies; this
// technique measures what each keeps and checks that the gradient does not change. One code path
// for the CPU and CUDA: the device is where the weights live. See README.md beside this file.
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
#include "nn/training.hpp"
#include "nn/weights.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_gradient_checkpointing();

// The pieces the run and the tests share.
namespace gradient_checkpointing {

enum class Policy { store_all, checkpoint_every_k, sqrt_n, selective };
const VariantTable<Policy>& policies();  // the variants, one per policy
inline Policy parse_policy(const std::string& variant) { return policies().parse(variant); }
inline const std::string& to_string(Policy policy) { return policies().name(policy); }

// sqrt_n's segment length: round(√L) to the nearest integer, halves away from zero (std::lround),
// at least 1 (L = 8: √8 ≈ 2.83 → 3; L = 2: √2 ≈ 1.41 → 1).
std::size_t sqrt_n_segment(std::size_t layers);

// One case, parsed and checked.
struct Shape {
  nn::GptConfig model;
  std::size_t batch = 0;
  std::size_t seq_len = 0;
  std::size_t k = 0;  // the 'k' parameter; used by checkpoint_every_k only
  nn::TrainAttention attention = nn::TrainAttention::flash;
  std::uint64_t weight_seed = 0;  // the model's initialization, from the case seed
  std::uint64_t window_seed = 0;  // the batch's windows of the corpus, from the case seed

  // Throws InputError naming the parameter, the bad value and what is allowed; `policy` decides
  // whether k must be in [1, layers].
  static Shape from(const Case& c, Policy policy);
};

// The engine's options for `policy`: checkpoint_every = k, round(√L) or 0; selective on or off.
nn::TrainingOptions options(Policy policy, const Shape& shape);

// Whole blocks whose forward the backward re-runs in one pass: every block (L) under any
// checkpoint_every > 0, since each segment's k blocks run forward again before its backward (the
// last one's output is discarded); 0 for store_all and selective.
std::size_t blocks_recomputed(const nn::TrainingOptions& options, std::size_t layers);
// Block inputs (B, T, C) kept through the forward: ceil(L / k) under checkpointing.
std::size_t checkpoints_kept(const nn::TrainingOptions& options, std::size_t layers);

// FLOPs of one block's forward over (batch, seq_len): the products 2·B·T·12·C² (c_attn 3C²,
// c_proj C², c_fc 4C², mlp proj 4C²) and causal attention 2·B·T·(T + 1)·C (q·k and p·v over
// (T + 1)/2 keys on average). LayerNorm, GELU, bias and softmax are O(C) per position and left out.
double block_forward_flops(const Shape& shape);
// FLOPs of one pass without recomputation: 3× the forward (the backward of a product is two
// products of the same size), the forward being L blocks plus the LM head 2·B·T·V·C.
double pass_flops(const Shape& shape);
// FLOPs the backward re-runs: blocks_recomputed · block_forward_flops, less each segment's last
// mlp projection (2·B·T·4C², per checkpoint kept), whose output the forward had passed on.
double recompute_flops(const nn::TrainingOptions& options, const Shape& shape);
// The recomputed forward's share of the work added to a store_all pass: recompute_flops /
// pass_flops (a little under 1/3 when every block is recomputed and the head is small).
double recompute_flops_fraction(const nn::TrainingOptions& options, const Shape& shape);

// The fixed (batch, seq_len) training windows of a case, from the synthetic corpus.
nn::Batch make_batch(const Shape& shape);

// A policy recomputes with the same kernels on the same inputs, so its gradient should be
// store_all's bit for bit; the check allows fp32 reassociation (the naive attention's summation
// order differs from the flash one's, but both sides use the same attention here).
inline constexpr double gradient_tolerance = 1e-6;

}  // namespace gradient_checkpointing
}  // namespace aiopt
