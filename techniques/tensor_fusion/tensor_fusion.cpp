#include "techniques/tensor_fusion/tensor_fusion.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/rng.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/bf16.hpp"
#include "kernels/cpu/elementwise.hpp"
#include "kernels/cpu/fused_chains.hpp"
#include "kernels/cpu/layernorm.hpp"
#include "kernels/cpu/softmax.hpp"
#include "techniques/technique_parts.hpp"

namespace aiopt {

namespace tf = tensor_fusion;
namespace cpu = kernels::cpu;

// ---- parameters and variants

static std::string summary() {
  return "bias+GELU, bias+dropout+residual+LayerNorm and scale+mask+softmax, one pass per op vs fused";
}

static std::vector<ParamSpec> params() {
  return {
      tf::chains().param("chain", tf::Chain::layernorm, std::nullopt, "",
                   "bias_gelu: gelu(x + b); layernorm: LayerNorm(residual + dropout(x + b)); "
                   "softmax: softmax(causal_mask(x / sqrt(hidden)))"),
      integer_param("rows", 8192, 1024, 1, unbounded, "rows",
                    "tokens (batch × sequence); softmax: attention rows, a multiple of hidden"),
      integer_param("hidden", 1024, 256, 1, 65536, "elements",
                    "row width: the model width, or the sequence length of softmax's attention blocks"),
      real_param("dropout", 0.1, std::nullopt, 0.0, 0.95, "", "dropout probability of the layernorm chain"),
      tf::dtypes().param("dtype", tf::Dtype::f32, std::nullopt, "",
                   "how activations (x, residual, y, intermediates) are stored: f32, or bf16 (half the bytes); "
                   "arithmetic and parameter vectors stay fp32"),
  };
}

const VariantTable<tf::Form>& tf::forms() {
  static const VariantTable<Form> table(
      "tensor_fusion",
      {
          {Form::unfused, "unfused", "one pass (CPU) or kernel (CUDA) per op; every intermediate written to memory",
           true},
          {Form::fused, "fused", "the whole chain in one pass (CPU: SIMD + OpenMP) or one kernel (CUDA)"},
          {Form::cuda_graph, "cuda_graph", "the unfused kernels captured once into a CUDA graph, launched as one", false,
           {DeviceKind::cuda}},
      });
  return table;
}

static std::vector<Variant> variants() { return tf::forms().variants(); }

// ---- the case

const Choices<tf::Chain>& tf::chains() {
  static const Choices<Chain> names{
      {Chain::bias_gelu, "bias_gelu"}, {Chain::layernorm, "layernorm"}, {Chain::softmax, "softmax"}};
  return names;
}

const Choices<tf::Dtype>& tf::dtypes() {
  static const Choices<Dtype> names{{Dtype::f32, "f32"}, {Dtype::bf16, "bf16"}};
  return names;
}

float tf::Shape::softmax_scale() const { return 1.0f / std::sqrt(static_cast<float>(hidden)); }

tf::Shape tf::Shape::from(const Case& c) {
  Shape s;
  s.chain = chains().of(c.params, "chain");
  s.dtype = dtypes().of(c.params, "dtype");
  const std::int64_t rows = c.params.integer("rows");
  const std::int64_t hidden = c.params.integer("hidden");
  const double dropout = c.params.real("dropout");
  if (s.chain == Chain::softmax && rows % hidden != 0) {
    throw InputError("tensor_fusion: chain=softmax reads rows as (rows / hidden) causal blocks of "
                     "hidden × hidden scores, so rows must be a multiple of hidden; got rows = " +
                     std::to_string(rows) + ", hidden = " + std::to_string(hidden) + "; allowed: rows = " +
                     std::to_string(hidden) + "·k, e.g. " + std::to_string(std::max<std::int64_t>(1, rows / hidden) * hidden));
  }
  s.rows = static_cast<std::size_t>(rows);
  s.hidden = static_cast<std::size_t>(hidden);
  s.dropout = static_cast<float>(dropout);
  // Distinct counters of one seed give independent streams for the mask and each input tensor.
  s.dropout_seed = rng::bits(c.seed, 1);
  s.input_seed = rng::bits(c.seed, 2);
  return s;
}

// ---- inputs, reference, counts, checks

namespace {

// Uniform values in [lo, hi), rounded to bf16 when `dtype` is bf16, stored as T.
template <class T>
memory::Buffer<T> uniform_tensor(std::size_t n, std::uint64_t seed, float lo, float hi, tf::Dtype dtype) {
  memory::Buffer<T> t(Device::cpu(), n);
  T* p = t.data();
  const bool bf16 = dtype == tf::Dtype::bf16;
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    const float v = lo + (hi - lo) * rng::uniform(seed, i);
    p[i] = cpu::from_float<T>(bf16 ? cpu::bf16_to_float(cpu::float_to_bf16(v)) : v);
  }
  return t;
}

memory::Buffer<float> parameter_vector(std::size_t n, std::uint64_t seed, float lo, float hi) {
  return uniform_tensor<float>(n, seed, lo, hi, tf::Dtype::f32);
}

}  // namespace

