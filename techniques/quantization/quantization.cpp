#include "techniques/quantization/quantization.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/half.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "core/spelling.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/gemm_int8.hpp"
#include "kernels/cpu/quantize.hpp"
#include "kernels/cpu/weights_half.hpp"
#include "kernels/cuda/gemm_lt.hpp"
#include "kernels/cuda/weights_int4.hpp"
#include "techniques/model_params.hpp"
#include "techniques/technique_parts.hpp"

namespace aiopt {

namespace cpu = kernels::cpu;
namespace gpu = kernels::cuda;
namespace qz = quantization;

static std::string summary() {
  return "a linear layer's product with fp32 weights vs fp16, bf16, int8 (dynamic or static activation "
         "scales), group-wise int4 weights and (CUDA) fp8 e4m3";
}

static std::vector<ParamSpec> params() {
  ParamSpec zero_point;
  zero_point.name = "zero_point";
  zero_point.type = ParamType::boolean;
  zero_point.default_value = false;
  zero_point.help = "int4_weight_only: asymmetric groups, q in [0, 15] with a zero point (else symmetric, q in [-8, 7])";
  return {
      qz::levels().param("level", qz::Level::gemm, std::nullopt, "",
                   "gemm: one product of shape m, n, k; model: the trained GPT's block linear layers in the format "
                   "(decode speed, perplexity, top-1 agreement against fp32)"),
      integer_param("m", 1, std::nullopt, 1, 1 << 20, "rows",
                    "tokens per product: 1 is a decode step's GEMV, more a prefill's GEMM"),
      integer_param("n", 14336, 1024, 1, 1 << 20, "outputs", "output features (rows of W)"),
      integer_param("k", 4096, 512, 1, cpu::int8_max_k, "inputs", "input features (columns of W)"),
      choice_param("group_size", "64", std::nullopt, {"32", "64", "128"}, "inputs",
                   "int4_weight_only: consecutive inputs sharing one fp16 scale (k must be a multiple)"),
      zero_point,
      integer_param("calibration_rows", 256, 64, 1, unbounded, "rows",
                    "int8_static: tokens of a calibration batch the activation scale is taken from "
                    "(level=model: tokens of training text)"),
      choice_param("preset", "small", "tiny", {"tiny", "small", "medium"}, "",
                   "level=model: the model, trained once on the built-in corpus and cached (nn::standard_training)"),
      model_params::checkpoint_spec(),
      string_param("data", "",
                   "level=model with a checkpoint: a text file whose last tenth the quality is measured on (the rest "
                   "gives int8_static's calibration and qat's fine-tuning), encoded by the checkpoint's tokenizer; "
                   "empty: the built-in corpus"),
      integer_param("prompt_len", 64, 16, 1, unbounded, "tokens", "level=model: the prompt of the timed generation"),
      integer_param("gen_tokens", 64, 16, 1, unbounded, "tokens", "level=model: tokens generated (greedy, f32 KV cache)"),
      integer_param("eval_windows", 16, 4, 1, unbounded, "windows",
                    "level=model: validation windows of up to 128 tokens for perplexity and top-1 agreement"),
      integer_param("qat_steps", 100, 20, 1, unbounded, "steps", "qat: fine-tuning steps with fake quantization"),
      real_param("qat_lr", 2e-4, std::nullopt, 0.0, unbounded, "", "qat: the fine-tuning's peak learning rate"),
  };
}

const VariantTable<qz::Scheme>& qz::schemes() {
  static const VariantTable<Scheme> table(
      "quantization",
      {
          {{Format::fp32}, "fp32",
           "fp32 weights and activations (CPU: OpenBLAS sgemm, sgemv for one row; CUDA: cuBLAS sgemm)", true},
          {{Format::fp16}, "fp16",
           "weights stored as fp16 (CPU: widened in registers, fp32 activations; CUDA: fp16 activations too, cuBLAS "
           "tensor cores, fp32 sums, fp16 y)"},
          {{Format::bf16}, "bf16",
           "weights stored as bf16 (CPU: widened in registers, fp32 activations; CUDA: bf16 activations too, cuBLAS "
           "tensor cores, fp32 sums, bf16 y)"},
          {{Format::int8_dynamic}, "int8_dynamic",
           "int8 weights (per output channel) and activations (per token, scale computed each step); int32 sums "
           "(CPU: AVX-512 VNNI / AVX2; CUDA: cuBLASLt IMMA)"},
          {{Format::int8_static}, "int8_static", "as int8_dynamic with one activation scale from a calibration batch"},
          {{Format::int4_weight_only}, "int4_weight_only",
           "int4 weights in groups with fp16 scales, dequantized in registers; fp32 activations (CUDA: symmetric "
           "groups, up to 8 rows)"},
          {{Format::fp8}, "fp8",
           "fp8 e4m3 weights and activations, one scale per tensor (the activations' each step); cuBLASLt, compute "
           "capability 8.9+",
           false, {DeviceKind::cuda}},
          {{Format::int4_weight_only, true}, "qat",
           "level=model: int4 weights (group_size) learned by fine-tuning the trained model qat_steps steps with fake "
           "quantization (straight-through estimator)",
           false, {DeviceKind::cpu}},
      });
  return table;
}

static std::vector<Variant> variants() { return qz::schemes().variants(); }

// ---- the case

qz::Shape qz::Shape::from(const Case& c) {
  Shape s;
  s.m = static_cast<std::size_t>(c.params.integer("m"));
  s.n = static_cast<std::size_t>(c.params.integer("n"));
  s.k = static_cast<std::size_t>(c.params.integer("k"));
  s.group = std::stoul(c.params.string("group_size"));
  s.int4_mode = c.params.boolean("zero_point") ? cpu::Int4Mode::asymmetric : cpu::Int4Mode::symmetric;
  s.calibration_rows = static_cast<std::size_t>(c.params.integer("calibration_rows"));
  s.seed = c.seed;
  if (parse_format(c.variant) == Format::int4_weight_only && s.k % s.group != 0)
    throw InputError("quantization: k = " + std::to_string(s.k) + " is not a multiple of group_size = " +
                     std::to_string(s.group) + "; allowed: k a multiple of the group size for int4_weight_only");
  return s;
}

std::vector<float> qz::make_weights(const Shape& s) {
  std::vector<float> w(s.n * s.k);
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.k));
  const std::uint64_t seed = rng::bits(s.seed, 1);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = (2.0f * rng::uniform(seed, i) - 1.0f) * scale;
  return w;
}

