#pragma once
// tensor_fusion: development complexity vs memory traffic. Three
// memory-bound chains of a transformer layer run once per op (every intermediate written to
// memory and read back) and fused into one pass; on CUDA also as the unfused kernels captured
// into one CUDA graph. See README.md beside this file.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "core/memory.hpp"
#include "harness/technique.hpp"
#include "harness/variant_table.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_tensor_fusion();

// The pieces the CPU and CUDA runs share.
namespace tensor_fusion {

// The variants: one pass or kernel per op, the whole chain in one, or (CUDA) the unfused kernels
// captured into one graph.
enum class Form { unfused, fused, cuda_graph };
const VariantTable<Form>& forms();
inline const std::string& to_string(Form form) { return forms().name(form); }

enum class Chain { bias_gelu, layernorm, softmax };
const Choices<Chain>& chains();  // the values of the `chain` parameter
inline const std::string& to_string(Chain chain) { return chains().name(chain); }

// How activation tensors are stored; arithmetic is fp32 either way. bf16 storage is
// std::uint16_t bits on the host (kernels/cpu/bf16.hpp).
enum class Dtype { f32, bf16 };
const Choices<Dtype>& dtypes();  // the values of the `dtype` parameter
inline const std::string& to_string(Dtype dtype) { return dtypes().name(dtype); }

inline constexpr float layernorm_eps = 1e-5f;

// One case, parsed and checked.
struct Shape {
  Chain chain = Chain::layernorm;
  std::size_t rows = 0;
  std::size_t hidden = 0;
  Dtype dtype = Dtype::f32;
  float dropout = 0.0f;             // layernorm chain only
  std::uint64_t dropout_seed = 0;   // the mask's seed, derived from the case seed
  std::uint64_t input_seed = 0;

  std::size_t elements() const { return rows * hidden; }
  std::size_t element_bytes() const { return dtype == Dtype::bf16 ? 2 : 4; }
  float softmax_scale() const;  // 1/sqrt(hidden)

  // Throws InputError when chain=softmax's rows are not a multiple of hidden.
  static Shape from(const Case& c);
};

// The chain's inputs, made on the host from the case seed, so every variant and device sees
// the same numbers. Tensors a chain does not use are empty. Activations are stored as T (float,
// or std::uint16_t bf16 bits); with dtype bf16 their values are bf16 numbers whatever T is, so
// Inputs<float> holds the bf16 inputs widened, for the reference. Parameter vectors are fp32.
template <class T>
struct Inputs {
  memory::Buffer<T> x;             // (rows, hidden)
  memory::Buffer<float> bias;      // (hidden)
  memory::Buffer<T> residual;      // (rows, hidden)
  memory::Buffer<float> gamma;     // (hidden)
  memory::Buffer<float> beta;      // (hidden)
};
template <class T>
Inputs<T> make_inputs(const Shape& shape);

// The chain computed op by op with the plain scalar references of kernels/cpu. (rows, hidden)
memory::Buffer<float> reference_output(const Shape& shape, const Inputs<float>& in);

// Ops in the chain: memory passes (CPU) or kernels (CUDA) of the unfused form.
std::size_t unfused_ops(Chain chain);

// Bytes one step reads and writes, counted per pass (README.md "Bytes moved"), at the
// activations' element size.
double bytes_moved(const Shape& shape, bool fused);

// Bytes of the distinct tensors one step touches: the chain's inputs, its output and, unfused,
// its intermediates, each once (Work::working_set_bytes).
double working_set_bytes(const Shape& shape, bool fused);

// Largest |got − want|; +inf when either holds a NaN, so a NaN always fails.
double max_abs_error(const float* got, const float* want, std::size_t n);

// Stated tolerances on max_abs_error against the scalar reference, per chain and dtype (see
// tensor_fusion.cpp and the tests). bf16 layernorm: the largest of layernorm_bf16_bounds.
double tolerance(const Shape& shape);

// bf16 layernorm chain: how far each output may be from the reference, (rows, hidden), derived
// from bf16's unit roundoff through the dropout scale and the row's mean, variance and
// normalization on this case's inputs (tensor_fusion.cpp).
std::vector<double> layernorm_bf16_bounds(const Shape& shape, const Inputs<float>& in);

// Compares `output` (host, (rows, hidden), widened to fp32) with the reference; throws
// CheckFailed beyond the tolerance (bf16 layernorm: beyond any element's bound) and returns the
// max abs error otherwise.
double check_output(const Shape& shape, const float* output, const std::string& variant);

#ifdef AIOPT_HAVE_CUDA
// The CUDA runs (tensor_fusion_cuda.cu).
std::unique_ptr<Run> prepare_cuda(const Shape& shape, Form form, const Device& device);
#endif

}  // namespace tensor_fusion
}  // namespace aiopt