template <class T>
tf::Inputs<T> tf::make_inputs(const Shape& s) {
  Inputs<T> in;
  const std::uint64_t seed = s.input_seed;
  switch (s.chain) {
    case Chain::bias_gelu:
      // Pre-activations spanning GELU's curved region and both tails.
      in.x = uniform_tensor<T>(s.elements(), rng::bits(seed, 0), -4.0f, 4.0f, s.dtype);
      in.bias = parameter_vector(s.hidden, rng::bits(seed, 1), -0.5f, 0.5f);
      break;
    case Chain::layernorm:
      in.x = uniform_tensor<T>(s.elements(), rng::bits(seed, 0), -1.0f, 1.0f, s.dtype);
      in.bias = parameter_vector(s.hidden, rng::bits(seed, 1), -0.5f, 0.5f);
      in.residual = uniform_tensor<T>(s.elements(), rng::bits(seed, 2), -2.0f, 2.0f, s.dtype);
      in.gamma = parameter_vector(s.hidden, rng::bits(seed, 3), 0.5f, 1.5f);
      in.beta = parameter_vector(s.hidden, rng::bits(seed, 4), -0.5f, 0.5f);
      break;
    case Chain::softmax: {
      // Raw scores q·k grow like sqrt(hidden); after the 1/sqrt(hidden) scale they span ±3.
      const float spread = 3.0f * std::sqrt(static_cast<float>(s.hidden));
      in.x = uniform_tensor<T>(s.elements(), rng::bits(seed, 0), -spread, spread, s.dtype);
      break;
    }
  }
  return in;
}

template tf::Inputs<float> tf::make_inputs(const Shape&);
template tf::Inputs<cpu::bf16> tf::make_inputs(const Shape&);

memory::Buffer<float> tf::reference_output(const Shape& s, const Inputs<float>& in) {
  const Device host = Device::cpu();
  const std::size_t n = s.elements();
  memory::Buffer<float> y(host, n);
  memory::Buffer<float> t(host, n);
  switch (s.chain) {
    case Chain::bias_gelu:
      cpu::bias_add_reference(in.x.data(), in.bias.data(), t.data(), s.rows, s.hidden);
      cpu::gelu_tanh_reference(t.data(), y.data(), n);
      break;
    case Chain::layernorm:
      cpu::bias_add_reference(in.x.data(), in.bias.data(), t.data(), s.rows, s.hidden);
      cpu::dropout_reference(t.data(), y.data(), n, s.dropout, s.dropout_seed);
      cpu::residual_add_reference(in.residual.data(), y.data(), t.data(), n);
      cpu::layernorm_reference(t.data(), in.gamma.data(), in.beta.data(), y.data(), s.rows, s.hidden,
                               layernorm_eps);
      break;
    case Chain::softmax:
      cpu::scale_reference(in.x.data(), y.data(), n, s.softmax_scale());
      cpu::causal_mask_reference(y.data(), t.data(), s.rows, s.hidden);
      cpu::softmax_reference(t.data(), y.data(), s.rows, s.hidden);
      break;
  }
  return y;
}