std::vector<float> qz::make_activations(const Shape& s, std::size_t rows, std::uint64_t stream) {
  std::vector<float> x(rows * s.k);
  const std::uint64_t seed = rng::bits(s.seed, stream);
  for (std::size_t r = 0; r < rows; ++r) {
    // The token's magnitude: counter past the elements, so it is independent of them.
    const float magnitude = std::exp(3.0f * rng::uniform(seed, x.size() + r) - 1.5f);
    for (std::size_t p = 0; p < s.k; ++p)
      x[r * s.k + p] = (2.0f * rng::uniform(seed, r * s.k + p) - 1.0f) * magnitude;
  }
  return x;
}

std::vector<std::size_t> qz::checked_rows(std::size_t m) {
  constexpr std::size_t most = 8;
  std::vector<std::size_t> rows;
  if (m <= most) {
    for (std::size_t i = 0; i < m; ++i) rows.push_back(i);
  } else {
    for (std::size_t i = 0; i < most; ++i) rows.push_back(i * (m - 1) / (most - 1));
  }
  return rows;
}

// The bound's terms (see Rounding in the header), u = 2^-24 the fp32 unit roundoff:
//  - fp32 sums of k products err by at most (k + 2)·u·Σ|x̂·ŵ| in any order, fused multiply-adds
//    included (Higham §3.1); the CPU int4 kernel's bound is (k + 8)·u·Σ|x̂·ŵ| (weights_int4.hpp),
//    the CUDA one's (k + 5)·u·Σ|x̂·ŵ| (cuda/weights_int4.hpp); int8 sums are exact in int32 and only the
//    final scale multiplies round (2u·|y|). So per_addition = output = u, on both devices.
//  - CUDA fp16/bf16: products of two halves are exact in fp32, but the tensor cores' fp32
//    accumulation truncates instead of rounding to nearest (Fasi, Higham, Mikaitis and Pranesh,
//    "Numerical behavior of NVIDIA tensor cores", 2021): one unit 2u per addition. y is stored
//    in the operands' dtype: rounded by 2^-11 (f16) or 2^-8 (bf16) relative, and an f16 below
//    2^-14 (subnormal) by up to half its step 2^-24, 2^-25.
//  - CUDA fp8: products of two e4m3 values are exact, but NVIDIA does not document the fp8 tensor
//    cores' accumulator: about 14 bits were measured on Hopper, and cuBLASLt promotes partial
//    sums to fp32. The fp8 accumulation is not IEEE fp32, so 2^-13 (twice a 14-bit unit
//    roundoff) per addition, the bound the kernel's own test takes (tests/test_quantize_kernels.cpp);
//    the scales multiply in fp32 (output u).
qz::Rounding qz::rounding(Format format, DeviceKind device) {
  constexpr double u = 1.0 / (1 << 24);
  if (device == DeviceKind::cuda) {
    switch (format) {
      case Format::fp16: return {2.0 * u, std::ldexp(1.0, -11), std::ldexp(1.0, -25), format, device};
      case Format::bf16: return {2.0 * u, std::ldexp(1.0, -8), 0.0, format, device};
      case Format::fp8: return {std::ldexp(1.0, -13), u, 0.0, format, device};
      default: break;
    }
  }
  return {u, u, 0.0, format, device};
}

