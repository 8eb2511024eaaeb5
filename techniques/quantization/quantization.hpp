#pragma once
// quantization: a linear layer's product y = x·Wᵀ with the weights (and for int8 the
// activations) stored in fewer bits: fp32 (baseline), fp16, bf16, int8 with dynamic or static
// activation scales, group-wise int4 weights, and on CUDA fp8 e4m3. Speed, weight bytes, and the
// error against the fp32 product. See README.md beside this file.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness/technique.hpp"
#include "harness/variant_table.hpp"
#include "kernels/cpu/weights_int4.hpp"

namespace aiopt {

// The technique, as techniques/registry.cpp lists it.
std::unique_ptr<Technique> make_quantization();

// The pieces the CPU and CUDA runs and the tests share.
namespace quantization {

enum class Format { fp32, fp16, bf16, int8_dynamic, int8_static, int4_weight_only, fp8 };

// A variant: the weights' format, and whether they are learned by fine-tuning with fake
// quantization (qat) rather than rounded from the trained weights.
struct Scheme {
  Format format = Format::fp32;
  bool qat = false;
  bool operator==(const Scheme&) const = default;
};
const VariantTable<Scheme>& schemes();  // the variants, one per scheme
inline Format parse_format(const std::string& variant) { return schemes().parse(variant).format; }

// One case, parsed and checked.
struct Shape {
  std::size_t m = 1, n = 0, k = 0;  // y (m, n) = x (m, k) · Wᵀ, W (n, k)
  std::size_t group = 64;           // int4: inputs per scale
  kernels::cpu::Int4Mode int4_mode = kernels::cpu::Int4Mode::symmetric;
  std::size_t calibration_rows = 256;  // int8_static: rows the activation scale is taken from
  std::uint64_t seed = 0;

  static Shape from(const Case& c);
  double flops() const { return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k); }
};

// The workload's inputs, the same for every format: W uniform in [−1, 1]/√k; x row i uniform in
// [−1, 1] times a per-token magnitude e^u, u uniform in [−1.5, 1.5], so tokens differ in range
// as a transformer's activations do. Row r of the calibration set (int8_static) is drawn the
// same way from its own counters.
std::vector<float> make_weights(const Shape& s);                         // (n, k)
std::vector<float> make_activations(const Shape& s, std::size_t rows, std::uint64_t stream);  // (rows, k)

// The rows of y the checks compare: all up to 8, else 8 spread from the first to the last.
std::vector<std::size_t> checked_rows(std::size_t m);

// How far a kernel's y may stray from the exact product of the operands it consumed:
//   |y − Σ x̂·ŵ| <= (k + 8)·per_addition·Σ|x̂·ŵ| + 2·output·|Σ x̂·ŵ| + output_floor.
// The one statement of the bound for every format and device; quantization.cpp says why.
// `format` on `device` also says how far storing moves each fp32 operand (StorageError), which
// bounds y against the fp32 product.
struct Rounding {
  double per_addition = 0.0;  // unit roundoff of one addition of the sums
  double output = 0.0;        // relative rounding of the stored y (and of a final scale multiply)
  double output_floor = 0.0;  // absolute rounding of a subnormal stored y
  Format format = Format::fp32;
  DeviceKind device = DeviceKind::cpu;
};
Rounding rounding(Format format, DeviceKind device);

// int8_static's activation scale: the calibration batch's (make_activations stream 3) largest
// |x| mapped to 127.
float static_activation_scale(const Shape& s);

// How far the format on a device may move each value of one fp32 operand when it stores it,
// |v̂ − v| <= bound, from the fp32 values alone (never from what was stored), so a quantizer
// that stores wrong scales cannot widen its own bound. quantization.cpp derives each format's.
class StorageError {
 public:
  enum class Operand { activations, weights };
  // `values` (rows, s.k): the whole operand, for a scale taken from the tensor (fp8).
  StorageError(const Rounding& r, Operand operand, const Shape& s, const float* values, std::size_t rows);
  // Bounds for one row v (s.k) of the operand, into bound (s.k).
  void row(const float* v, std::vector<double>& bound) const;

 private:
  enum class Kind { exact, relative, row_scale, static_scale, int4_groups, tensor_fp8 };
  Kind kind_ = Kind::exact;
  Shape s_;
  double relative_ = 0.0, floor_ = 0.0;  // relative: u·|v| + floor
  double scale_ = 0.0;                   // static_scale: the given scale; tensor_fp8: max|v| / 448
};

// Row i of an operand as the product consumed it (x̂) or stored it (ŵ), widened to double, into
// row (k).
using RowReader = std::function<void(std::size_t i, std::vector<double>& row)>;

// The product's two comparisons, on the checked rows, in double: y (m, n) against Σ x̂·ŵ within
// the bound of `r` (else CheckFailed: the kernel is wrong), and against Σ x·w with the fp32
// operands x (m, k) and w (n, k) within that bound plus what storing may move the product,
//   Σ_p |x_p|·e_w,p + e_x,p·|w_p| + e_x,p·e_w,p   (e: StorageError's bounds of the two operands),
// (else CheckFailed: the stored operands are wrong, e.g. their scales). That error, the format's
// cost, is returned relative to the largest and the mean |x·w|.
struct ProductErrors {
  double max_rel = 0.0, mean_rel = 0.0;
};
ProductErrors check_product(const Shape& s, const Rounding& r, const float* y, const float* x, const float* w,
                            const RowReader& consumed_activations, const RowReader& stored_weights);

// What every run reports: the stored weights' bytes, the errors, and for int8_static the
// fraction of activations its scale clipped.
std::vector<Metric> product_metrics(const Shape& s, std::size_t weight_bytes, const ProductErrors& errors,
                                    std::optional<double> clipped_fraction);

// The model level (model_level.cpp): the trained GPT with its block linear layers in the format.
enum class Level { gemm, model };
const Choices<Level>& levels();  // the values of the `level` parameter
bool is_model_level(const Case& c);
void validate_model(const Case& c, DeviceKind device);
std::unique_ptr<Run> prepare_model(const Case& c);  // a case validate_model accepted, on the cpu

#ifdef AIOPT_HAVE_CUDA
// The CUDA runs (quantization_cuda.cu), for a shape check() accepted on cuda.
std::unique_ptr<Run> prepare_cuda(const Shape& s, Format format, const Device& device);
#endif

}  // namespace quantization
}  // namespace aiopt