std::size_t tf::unfused_ops(Chain chain) {
  switch (chain) {
    case Chain::bias_gelu: return 2;  // bias add, GELU
    case Chain::layernorm: return 4;  // bias add, dropout, residual add, LayerNorm
    case Chain::softmax: return 3;    // scale, mask, softmax
  }
  return 0;
}

double tf::bytes_moved(const Shape& s, bool fused) {
  // N: one (rows, hidden) tensor; P: one (hidden) parameter vector, counted once per pass that
  // reads it (it stays in cache across rows).
  const double N = static_cast<double>(s.elements()) * static_cast<double>(s.element_bytes());
  const double P = static_cast<double>(s.hidden) * sizeof(float);
  switch (s.chain) {
    case Chain::bias_gelu:
      return fused ? 2 * N + P                  // read x, b; write y
                   : (2 * N + P) + (2 * N);     // bias: x, b -> t; gelu: t -> y
    case Chain::layernorm:
      return fused ? 3 * N + 3 * P              // read x, residual, b, gamma, beta; write y
                   : (2 * N + P) + (2 * N) + (3 * N) + (2 * N + 2 * P);  // bias, dropout, residual, LN
    case Chain::softmax:
      return fused ? 2 * N : 3 * (2 * N);       // scale, mask, softmax: each reads and writes N
  }
  return 0;
}

double tf::working_set_bytes(const Shape& s, bool fused) {
  const double N = static_cast<double>(s.elements()) * static_cast<double>(s.element_bytes());
  const double P = static_cast<double>(s.hidden) * sizeof(float);
  const double intermediates = fused ? 0 : static_cast<double>(unfused_ops(s.chain) - 1) * N;
  switch (s.chain) {
    case Chain::bias_gelu: return 2 * N + P + intermediates;      // x, b, y
    case Chain::layernorm: return 3 * N + 3 * P + intermediates;  // x, residual, b, gamma, beta, y
    case Chain::softmax: return 2 * N + intermediates;            // x, y
  }
  return 0;
}

double tf::max_abs_error(const float* got, const float* want, std::size_t n) {
  double worst = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (std::isnan(e)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, e);
  }
  return worst;
}

double tf::tolerance(const Shape& s) {
  if (s.dtype == Dtype::f32) {
    switch (s.chain) {
      case Chain::bias_gelu: return 1e-5;  // |x| <= 4.5: tanh error 2e-7 scaled by 0.5·|x|
      case Chain::layernorm: return 1e-4;  // fp32 row sums vs double; outputs of order 1-5
      case Chain::softmax: return 1e-6;    // outputs in [0, 1]; exp and 1/sum to ~2e-7 relative
    }
  }
  // bf16: each stored value is off by at most u = 2^-8 relative (8 significant bits, round to
  // nearest). The reference is fp32/double from the same bf16 inputs, so the error is the
  // roundings of the output and, unfused, of every intermediate (the fused chains round only the
  // output, and stay inside the same bound):
  constexpr double u = 1.0 / 256;
  switch (s.chain) {
    case Chain::bias_gelu:
      // t = x + b rounded (|t| <= 4.5, |gelu'| <= 1.13): 1.13·4.5·u; then y (|y| <= 4.5): 4.5·u.
      return 10.0 * u;
    case Chain::layernorm: {
      const std::vector<double> bounds = layernorm_bf16_bounds(s, make_inputs<float>(s));
      return *std::max_element(bounds.begin(), bounds.end());
    }
    case Chain::softmax:
      // z = s·x rounded (|z| <= 3): each logit off by 3u; a probability moves by at most
      // e^{2·3u} − 1 ≈ 6u relative, then its own rounding u; probabilities <= 1: 7u, margin 8u.
      return 8.0 * u;
  }
  return 0;
}