float qz::static_activation_scale(const Shape& s) {
  const std::vector<float> calibration = make_activations(s, s.calibration_rows, 3);
  float max_abs = 0.0f;
  for (float v : calibration) max_abs = std::max(max_abs, std::fabs(v));
  return cpu::int8_scale(max_abs);
}

// What storing moves one fp32 value v, per format (the stored value v̂, u the fp32 unit
// roundoff 2^-24); each scale is the one the quantizer must compute from the fp32 values:
//  - fp16, bf16 (round to nearest even): |v̂ − v| <= 2^-11·|v| (f16; plus half the subnormal
//    step, 2^-25, below 2^-14) and 2^-8·|v| (bf16; plus 2^-126, an f32 subnormal the AVX-512
//    BF16 conversion flushes to 0). The CPU stores only the weights so; CUDA also x.
//  - int8, a scale s = max|row| / 127 per weight row (output channel) and, dynamic, per token:
//    |v̂ − v| <= s/2 plus the rounding of v / s, < 128·u·s (quantize.hpp), and the stored fp32
//    scale is s·(1 ± u): within s·(1/2 + 2^-16).
//  - int8_static, the calibration scale s for every token: s·(1/2 + 2^-16) as above, except a
//    value beyond ±127.5·s, which saturates to ±127·s: |v| − 127·s.
//  - int4 groups (weights_int4.hpp): s = max|w| / 7 (symmetric) or (hi − lo) / 15 with [lo, hi]
//    the group's range widened to hold 0 (asymmetric), computed in fp32 (1 + u) and stored in
//    f16 rounded up, by at most one step: 2^-10 relative, or 2^-24 for a subnormal f16. Every w
//    lies within s_stored/2·(1 + 2^-19) of the grid, so within
//      (s·(1 + 2^-9) + 2^-24)/2·(1 + 2^-19).
//  - fp8 e4m3 (CUDA), one scale s = max|tensor| / 448: v / s rounds to a 3-bit mantissa, 2^-4
//    relative for a normal and half the subnormal step 2^-9, so |v̂ − v| <= 2^-4·|v| + 2^-10·s,
//    widened by 2^-20 for the fp32 rounding of v / s and of s.
qz::StorageError::StorageError(const Rounding& r, Operand operand, const Shape& s, const float* values,
                               std::size_t rows)
    : s_(s) {
  const bool weights = operand == Operand::weights;
  const bool cuda = r.device == DeviceKind::cuda;
  switch (r.format) {
    case Format::fp32: kind_ = Kind::exact; break;
    case Format::fp16:
    case Format::bf16:
      if (weights || cuda) {
        kind_ = Kind::relative;
        const bool f16 = r.format == Format::fp16;
        relative_ = std::ldexp(1.0, f16 ? -11 : -8);
        floor_ = std::ldexp(1.0, f16 ? -25 : -126);
      }
      break;
    case Format::int8_dynamic: kind_ = Kind::row_scale; break;
    case Format::int8_static:
      kind_ = weights ? Kind::row_scale : Kind::static_scale;
      if (!weights) scale_ = static_activation_scale(s);
      break;
    case Format::int4_weight_only: kind_ = weights ? Kind::int4_groups : Kind::exact; break;
    case Format::fp8: {
      kind_ = Kind::tensor_fp8;
      double max_abs = 0.0;
      for (std::size_t i = 0; i < rows * s.k; ++i) max_abs = std::max(max_abs, std::fabs(static_cast<double>(values[i])));
      scale_ = max_abs / 448.0;
      break;
    }
  }
}

