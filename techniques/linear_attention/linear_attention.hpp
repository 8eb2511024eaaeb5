#pragma once
// linear_attention: attention quality vs complexity. Exact softmax attention (O(N²) time; the
// baseline is the flash kernel, the naive one with its N×N scores a reference row) against
// kernelized attention in O(N): φ = elu+1, FAVOR+ random features (Performer),
// and Linformer's projection of K and V along the sequence. See README.md beside this file.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "core/memory.hpp"
#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cpu/linear_attention.hpp"
#include "techniques/attention_inputs.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_linear_attention();

// The pieces the CPU and CUDA runs share.
namespace linear_attention {

// softmax: exact attention by the flash kernel (the baseline); naive: exact attention with the
// N×N scores materialized.
enum class Kind { softmax, naive, linear_elu, performer, linformer };
const VariantTable<Kind>& kinds();  // the variants, one per kind
inline const std::string& to_string(Kind kind) { return kinds().name(kind); }
inline bool is_exact(Kind kind) { return kind == Kind::softmax || kind == Kind::naive; }

// One case, parsed and checked.
struct Shape {
  Kind kind = Kind::softmax;
  std::size_t batch = 1;
  std::size_t heads = 1;
  std::size_t seq_len = 0;    // N
  std::size_t head_dim = 0;   // d
  bool causal = false;
  std::size_t features = 0;   // performer: m random features
  std::size_t proj_rows = 0;  // linformer: k projected rows
  double score_std = 1.0;     // s.d. of the scores q·k/√d on the generated inputs
  std::uint64_t input_seed = 0;       // q, k, v
  std::uint64_t projection_seed = 0;  // performer's W, linformer's E and F
  std::optional<attention_inputs::Trained> trained;  // inputs=trained: the model layer q, k, v come from

  std::size_t groups() const { return batch * heads; }
  std::size_t elements() const { return groups() * seq_len * head_dim; }  // of q, k, v, out
  // F, the width of φ: d (elu), m (performer); 0 for softmax and linformer.
  std::size_t feature_dim() const;
  kernels::AttentionShape attention() const;  // (B, H, N, d) self-attention, scale 1/sqrt(d)
  kernels::cpu::LinearAttentionShape linear() const;
  // The same case at sequence length n (the fits over N, the crossover search), on generated
  // inputs: time and workspace do not depend on the values, and the model's text gives windows
  // of one length.
  Shape at(std::size_t n) const;

  // Throws InputError when linformer's proj_rows exceed seq_len, NotApplicable for a causal
  // linformer (README "Linformer is non-causal").
  static Shape from(const Case& c);
};

// q, k, v: (B, H, N, d) each (host): normal from the input seed, v standard, q and k with
// variance score_std each, so that the scores q·k/√d have standard deviation score_std; or, with
// `trained`, the model layer's q, k, v on validation text (attention_inputs.hpp).
struct Inputs {
  memory::Buffer<float> q, k, v;
};
Inputs make_inputs(const Shape& shape);

// Performer's W: (m, d), orthogonal random features; Linformer's E and F: (k, N) each, entries
// N(0, 1/k) (a Johnson–Lindenstrauss projection, Wang et al. 2020 Theorem 2). Host, from the
// projection seed.
memory::Buffer<float> performer_projection(const Shape& shape);
memory::Buffer<float> linformer_projection(const Shape& shape, int which);  // which: 0 = E, 1 = F

// One forward of a variant at one shape on one device: inputs and projections made, workspace
// allocated. Its constructor runs it once inside a memory scope around the workspace and that
// call, so workspace_bytes() is measured, not counted.
class Forward {
 public:
  virtual ~Forward() = default;
  virtual void run() = 0;                 // enqueue one forward (CUDA: on stream())
  virtual void* stream() { return nullptr; }
  virtual void synchronize() {}           // wait for run() to finish
  virtual memory::Buffer<float> output() = 0;  // host copy of out: (B, H, N, d)
  std::size_t workspace_bytes() const { return workspace_bytes_; }

 protected:
  std::size_t workspace_bytes_ = 0;
};

std::unique_ptr<Forward> make_cpu_forward(const Shape& shape);
// On `device`: the CPU forward, or the CUDA one (DeviceUnavailable in a build without CUDA).
std::unique_ptr<Forward> make_forward(const Shape& shape, const Device& device);
#ifdef AIOPT_HAVE_CUDA
std::unique_ptr<Forward> make_cuda_forward(const Shape& shape, const Device& device);  // linear_attention_cuda.cu
#endif

// Error of an output against the softmax output: the largest |got − want| and the mean relative
// error Σ|got − want| / Σ|want|; both +inf when got holds a NaN or inf.
struct Errors {
  double max_abs = 0.0;
  double mean_rel = 0.0;
};
Errors compare(const float* got, const float* want, std::size_t n);

// The exact softmax attention output on the host (fp32, query-chunked: no N×N matrix).
memory::Buffer<float> softmax_output(const Shape& shape, const Inputs& in);

// The rows the checks evaluate in float64: the first and last 32 of every (b, h) (all rows would
// cost O(N²·d) in double).
inline constexpr std::size_t checked_rows = 32;

// Stated tolerance of exact attention (softmax and naive) against the float64 reference (max abs
// error): its outputs are convex combinations of unit-variance values, computed in fp32 with a 2e-7 exp.
// With large scores the fp32 score error grows with them: scale·|q||k|·√d·u, 1e-5 at s.d. 3.
// On the trained tiny model's q, k, v (inputs=trained: values up to 2.3, scores up to 6) the same
// terms, as flash_attention derives them per case (fa::tolerance), come to 8.8e-5: within it, and
// the measured errors there are below 5e-7. Larger models' inputs would need it derived per case.
inline constexpr double softmax_tolerance = 1e-4;

// What check() measured of one output.
struct Checked {
  // The fp32 kernel against the float64 evaluation of the same computation (softmax and naive:
  // exact attention; a variant: its own approximation, same features and projections) on the checked
  // rows, and the bound a correct kernel stays within (softmax_tolerance, or the variant's,
  // derived in linear_attention.cpp from the case's inputs).
  double kernel_error = 0.0;
  double kernel_tolerance = 0.0;
  Errors vs_softmax;  // the output against exact attention (softmax: on the checked rows)
  Errors trivial;     // the mean of the visible values (attention_uniform) against exact attention
};

// The check of one output `out` (host, (B, H, N, d)) of `shape`'s variant on inputs `in`.
// CheckFailed when the kernel error exceeds its tolerance or the output holds a NaN or inf: a
// correct implementation of the variant's approximation stays within it, so an output of zeros,
// of the mean of v, or of garbage fails. How far the approximation is from exact attention, and
// whether it beats the trivial predictor, is measured, not bounded: on i.i.d. inputs it does not
// (README "Quality against exact attention").
Checked check(const Shape& shape, const float* out, const Inputs& in);

// Least-squares slope of log y against log x.
double loglog_slope(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace linear_attention
}  // namespace aiopt