// The bf16 layernorm chain, u = 2^-8 (bf16's unit roundoff, round to nearest), q the dropout
// scale 1/(1 − p), per row of H elements. The unfused chain rounds three intermediates:
//   t̂ = bf16(x + b)          |t̂ − t| <= u·|t|
//   d̂ = bf16(q·t̂) if kept    |d̂ − q·t| <= q·u·|t| + u·q·|t|·(1 + u) <= 2u·q·|t|·(1 + u)   (0 if dropped)
//   ẑ = bf16(r + d̂)          |ẑ − z| <= |d̂ − d| + u·|ẑ|
// (x, r are bf16 already), so each input of the norm is off by e_j <= u·(2q·|t_j|·kept + |z_j|)·(1 + 3u)
// (the (1 + 3u) covers u² terms and |ẑ| <= |z| + e). The fused chain rounds none of them, so
// e_j = 0 there and the bound below still holds. Then, with c = z − μ, σ = sqrt(|c|²/H + eps),
// n = c/σ, y = γ·n + β:
//   |Δμ| <= mean_j e_j = M;  |Δc_j| <= e_j + M;
//   |Δσ| <= |Δc|/√H <= R = sqrt(mean_j e_j²)   (centering is a projection; sqrt(a² + eps) is
//                                                1-Lipschitz in a);
//   n̂_j − n_j = Δc_j/σ̂ + c_j·(1/σ̂ − 1/σ), so |Δn_j| <= (e_j + M + |n_j|·R) / (σ − R);
// the fp32 sums of the mean and variance (in the kernel and in the reference) add at most
// 2·(H + 4)·2^-24·(2 + |n_j|) to n_j; the output is rounded once more, u·|ŷ_j|. So
//   |ŷ_j − y_j| <= γ_j·(|Δn_j| + fp32) + u·(|y_j| + γ_j·(|Δn_j| + fp32))·(1 + 2u).
// A missing dropout rescale moves each kept input by (q − 1)·|t_j| (0.11·|t_j| at p = 0.1),
// about 4·|t_j| / (2 + |n_j|) times e_j's share of this bound, so it fails.
std::vector<double> tf::layernorm_bf16_bounds(const Shape& s, const Inputs<float>& in) {
  constexpr double u = 1.0 / 256;
  const double fp32_sums = 2.0 * (static_cast<double>(s.hidden) + 4.0) * std::ldexp(1.0, -24);
  const cpu::Dropout mask(s.dropout, s.dropout_seed);
  const double q = mask.scale;
  const std::size_t H = s.hidden;
  std::vector<double> bounds(s.elements());
  std::vector<double> z(H), e(H);
  for (std::size_t r = 0; r < s.rows; ++r) {
    double mean = 0.0;
    for (std::size_t j = 0; j < H; ++j) {
      const std::size_t i = r * H + j;
      const double t = static_cast<double>(in.x[i]) + in.bias[j];
      const bool kept = mask.keeps(i);
      z[j] = static_cast<double>(in.residual[i]) + (kept ? q * t : 0.0);
      e[j] = u * ((kept ? 2.0 * q * std::fabs(t) : 0.0) + std::fabs(z[j])) * (1.0 + 3.0 * u);
      mean += z[j];
    }
    mean /= static_cast<double>(H);
    double variance = 0.0, m = 0.0, r2 = 0.0;
    for (std::size_t j = 0; j < H; ++j) {
      variance += (z[j] - mean) * (z[j] - mean);
      m += e[j];
      r2 += e[j] * e[j];
    }
    const double sigma = std::sqrt(variance / static_cast<double>(H) + layernorm_eps);
    m /= static_cast<double>(H);
    const double R = std::sqrt(r2 / static_cast<double>(H));
    for (std::size_t j = 0; j < H; ++j) {
      const double n = (z[j] - mean) / sigma;
      const double gamma = in.gamma[j];
      const double y = gamma * n + in.beta[j];
      const double before_rounding =
          gamma * ((e[j] + m + std::fabs(n) * R) / (sigma - R) + fp32_sums * (2.0 + std::fabs(n)));
      bounds[r * H + j] = before_rounding + u * (std::fabs(y) + before_rounding) * (1.0 + 2.0 * u);
    }
  }
  return bounds;
}