void qz::StorageError::row(const float* v, std::vector<double>& bound) const {
  const std::size_t k = s_.k;
  const auto abs_max = [v](std::size_t begin, std::size_t end) {
    double m = 0.0;
    for (std::size_t p = begin; p < end; ++p) m = std::max(m, std::fabs(static_cast<double>(v[p])));
    return m;
  };
  const double int8_step = 0.5 + std::ldexp(1.0, -16);
  switch (kind_) {
    case Kind::exact: std::fill(bound.begin(), bound.begin() + static_cast<std::ptrdiff_t>(k), 0.0); break;
    case Kind::relative:
      for (std::size_t p = 0; p < k; ++p) bound[p] = relative_ * std::fabs(static_cast<double>(v[p])) + floor_;
      break;
    case Kind::row_scale: {
      const double e = abs_max(0, k) / cpu::int8_max * int8_step;
      std::fill(bound.begin(), bound.begin() + static_cast<std::ptrdiff_t>(k), e);
      break;
    }
    case Kind::static_scale:
      for (std::size_t p = 0; p < k; ++p)
        bound[p] = std::max(scale_ * int8_step, std::fabs(static_cast<double>(v[p])) - cpu::int8_max * scale_ +
                                                    std::ldexp(scale_, -16));
      break;
    case Kind::int4_groups:
      for (std::size_t g = 0; g < k; g += s_.group) {
        double range = 0.0;
        if (s_.int4_mode == cpu::Int4Mode::symmetric) {
          range = abs_max(g, g + s_.group) / 7.0;
        } else {
          double lo = 0.0, hi = 0.0;
          for (std::size_t p = g; p < g + s_.group; ++p) {
            lo = std::min(lo, static_cast<double>(v[p]));
            hi = std::max(hi, static_cast<double>(v[p]));
          }
          range = (hi - lo) / 15.0;
        }
        const double e = (range * (1.0 + std::ldexp(1.0, -9)) + std::ldexp(1.0, -24)) / 2.0 * (1.0 + std::ldexp(1.0, -19));
        std::fill(bound.begin() + static_cast<std::ptrdiff_t>(g), bound.begin() + static_cast<std::ptrdiff_t>(g + s_.group), e);
      }
      break;
    case Kind::tensor_fp8:
      for (std::size_t p = 0; p < k; ++p)
        bound[p] = (std::ldexp(std::fabs(static_cast<double>(v[p])), -4) + std::ldexp(scale_, -10)) *
                   (1.0 + std::ldexp(1.0, -20));
      break;
  }
}

