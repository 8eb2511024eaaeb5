#pragma once
// kv_caching: memory vs compute in autoregressive decoding (TECHNIQUES.md §1). Greedy generation
// of gen_tokens after a random prompt, recomputing the whole prefix for every new token
// (recompute), or keeping every past position's keys and values in a preallocated cache so a
// step computes one new position (kv_cache: f32; kv_cache_int8: int8 with a scale per row). One
// code path for the CPU and CUDA: the device is where the weights live. See README.md beside
// this file.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "harness/step_timer.hpp"
#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "nn/config.hpp"
#include "nn/gpt.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_kv_caching();

// The pieces the run and the tests share.
namespace kv_caching {

enum class Method { recompute, kv_cache, kv_cache_int8 };
const VariantTable<Method>& methods();  // the variants, one per method
inline Method parse_method(const std::string& variant) { return methods().parse(variant); }
inline const std::string& to_string(Method method) { return methods().name(method); }
// The cache's element type: f32 for kv_cache, i8 for kv_cache_int8; nullopt for recompute.
std::optional<DType> cache_dtype(Method method);

// One case, parsed and checked.
struct Shape {
  nn::GptConfig model;
  std::string checkpoint;         // the model's weights; empty: random weights from weight_seed
  std::size_t prompt_len = 0;
  std::size_t gen_tokens = 0;
  std::size_t batch = 1;
  std::uint64_t weight_seed = 0;  // the model's initialization, from the case seed
  std::uint64_t prompt_seed = 0;  // the prompt's tokens, from the case seed

  // Positions the cache holds: the prompt and every generated token.
  std::size_t capacity() const { return prompt_len + gen_tokens; }

  // Throws InputError when prompt_len + gen_tokens exceed the model's context.
  static Shape from(const Case& c);
};

// (batch, prompt_len) tokens uniform in [0, vocab) from the prompt seed.
std::vector<std::int32_t> make_prompt(const Shape& shape);

// FLOPs of one model call of `len` new positions per sequence after `pos0` cached ones, with the
// last position's logits: the matmuls 2·(12·layers·C²) per position, causal attention
// 4·C·(p + 1) per layer for the query at position p (q·k and p·v over p + 1 keys), and the LM
// head 2·V·C once per sequence. LayerNorm, GELU, biases and softmax are O(C) per position and
// left out.
double call_flops(const Shape& shape, std::size_t len, std::size_t pos0);
// FLOPs of one whole generation with `method`: recompute runs calls of P, P+1, ..., P+G−1
// positions from 0; the cached methods one call of P, then G−1 calls of 1 position.
double generation_flops(const Shape& shape, Method method);

// One generation's phases, timed per model call (StepTimer: the host clock, or CUDA events then a
// synchronize where the host reads the call's logits anyway). Decode call i of the G − 1 falls in
// quarter decode_quarter(i, G − 1) of the generated positions.
struct PhaseTimes {
  double prefill_ms = 0.0;             // the prompt's call and the first token's choice
  double decode_ms = 0.0;              // the G − 1 later calls together
  std::array<double, 4> quarter_ms{};  // the decode calls of each quarter together
};
inline std::size_t decode_quarter(std::size_t call, std::size_t calls) { return call * 4 / calls; }

// One generation as the checks and the prefill/decode split see it.
struct Trace {
  std::vector<std::int32_t> tokens;  // (gen_tokens, batch): the greedy token of each step
  std::vector<float> logits;         // (gen_tokens, batch, vocab): each step's last logits, when recorded
  std::optional<PhaseTimes> times;   // when timed
};

// The model, the prompt, and (for a cached method) the preallocated cache of one case.
class Generator {
 public:
  // `method` decides whether a cache (of `shape.capacity()` positions) is allocated.
  Generator(const Shape& shape, Method method, const Device& device);

  // One greedy generation with `method` (recompute, or this generator's cached method, else
  // std::logic_error). `record`: keep every step's logits; `timer` (on this generator's device and
  // stream), when given: time the prefill and the decode calls into the trace's PhaseTimes. With
  // `forced` ((gen_tokens, batch)), the token fed after step t is forced[t] instead of the
  // model's own choice (teacher forcing), so recompute is evaluated on another method's
  // sequence; the trace's tokens stay the model's choices.
  Trace generate(Method method, bool record, StepTimer* timer = nullptr,
                 const std::vector<std::int32_t>* forced = nullptr);

  // The first layer's cached keys and values after `trace`, a generation with this generator's
  // cached method, against a fresh f32 prefill of the same sequence: the first layer's keys and
  // values depend on the tokens alone, so each cached row must hold them, within fp32 rounding
  // (f32_rel_tolerance of the row's largest magnitude) plus, for int8, half its row's step
  // (max|row| / 254). Throws CheckFailed naming the position otherwise (a stale or misplaced
  // entry); returns the largest error relative to its row's largest magnitude.
  double check_first_layer_cache(const Trace& trace);

  std::size_t cache_bytes() const { return cache_bytes_; }  // measured at allocation; 0 without a cache
  const nn::KvCache* cache() const { return cache_ ? &*cache_ : nullptr; }
  const Shape& shape() const { return shape_; }
  const Device& device() const { return model_.device(); }
  void* stream() const { return model_.stream(); }
  const nn::GptWeights& weights() const { return model_.weights(); }
  // Computes the model's block linear layers with `layers` (a recorder) from now on; nullptr:
  // the fp32 weights again.
  void set_linear_layers(std::shared_ptr<const nn::LinearLayers> layers) { model_.set_linear_layers(std::move(layers)); }

 private:
  Shape shape_;
  nn::Gpt model_;
  std::vector<std::int32_t> prompt_;  // (batch, prompt_len)
  std::optional<nn::KvCache> cache_;  // (layers) × (batch, heads, capacity, head_dim)
  std::size_t cache_bytes_ = 0;
};

// Agreement of a generation with recompute's on the same token sequence.
struct Agreement {
  double max_abs_logit_error = 0.0;  // max |got − want| over every step's logits; +inf on a NaN
  double max_rel_logit_error = 0.0;  // per step relative to max |want| of that step, the largest
  double tokens_identical = 1.0;     // fraction of greedy tokens equal to recompute's own
};
// got, want: (gen_tokens, batch, vocab) logits; tokens, reference_tokens: (gen_tokens, batch).
Agreement compare(const std::vector<float>& got, const std::vector<float>& want, std::size_t vocab,
                  const std::vector<std::int32_t>& tokens, const std::vector<std::int32_t>& reference_tokens);

// kv_cache: the fp32 cache changes only the order of fp32 sums, so tokens must be identical and
// logits within this relative error.
inline constexpr double f32_rel_tolerance = 1e-4;
// kv_cache_int8: a first-order worst-case bound on the relative logit error, 2·layers/254
// (kv_caching.cpp derives it); the check fails beyond it. It is far above what a correct cache
// does; the tight check sits at every layer's attention output (int8_attention_check.hpp).
double int8_rel_bound(const nn::GptConfig& model);

// Throws CheckFailed when `agreement` breaks the method's rule above (recompute: none).
void check(Method method, const Shape& shape, const Agreement& agreement);

}  // namespace kv_caching
}  // namespace aiopt