double tf::check_output(const Shape& s, const float* output, const std::string& variant) {
  const Inputs<float> in = make_inputs<float>(s);
  const memory::Buffer<float> want = reference_output(s, in);
  const double error = max_abs_error(output, want.data(), s.elements());
  if (s.dtype == Dtype::bf16 && s.chain == Chain::layernorm) {
    const std::vector<double> bounds = layernorm_bf16_bounds(s, in);
    for (std::size_t i = 0; i < bounds.size(); ++i) {
      const double e = std::fabs(static_cast<double>(output[i]) - want[i]);
      if (!(e <= bounds[i])) {
        std::ostringstream m;
        m << "tensor_fusion: variant " << variant << ", chain layernorm (" << s.rows << " × " << s.hidden
          << ", bf16): output " << i << " = " << output[i] << " is " << e << " from the unfused scalar reference "
          << want[i] << ", beyond its bf16 bound " << bounds[i];
        throw CheckFailed(m.str());
      }
    }
    return error;
  }
  if (!(error <= tolerance(s))) {
    std::ostringstream m;
    m << "tensor_fusion: variant " << variant << ", chain " << to_string(s.chain) << " (" << s.rows << " × "
      << s.hidden << ", " << to_string(s.dtype) << "): max abs error " << error
      << " vs the unfused scalar reference exceeds the tolerance " << tolerance(s);
    throw CheckFailed(m.str());
  }
  return error;
}

// ---- the CPU run

namespace {

// T: how activations are stored, float (f32) or cpu::bf16.
template <class T>
class CpuRun : public Run {
 public:
  CpuRun(const tf::Shape& shape, bool fused)
      : shape_(shape), fused_(fused), in_(tf::make_inputs<T>(shape)),
        y_(Device::cpu(), shape.elements()), mask_(shape.dropout, shape.dropout_seed) {
    // A broken dropout, for the tests: kept values not scaled by 1/(1 − p).
    if (fault::active("tensor_fusion.no_dropout_rescale")) mask_.scale = 1.0f;
    // The unfused chain's intermediates, one tensor per op output but the last; their measured
    // peak is the memory the fusion saves.
    memory::Scope scope(Device::cpu());
    if (!fused_) {
      const std::size_t count = tf::unfused_ops(shape.chain) - 1;
      for (std::size_t i = 0; i < count; ++i) intermediates_.emplace_back(Device::cpu(), shape.elements());
    }
    intermediate_bytes_ = scope.peak_bytes();
  }

  void step() override { fused_ ? run_fused() : run_unfused(); }

  Work work() const override {
    return {.bytes = tf::bytes_moved(shape_, fused_),
            .flops = std::nullopt,
            .working_set_bytes = tf::working_set_bytes(shape_, fused_)};
  }