qz::ProductErrors qz::check_product(const Shape& s, const Rounding& r, const float* y, const float* x,
                                    const float* w, const RowReader& consumed_activations,
                                    const RowReader& stored_weights) {
  using Operand = StorageError::Operand;
  const StorageError x_error(r, Operand::activations, s, x, s.m), w_error(r, Operand::weights, s, w, s.n);
  // The checked rows of x as consumed (x̂) and their storage bounds, once.
  const std::vector<std::size_t> rows = checked_rows(s.m);
  std::vector<std::vector<double>> x_hat(rows.size(), std::vector<double>(s.k)), e_x = x_hat;
  for (std::size_t c = 0; c < rows.size(); ++c) {
    consumed_activations(rows[c], x_hat[c]);
    x_error.row(x + rows[c] * s.k, e_x[c]);
  }
  // The double sums themselves err by at most (k + 2)·2^-53·Σ|x·w| (Higham §3.1): 2^-50 covers it.
  const double double_rounding = (static_cast<double>(s.k) + 2.0) * std::ldexp(1.0, -50);
  std::vector<double> w_hat(s.k), e_w(s.k);
  double max_error = 0.0, sum_error = 0.0, max_ref = 0.0, sum_ref = 0.0;
  for (std::size_t j = 0; j < s.n; ++j) {
    stored_weights(j, w_hat);
    const float* w_row = w + j * s.k;
    w_error.row(w_row, e_w);
    for (std::size_t c = 0; c < rows.size(); ++c) {
      const std::size_t i = rows[c];
      const float* x_row = x + i * s.k;
      double consumed = 0.0, magnitude = 0.0, exact = 0.0, exact_magnitude = 0.0, storage = 0.0;
      for (std::size_t p = 0; p < s.k; ++p) {
        const double xv = x_row[p], wv = w_row[p];
        consumed += x_hat[c][p] * w_hat[p];
        magnitude += std::fabs(x_hat[c][p] * w_hat[p]);
        exact += xv * wv;
        exact_magnitude += std::fabs(xv * wv);
        storage += std::fabs(xv) * e_w[p] + e_x[c][p] * std::fabs(wv) + e_x[c][p] * e_w[p];
      }
      const double got = y[i * s.n + j];
      const double bound = (static_cast<double>(s.k) + 8.0) * r.per_addition * magnitude +
                           2.0 * r.output * std::fabs(consumed) + r.output_floor;
      if (!(std::fabs(got - consumed) <= bound)) {
        std::ostringstream m;
        m << "quantization: y[" << i << ", " << j << "] = " << got << " but the exact product of the stored "
          << "operands is " << consumed << " (bound " << bound << ")";
        throw CheckFailed(m.str());
      }
      const double e = std::fabs(got - exact);
      const double fp32_bound = bound + storage + double_rounding * (magnitude + exact_magnitude);
      if (!(e <= fp32_bound)) {
        std::ostringstream m;
        m << "quantization: y[" << i << ", " << j << "] = " << got << " but the fp32 product is " << exact
          << ", off by more than storing the operands in " << s.k << "-term rows can move it (bound " << fp32_bound
          << "); the stored operands or their scales are wrong";
        throw CheckFailed(m.str());
      }
      max_error = std::max(max_error, e);
      sum_error += e;
      max_ref = std::max(max_ref, std::fabs(exact));
      sum_ref += std::fabs(exact);
    }
  }
  return {max_ref > 0.0 ? max_error / max_ref : max_error, sum_ref > 0.0 ? sum_error / sum_ref : sum_error};
}

std::vector<Metric> qz::product_metrics(const Shape& s, std::size_t weight_bytes, const ProductErrors& errors,
                                        std::optional<double> clipped_fraction) {
  std::vector<Metric> metrics = {
      {"weight_bytes", static_cast<double>(weight_bytes), "B", Better::lower},
      {"bytes_per_weight", static_cast<double>(weight_bytes) / static_cast<double>(s.n * s.k), "B", Better::lower},
      {"max_rel_error", errors.max_rel, "", Better::lower},
      {"mean_rel_error", errors.mean_rel, "", Better::lower},
  };
  if (clipped_fraction) metrics.push_back({"clipped_fraction", *clipped_fraction, "", Better::lower});
  return metrics;
}

// On CUDA the kernels' own shape rules (gemm_lt.hpp, cuda/weights_int4.hpp) decide, pointers aside (the
// tracked allocator aligns device buffers to 256 bytes), so a grid valid on the CPU still runs
// and the cases CUDA cannot take are NotApplicable, naming the rule.
static void check(const Case& c, DeviceKind device) {
  if (qz::is_model_level(c)) return qz::validate_model(c, device);
  if (qz::schemes().parse(c.variant).qat)
    throw NotApplicable("quantization: qat fine-tunes the trained model, so it runs at level=model only");
  const qz::Shape s = qz::Shape::from(c);
  const qz::Format format = qz::parse_format(c.variant);
  if (device == DeviceKind::cpu) {
    if (format == qz::Format::fp8)
      throw NotApplicable("quantization: fp8 runs on cuda only (e4m3 tensor cores, compute capability 8.9+); "
                          "the cpu has no fp8 kernels");
    return;
  }
  try {
    switch (format) {
      case qz::Format::int8_dynamic:
      case qz::Format::int8_static:
        gpu::validate_gemm_int8(s.m, s.n, s.k, nullptr, nullptr, nullptr);
        break;
      case qz::Format::fp8:
        gpu::validate_gemm_fp8(s.m, s.n, s.k, DType::f32, nullptr, nullptr, nullptr);
        break;
      case qz::Format::int4_weight_only:
        if (s.int4_mode == cpu::Int4Mode::asymmetric)
          throw NotApplicable("quantization: int4_weight_only with zero_point=true runs on the cpu only; the cuda "
                              "gemv_int4 takes symmetric groups");
        gpu::validate_gemv_int4(s.m, s.n, s.k, s.group, nullptr, nullptr);
        break;
      default:
        break;
    }
  } catch (const std::invalid_argument& e) {
    throw NotApplicable("quantization: " + c.variant + " on cuda: " + e.what());
  }
}

