#pragma once
// flash_attention: exact attention without the N×N matrix. The scores materialized (naive),
// tiled with the online softmax (flash) and query-chunked (memory_efficient), on the CPU and
// CUDA; time, FLOP/s, measured workspace and its growth with N. See README.md beside this file.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "core/memory.hpp"
#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cpu/attention.hpp"
#include "techniques/attention_inputs.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_flash_attention();

// The pieces the CPU and CUDA runs share.
namespace flash_attention {

enum class Method { naive, flash, memory_efficient };
const VariantTable<Method>& methods();  // the variants, one per method
inline Method parse_method(const std::string& variant) { return methods().parse(variant); }
inline const std::string& to_string(Method method) { return methods().name(method); }

// One case, parsed and checked.
struct Shape {
  kernels::AttentionShape attention;  // self-attention: q_len == kv_len == kv_capacity == seq_len
  DType dtype = DType::f32;           // how q, k, v, out (and naive's scores) are stored
  kernels::cpu::FlashTiles tiles;     // CPU flash tiles
  std::size_t chunk = 128;            // memory_efficient: queries per chunk
  double score_std = 3.0;             // s.d. of the scores q·k/√d on the generated inputs
  std::uint64_t input_seed = 0;
  std::optional<attention_inputs::Trained> trained;  // inputs=trained: the model layer q, k, v come from

  std::size_t q_elements() const;  // (B, H, N, d)
  // The same case at sequence length n (the workspace-growth fit), on generated inputs: the
  // workspace does not depend on the values, and the model's text gives windows of one length.
  Shape at_length(std::size_t n) const;
  std::string describe_inputs() const;  // "score s.d. 3", or the trained model's layer

  // The case's values, which Technique::validate has checked against params().
  static Shape from(const Case& c);
};

// q, k, v: (B, H, N, d), rounded to the dtype so that the reference sees exactly the numbers a
// GPU run stores; held as fp32. Generated from the case seed: v is uniform in [-1, 1]; q and k
// uniform in [-a, a] with a = √(3·score_std), so that a score q·k/√d (d products of variance
// a⁴/9, over √d) has standard deviation score_std: at the default 3 a query's largest scores
// stand ~10 above the rest, attention follows q·k rather than averaging v, and the online
// softmax's running max rises across key tiles, so its rescaling is exercised. Or, with
// `trained`, the model layer's q, k, v on validation text (attention_inputs.hpp).
struct Inputs {
  memory::Buffer<float> q, k, v;
};
Inputs make_inputs(const Shape& shape);

// The float64 reference (kernels::cpu::attention_reference), threaded over (batch, head).
memory::Buffer<double> reference_output(const Shape& shape, const Inputs& in);

struct Errors {
  double max_abs = 0.0;  // max |got − want|; +inf when a NaN appears
  double tolerance = 0.0;  // check_output: the bound max_abs was held to
  double max_rel = 0.0;  // max_abs relative to the largest |want|: the error at the output's scale
};
Errors errors(const float* got, const double* want, std::size_t n);

// The bound on max_abs_error of a correct kernel (flash_attention.cpp gives the derivation): of
// `method` storing scores and probabilities in `dtype`, for scores of magnitude at most
// score_bound (scale·max|q_i|·max|k_j|, Cauchy–Schwarz) and values of magnitude at most
// value_bound, over seq_len keys of head_dim terms.
double tolerance(DType dtype, Method method, double score_bound, double value_bound, std::size_t seq_len,
                 std::size_t head_dim);
// score_bound and value_bound (max|v|) for the checked heads of `in`.
double score_bound(const Shape& shape, const Inputs& in);
double value_bound(const Shape& shape, const Inputs& in);

// The (batch, head) pairs the check compares: all of them up to 4, else 4 spread evenly from the
// first to the last. The float64 reference costs 4·N²·d scalar operations per head: checking all
// 64 heads of an N = 4096, d = 128 case would take minutes of CPU per case.
std::vector<std::size_t> checked_heads(const Shape& shape);

// Compares `output` ((B, H, N, d), widened to fp32) with the float64 reference on the checked
// heads; throws CheckFailed beyond the tolerance.
Errors check_output(const Shape& shape, const Inputs& in, const float* output, const std::string& variant);

// The sequence lengths of the workspace fit: N/4, N/2, N.
std::vector<std::size_t> fit_lengths(std::size_t n);

// Least-squares slope of log(bytes) against log(n): the exponent p of bytes ∝ n^p. A workspace
// that is zero at every length is constant: 0. Zero at some lengths only is no power law: NaN.
double fitted_exponent(const std::vector<std::size_t>& n, const std::vector<std::size_t>& bytes);

// The metrics every run reports.
std::vector<Metric> metrics(const Errors& e, std::size_t workspace_bytes, double workspace_exponent);

#ifdef AIOPT_HAVE_CUDA
// The CUDA runs (flash_attention_cuda.cu).
std::unique_ptr<Run> prepare_cuda(const Shape& shape, Method method, const Device& device);
#endif

}  // namespace flash_attention
}  // namespace aiopt