  std::vector<Metric> finish() override {
    const std::string& variant = tf::to_string(fused_ ? tf::Form::fused : tf::Form::unfused);
    double error = 0.0;
    if constexpr (std::is_same_v<T, float>) {
      error = tf::check_output(shape_, y_.data(), variant);
    } else {
      memory::Buffer<float> y(Device::cpu(), shape_.elements());
      for (std::size_t i = 0; i < y.size(); ++i) y[i] = cpu::bf16_to_float(y_[i]);
      error = tf::check_output(shape_, y.data(), variant);
    }
    return {
        // Counted by formula, not measured: reported, never weighed as a gain.
        {"bytes_moved_analytic", tf::bytes_moved(shape_, fused_), "B", Better::lower, false},
        {"passes", static_cast<double>(fused_ ? 1 : tf::unfused_ops(shape_.chain)), "", Better::lower},
        {"intermediate_bytes", static_cast<double>(intermediate_bytes_), "B", Better::lower},
        {"max_abs_error", error, "", Better::lower},
    };
  }

 private:
  void run_fused() {
    const std::size_t rows = shape_.rows, hidden = shape_.hidden;
    switch (shape_.chain) {
      case tf::Chain::bias_gelu:
        cpu::bias_gelu_fused(in_.x.data(), in_.bias.data(), y_.data(), rows, hidden);
        break;
      case tf::Chain::layernorm:
        cpu::bias_dropout_residual_layernorm_fused(in_.x.data(), in_.bias.data(), in_.residual.data(),
                                                   in_.gamma.data(), in_.beta.data(), y_.data(), rows, hidden,
                                                   mask_, tf::layernorm_eps);
        break;
      case tf::Chain::softmax:
        cpu::scale_mask_softmax_fused(in_.x.data(), y_.data(), rows, hidden, shape_.softmax_scale());
        break;
    }
  }

  void run_unfused() {
    const std::size_t rows = shape_.rows, hidden = shape_.hidden, n = shape_.elements();
    T* y = y_.data();
    switch (shape_.chain) {
      case tf::Chain::bias_gelu: {
        T* t = intermediates_[0].data();
        cpu::bias_add(in_.x.data(), in_.bias.data(), t, rows, hidden);
        cpu::gelu_tanh(t, y, n);
        break;
      }
      case tf::Chain::layernorm: {
        T* biased = intermediates_[0].data();
        T* dropped = intermediates_[1].data();
        T* summed = intermediates_[2].data();
        cpu::bias_add(in_.x.data(), in_.bias.data(), biased, rows, hidden);
        cpu::dropout(biased, dropped, n, mask_);
        cpu::residual_add(in_.residual.data(), dropped, summed, n);
        cpu::layernorm(summed, in_.gamma.data(), in_.beta.data(), y, rows, hidden, tf::layernorm_eps);
        break;
      }
      case tf::Chain::softmax: {
        T* scaled = intermediates_[0].data();
        T* masked = intermediates_[1].data();
        cpu::scale(in_.x.data(), scaled, n, shape_.softmax_scale());
        cpu::causal_mask(scaled, masked, rows, hidden);
        cpu::softmax(masked, y, rows, hidden);
        break;
      }
    }
  }

  tf::Shape shape_;
  bool fused_;
  tf::Inputs<T> in_;
  memory::Buffer<T> y_;  // (rows, hidden)
  std::vector<memory::Buffer<T>> intermediates_;  // unfused only: (rows, hidden) each
  std::size_t intermediate_bytes_ = 0;
  cpu::Dropout mask_;
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind) { (void)tf::Shape::from(c); }

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  const tf::Form form = tf::forms().parse(c.variant);
  const tf::Shape shape = tf::Shape::from(c);
  if (device.is_cpu()) {
    const bool fused = form == tf::Form::fused;
    if (shape.dtype == tf::Dtype::bf16) return std::make_unique<CpuRun<cpu::bf16>>(shape, fused);
    return std::make_unique<CpuRun<float>>(shape, fused);
  }
#ifdef AIOPT_HAVE_CUDA
  return tf::prepare_cuda(shape, form, device);
#else
  throw DeviceUnavailable("aiopt was built without CUDA");
#endif
}

std::unique_ptr<Technique> make_tensor_fusion() {
  return make_technique(
      {"tensor_fusion", "development complexity vs memory traffic", summary, params, variants, check, start});
}

}  // namespace aiopt