// ---- the run

namespace {

class CpuRun : public Run {
 public:
  CpuRun(const qz::Shape& s, qz::Format format)
      : s_(s), format_(format), w_(qz::make_weights(s)), x_(Device::cpu(), s.m * s.k), y_(Device::cpu(), s.m * s.n) {
    const std::vector<float> x = qz::make_activations(s, s.m, 2);
    std::copy(x.begin(), x.end(), x_.data());
    // The stored weights: the bytes this format keeps, measured as what stays allocated.
    const std::size_t before = memory::usage(Device::cpu()).current;
    switch (format_) {
      case qz::Format::fp32:
        w32_ = memory::Buffer<float>(Device::cpu(), w_.size());
        std::copy(w_.begin(), w_.end(), w32_.data());
        break;
      case qz::Format::fp16:
      case qz::Format::bf16:
        w16_ = memory::Buffer<std::uint16_t>(Device::cpu(), w_.size());
        convert(w_.data(), w16_.data(), w_.size(), half_dtype());
        break;
      case qz::Format::int8_dynamic:
      case qz::Format::int8_static:
        w8_ = cpu::quantize_pack_int8_weights(w_.data(), s.n, s.k);
        xq_ = cpu::QuantizedActivations(s.m, s.k);
        break;
      case qz::Format::int4_weight_only:
        w4_ = cpu::quantize_int4(w_.data(), s.n, s.k, s.group, s.int4_mode);
        break;
      case qz::Format::fp8:
        throw std::logic_error("quantization: fp8 has no cpu run (validate rejects it)");
    }
    weight_bytes_ = memory::usage(Device::cpu()).current - before - xq_.bytes();
    if (format_ == qz::Format::int8_static) static_scale_ = qz::static_activation_scale(s);
    // A broken quantizer, for the tests: every stored scale 0 (the products become 0).
    if (fault::active("quantization.zero_scales")) zero_scales();
  }

  void step() override {
    switch (format_) {
      case qz::Format::fp32:
        cpu::linear(x_.data(), w32_.data(), nullptr, y_.data(), s_.m, s_.k, s_.n);
        break;
      case qz::Format::fp16:
      case qz::Format::bf16:
        cpu::gemm_half(w16_.data(), half_dtype(), x_.data(), nullptr, y_.data(), s_.m, s_.n, s_.k);
        break;
      case qz::Format::int8_dynamic:
        cpu::quantize_activations_dynamic(x_.data(), xq_);
        cpu::gemm_int8(xq_, w8_, nullptr, y_.data());
        break;
      case qz::Format::int8_static:
        clip_ = cpu::quantize_activations_static(x_.data(), static_scale_, xq_);
        cpu::gemm_int8(xq_, w8_, nullptr, y_.data());
        break;
      case qz::Format::int4_weight_only:
        cpu::gemm_int4(w4_, x_.data(), nullptr, y_.data(), s_.m);
        break;
      case qz::Format::fp8:
        break;  // never constructed
    }
  }

  // The weights once, the activations and the output: a GEMV's traffic, a GEMM's lower bound.
  Work work() const override {
    const double bytes = static_cast<double>(weight_bytes_) + 4.0 * static_cast<double>(s_.m * (s_.k + s_.n));
    // Every buffer a step touches: the weights, x and y, and the int8 activations.
    const double working_set = static_cast<double>(weight_bytes_ + x_.bytes() + y_.bytes() + xq_.bytes());
    return {.bytes = bytes, .flops = s_.flops(), .working_set_bytes = working_set};
  }

  std::vector<Metric> finish() override;

 private:
  DType half_dtype() const { return format_ == qz::Format::fp16 ? DType::f16 : DType::bf16; }

  // The int8 weights' per-channel scales and the int4 groups' scales set to 0 (fp16 and bf16
  // store no scale).
  void zero_scales() {
    std::fill(w8_.scale.begin(), w8_.scale.end(), 0.0f);
    std::fill(w4_.scales.begin(), w4_.scales.end(), std::uint16_t{0});
  }

  // Row j of the weights as this format stores them, widened to double: ŵ.
  void stored_weight_row(std::size_t j, std::vector<double>& row) const {
    switch (format_) {
      case qz::Format::fp32:
        for (std::size_t p = 0; p < s_.k; ++p) row[p] = w32_[j * s_.k + p];
        break;
      case qz::Format::fp16:
      case qz::Format::bf16:
        for (std::size_t p = 0; p < s_.k; ++p) {
          const std::uint16_t h = w16_[j * s_.k + p];
          row[p] = format_ == qz::Format::fp16 ? f16_to_float(h) : bf16_to_float(h);
        }
        break;
      case qz::Format::int8_dynamic:
      case qz::Format::int8_static:
        for (std::size_t p = 0; p < s_.k; ++p) row[p] = static_cast<double>(w8_.scale[j]) * w8_.value(j, p);
        break;
      case qz::Format::int4_weight_only: {
        std::vector<float> f(s_.k);
        cpu::dequantize_int4_rows(w4_, j, 1, f.data());
        for (std::size_t p = 0; p < s_.k; ++p) row[p] = f[p];
        break;
      }
      case qz::Format::fp8:
        break;  // never constructed
    }
  }

  // Row i of the activations as the product consumed them: x̂ (quantized for int8, else x).
  void consumed_activation_row(std::size_t i, std::vector<double>& row) const {
    const bool int8 = format_ == qz::Format::int8_dynamic || format_ == qz::Format::int8_static;
    for (std::size_t p = 0; p < s_.k; ++p)
      row[p] = int8 ? static_cast<double>(xq_.scale[i]) * xq_.value(i, p) : x_[i * s_.k + p];
  }

  qz::Shape s_;
  qz::Format format_;
  std::vector<float> w_;  // the fp32 weights, for the reference (untracked: not the format's)
  memory::Buffer<float> x_, y_;
  memory::Buffer<float> w32_;
  memory::Buffer<std::uint16_t> w16_;
  cpu::PackedInt8Weights w8_;
  cpu::QuantizedActivations xq_;
  cpu::Int4Matrix w4_;
  std::size_t weight_bytes_ = 0;
  float static_scale_ = 0.0f;
  cpu::ClipCount clip_;
};

// y against the exact product of what the kernel consumed (the stored weights and, for int8,
// the quantized activations), and against the fp32 product: qz::check_product.
std::vector<Metric> CpuRun::finish() {
  const qz::ProductErrors errors = qz::check_product(
      s_, qz::rounding(format_, DeviceKind::cpu), y_.data(), x_.data(), w_.data(),
      [this](std::size_t i, std::vector<double>& row) { consumed_activation_row(i, row); },
      [this](std::size_t j, std::vector<double>& row) { stored_weight_row(j, row); });
  std::optional<double> clipped;
  if (format_ == qz::Format::int8_static) clipped = clip_.fraction();
  return qz::product_metrics(s_, weight_bytes_, errors, clipped);
}

}  // namespace

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  if (qz::is_model_level(c)) return qz::prepare_model(c);
  const qz::Shape shape = qz::Shape::from(c);
  const qz::Format format = qz::parse_format(c.variant);
  if (device.is_cpu()) return std::make_unique<CpuRun>(shape, format);
#ifdef AIOPT_HAVE_CUDA
  return qz::prepare_cuda(shape, format, device);
#else
  throw DeviceUnavailable("aiopt was built without CUDA");
#endif
}

std::unique_ptr<Technique> make_quantization() {
  return make_technique({"quantization", "accuracy vs speed and memory", summary, params, variants, check, start});
}

}  // namespace aiopt
