#include "techniques/flash_attention/flash_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "techniques/technique_parts.hpp"

namespace aiopt {

namespace fa = flash_attention;
namespace cpu = kernels::cpu;

// ---- parameters and variants

static std::string summary() {
  return "exact attention: N×N scores materialized (naive) vs tiled online softmax (flash) vs query chunks";
}

namespace {

// How q, k, v and the output are stored, by the names the `dtype` parameter takes.
const Choices<DType>& dtypes() {
  static const Choices<DType> names{{DType::f32, "f32"}, {DType::f16, "f16"}, {DType::bf16, "bf16"}};
  return names;
}

}  // namespace

static std::vector<ParamSpec> params() {
  ParamSpec causal;
  causal.name = "causal";
  causal.type = ParamType::boolean;
  causal.default_value = false;
  causal.help = "mask keys after the query (decoder self-attention): about half the work";

  std::vector<ParamSpec> out = {
      integer_param("batch", 1, std::nullopt, 1, 4096, "", "B"),
      integer_param("heads", 8, 4, 1, 4096, "", "H, attention heads"),
      integer_param("seq_len", 2048, 256, 4, 1 << 20, "tokens", "N: queries and keys per head"),
      choice_param("head_dim", "64", std::nullopt, {"16", "32", "64", "128"}, "elements",
                   "d, the width of one head (the CUDA tensor-core kernel is built for 64 and 128; 16 and 32 are "
                   "the tiny and small models' heads, for inputs=trained)"),
      causal,
      dtypes().param("dtype", DType::f32, std::nullopt, "",
                   "how q, k, v and the output are stored; f16/bf16 (CUDA only) accumulate in fp32 on tensor "
                   "cores"),
      integer_param("q_tile", 128, std::nullopt, 1, 4096, "rows", "CPU flash: queries per tile"),
      integer_param("kv_tile", 256, std::nullopt, 1, 4096, "rows", "CPU flash: keys per tile"),
      integer_param("chunk", 128, std::nullopt, 1, 1 << 20, "rows", "memory_efficient: queries per chunk"),
      real_param("score_std", 3.0, std::nullopt, 0.01, 16.0, "",
                 "standard deviation of the scores q·k/sqrt(d) on the generated inputs: 3 concentrates attention "
                 "on few keys and makes the online softmax rescale; below 1 attention is nearly a mean of v"),
  };
  for (ParamSpec& p : attention_inputs::specs()) out.push_back(std::move(p));
  return out;
}

const VariantTable<fa::Method>& fa::methods() {
  static const VariantTable<Method> table(
      "flash_attention",
      {
          {Method::naive, "naive",
           "S = q·kᵀ by batched GEMM into a (B, H, N, N) buffer, masked softmax, S·v by batched GEMM", true},
          {Method::flash, "flash",
           "tiles of q against tiles of k, v with the online softmax; no N×N storage (CUDA: tensor cores for "
           "f16/bf16)"},
          {Method::memory_efficient, "memory_efficient",
           "chunk queries at a time, each with its full softmax row over the keys"},
      });
  return table;
}

static std::vector<Variant> variants() { return fa::methods().variants(); }

// ---- the case

std::size_t fa::Shape::q_elements() const {
  return attention.batch * attention.heads * attention.q_len * attention.head_dim;
}

fa::Shape fa::Shape::at_length(std::size_t n) const {
  Shape s = *this;
  s.attention = kernels::AttentionShape::self(attention.batch, attention.heads, n, attention.head_dim,
                                              attention.causal);
  s.trained.reset();
  return s;
}

std::string fa::Shape::describe_inputs() const {
  if (trained) return "q, k, v of " + trained->describe();
  std::ostringstream m;
  m << "score s.d. " << score_std;
  return m.str();
}

fa::Shape fa::Shape::from(const Case& c) {
  Shape s;
  s.dtype = dtypes().of(c.params, "dtype");
  const auto count = [&](const char* name) { return static_cast<std::size_t>(c.params.integer(name)); };
  s.attention = kernels::AttentionShape::self(count("batch"), count("heads"), count("seq_len"),
                                              std::stoul(c.params.string("head_dim")), c.params.boolean("causal"));
  s.tiles = {count("q_tile"), count("kv_tile")};
  s.chunk = count("chunk");
  s.score_std = c.params.real("score_std");
  s.input_seed = rng::bits(c.seed, 1);
  s.trained = attention_inputs::trained(c.params);
  return s;
}

// ---- inputs, reference, checks

fa::Inputs fa::make_inputs(const Shape& s) {
  const std::size_t n = s.q_elements();
  Inputs in;
  if (s.trained) {
    nn::AttentionCapture c = s.trained->capture(s.attention.batch, s.attention.q_len);
    if (c.q.size() != n)  // check() holds heads and head_dim to the model's
      throw std::logic_error("flash_attention: the captured q, k, v do not have the case's shape");
    in = {std::move(c.q), std::move(c.k), std::move(c.v)};
  } else {
    in = {memory::Buffer<float>(Device::cpu(), n), memory::Buffer<float>(Device::cpu(), n),
          memory::Buffer<float>(Device::cpu(), n)};
    // q and k uniform in [-a, a]: variance a²/3 each, so a score (d products of variance a⁴/9,
    // times 1/√d) has s.d. a²/3 = score_std. v uniform in [-1, 1].
    const float a = static_cast<float>(std::sqrt(3.0 * s.score_std));
    std::uint64_t stream = 0;
    for (memory::Buffer<float>* t : {&in.q, &in.k, &in.v}) {
      const std::uint64_t seed = rng::bits(s.input_seed, stream++);
      const float range = t == &in.v ? 1.0f : a;
      float* p = t->data();
#pragma omp parallel for schedule(static)
      for (std::size_t i = 0; i < n; ++i) p[i] = range * (-1.0f + 2.0f * rng::uniform(seed, i));
    }
  }
  if (s.dtype == DType::f32) return in;
  const DType dtype = s.dtype;
  for (memory::Buffer<float>* t : {&in.q, &in.k, &in.v}) {
    float* p = t->data();
#pragma omp parallel for schedule(static)
    for (std::size_t i = 0; i < n; ++i)
      p[i] = dtype == DType::f16 ? f16_to_float(float_to_f16(p[i])) : bf16_to_float(float_to_bf16(p[i]));
  }
  return in;
}

memory::Buffer<double> fa::reference_output(const Shape& s, const Inputs& in) {
  memory::Buffer<double> out(Device::cpu(), s.q_elements());
  // One (batch, head) at a time: the reference is single-threaded, the heads are independent.
  kernels::AttentionShape one = s.attention;
  one.batch = one.heads = 1;
  const std::size_t heads = s.attention.batch * s.attention.heads;
  const std::size_t q_stride = one.q_len * one.head_dim, kv_stride = one.kv_capacity * one.head_dim;
#pragma omp parallel for schedule(dynamic, 1)
  for (std::size_t bh = 0; bh < heads; ++bh)
    cpu::attention_reference(in.q.data() + bh * q_stride, in.k.data() + bh * kv_stride,
                             in.v.data() + bh * kv_stride, out.data() + bh * q_stride, one);
  return out;
}

fa::Errors fa::errors(const float* got, const double* want, std::size_t n) {
  Errors e;
  double scale = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (std::isnan(d)) {
      e.max_abs = e.max_rel = std::numeric_limits<double>::infinity();
      return e;
    }
    e.max_abs = std::max(e.max_abs, d);
    scale = std::max(scale, std::fabs(want[i]));
  }
  e.max_rel = scale > 0.0 ? e.max_abs / scale : e.max_abs;
  return e;
}

double fa::tolerance(DType dtype, Method method, double score_bound, double value_bound, std::size_t seq_len,
                     std::size_t head_dim) {
  // Every output is a softmax-weighted mean of v rows, |v| <= V = value_bound (1 for the
  // generated inputs; the model's values are larger), so a relative error ε in every probability
  // moves it by at most 2ε·V, and rounding in the sums over N keys (of p·v, of p, and the running
  // rescalings) adds a relative error of each sum, of V.
  //
  // A sum of K fp32 terms is off by at most λ·√K·u·Σ|terms|, u = 2^-24, with probability at least
  // 1 − 2·exp(−λ²/2) (Higham and Mary 2019, Theorem 3.1); λ = 8 makes that 1 − 3e-14, so no correct
  // kernel exceeds it on any number of checked elements, where the worst-case K·u would be √K
  // times looser than anything a kernel produces.
  const double u = 0x1p-24;
  const auto sum_error = [u](std::size_t terms) { return 8.0 * std::sqrt(static_cast<double>(terms)) * u; };
  // Storage unit roundoff of the dtype: f16 has 11 significant bits (u = 2^-11), bf16 8 (2^-8).
  const double ut = dtype == DType::f16 ? 0x1p-11 : dtype == DType::bf16 ? 0x1p-8 : 0.0;
  // A score scale·q·k: a dot of d products (exact for f16/bf16 inputs on tensor cores, one
  // rounding each in fp32), |Σ q_t k_t| <= |q||k|, so off by sum_error(d)·S plus a rounding of the
  // scaling and of the subtraction of the row max (2u·S), S = score_bound. naive and
  // memory_efficient store the scores in the dtype (another ut·S); flash keeps them in fp32.
  const bool stored_scores = method != Method::flash;
  const double score_error = (sum_error(head_dim) + 2.0 * u + (stored_scores ? ut : 0.0)) * score_bound;
  // A probability e^(s − max): that error, exp's (exp_poly 3e-7; CUDA exp2f a few ulp), and a
  // rounding to the dtype before P·v.
  const double probability_error = score_error + 3e-7 + ut;
  // The sums over N keys (p·v, p, and at most one rescaling per key tile), and the output's
  // rounding to the dtype (ut·|out| <= ut·V).
  return (2.0 * probability_error + 3.0 * sum_error(seq_len) + ut) * value_bound;
}

double fa::score_bound(const Shape& s, const Inputs& in) {
  const std::size_t d = s.attention.head_dim, q_rows = s.attention.q_len, k_rows = s.attention.kv_capacity;
  const auto largest_norm = [d](const float* x, std::size_t rows) {
    double m = 0.0;
    for (std::size_t i = 0; i < rows; ++i) {
      double n2 = 0.0;
      for (std::size_t t = 0; t < d; ++t) n2 += static_cast<double>(x[i * d + t]) * x[i * d + t];
      m = std::max(m, n2);
    }
    return std::sqrt(m);
  };
  double q_norm = 0.0, k_norm = 0.0;
  for (std::size_t bh : checked_heads(s)) {
    q_norm = std::max(q_norm, largest_norm(in.q.data() + bh * q_rows * d, q_rows));
    k_norm = std::max(k_norm, largest_norm(in.k.data() + bh * k_rows * d, s.attention.kv_len));
  }
  return static_cast<double>(s.attention.scale) * q_norm * k_norm;
}

double fa::value_bound(const Shape& s, const Inputs& in) {
  const std::size_t kv_stride = s.attention.kv_capacity * s.attention.head_dim;
  double m = 0.0;
  for (std::size_t bh : checked_heads(s)) {
    const float* v = in.v.data() + bh * kv_stride;
    for (std::size_t i = 0; i < s.attention.kv_len * s.attention.head_dim; ++i)
      m = std::max(m, static_cast<double>(std::fabs(v[i])));
  }
  return m;
}

std::vector<std::size_t> fa::checked_heads(const Shape& s) {
  constexpr std::size_t most = 4;
  const std::size_t heads = s.attention.batch * s.attention.heads;
  std::vector<std::size_t> picked;
  if (heads <= most) {
    for (std::size_t bh = 0; bh < heads; ++bh) picked.push_back(bh);
  } else {
    for (std::size_t i = 0; i < most; ++i) picked.push_back(i * (heads - 1) / (most - 1));
  }
  return picked;
}

fa::Errors fa::check_output(const Shape& s, const Inputs& in, const float* output, const std::string& variant) {
  kernels::AttentionShape one = s.attention;
  one.batch = one.heads = 1;
  const std::size_t q_stride = one.q_len * one.head_dim, kv_stride = one.kv_capacity * one.head_dim;
  const std::vector<std::size_t> heads = checked_heads(s);
  memory::Buffer<double> want(Device::cpu(), heads.size() * q_stride);  // (checked heads, N, d)
#pragma omp parallel for schedule(dynamic, 1)
  for (std::size_t i = 0; i < heads.size(); ++i)
    cpu::attention_reference(in.q.data() + heads[i] * q_stride, in.k.data() + heads[i] * kv_stride,
                             in.v.data() + heads[i] * kv_stride, want.data() + i * q_stride, one);
  // The checked heads of the output, side by side as the reference holds them.
  memory::Buffer<float> got(Device::cpu(), heads.size() * q_stride);
  for (std::size_t i = 0; i < heads.size(); ++i)
    std::copy_n(output + heads[i] * q_stride, q_stride, got.data() + i * q_stride);
  Errors e = errors(got.data(), want.data(), got.size());
  e.tolerance =
      tolerance(s.dtype, parse_method(variant), score_bound(s, in), value_bound(s, in), one.kv_len, one.head_dim);
  if (!(e.max_abs <= e.tolerance)) {
    const auto& a = s.attention;
    std::ostringstream m;
    m << "flash_attention: variant " << variant << " (B " << a.batch << ", H " << a.heads << ", N " << a.q_len
      << ", d " << a.head_dim << (a.causal ? ", causal" : "") << ", " << to_string(s.dtype)
      << ", " << s.describe_inputs() << "): max abs error " << e.max_abs
      << " vs the float64 reference exceeds the tolerance " << e.tolerance;
    throw CheckFailed(m.str());
  }
  return e;
}

std::vector<std::size_t> fa::fit_lengths(std::size_t n) { return {n / 4, n / 2, n}; }

double fa::fitted_exponent(const std::vector<std::size_t>& n, const std::vector<std::size_t>& bytes) {
  if (std::all_of(bytes.begin(), bytes.end(), [](std::size_t b) { return b == 0; })) return 0.0;
  if (std::any_of(bytes.begin(), bytes.end(), [](std::size_t b) { return b == 0; }))
    return std::numeric_limits<double>::quiet_NaN();
  // Ordinary least squares of y = log(bytes) on x = log(n).
  const double m = static_cast<double>(n.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (std::size_t i = 0; i < n.size(); ++i) {
    const double x = std::log(static_cast<double>(n[i])), y = std::log(static_cast<double>(bytes[i]));
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  return (m * sxy - sx * sy) / (m * sxx - sx * sx);
}

std::vector<Metric> fa::metrics(const Errors& e, std::size_t workspace_bytes, double workspace_exponent) {
  return {
      {"workspace_bytes", static_cast<double>(workspace_bytes), "B", Better::lower},
      {"workspace_exponent", workspace_exponent, "", Better::lower, false},  // a power, not a quantity: no % change
      {"max_abs_error", e.max_abs, "", Better::lower},
      {"max_rel_error", e.max_rel, "", Better::lower},
      {"error_tolerance", e.tolerance, "", Better::lower, false},  // the bound the check held max_abs_error to
  };
}

// ---- the CPU run

namespace {

// A broken copy of the CPU flash kernel for the fault "flash_attention.skip_rescale": the online
// softmax keeps each key tile's exponentials relative to the running max, but does not rescale
// what was summed before when the max rises, so earlier tiles are overweighted by e^(rise).
// Scalar, one query row at a time.
void flash_without_rescale(const fa::Inputs& in, float* out, const kernels::AttentionShape& a,
                           std::size_t kv_tile) {
  const std::size_t d = a.head_dim;
  std::vector<float> p(kv_tile), acc(d);
  for (std::size_t bh = 0; bh < a.batch * a.heads; ++bh)
    for (std::size_t i = 0; i < a.q_len; ++i) {
      const float* qi = in.q.data() + (bh * a.q_len + i) * d;
      const float* k = in.k.data() + bh * a.kv_capacity * d;
      const float* v = in.v.data() + bh * a.kv_capacity * d;
      const std::size_t keys = a.visible_keys(i);
      float running_max = -std::numeric_limits<float>::infinity(), sum = 0.0f;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (std::size_t j0 = 0; j0 < keys; j0 += kv_tile) {
        const std::size_t cols = std::min(kv_tile, keys - j0);
        for (std::size_t j = 0; j < cols; ++j) {
          float dot = 0.0f;
          for (std::size_t t = 0; t < d; ++t) dot += qi[t] * k[(j0 + j) * d + t];
          p[j] = a.scale * dot;
          running_max = std::max(running_max, p[j]);
        }
        for (std::size_t j = 0; j < cols; ++j) {
          p[j] = std::exp(p[j] - running_max);
          sum += p[j];  // the fault: sum and acc are not multiplied by e^(old max − new max)
          for (std::size_t t = 0; t < d; ++t) acc[t] += p[j] * v[(j0 + j) * d + t];
        }
      }
      for (std::size_t t = 0; t < d; ++t) out[(bh * a.q_len + i) * d + t] = acc[t] / sum;
    }
}

class CpuRun : public Run {
 public:
  CpuRun(const fa::Shape& shape, fa::Method method)
      : shape_(shape),
        method_(method),
        in_(fa::make_inputs(shape)),
        out_(Device::cpu(), shape.q_elements()),
        skip_rescale_(method == fa::Method::flash && fault::active("flash_attention.skip_rescale")),
        ignore_scores_(fault::active("flash_attention.ignore_scores")) {
    if (method_ == fa::Method::naive)
      scores_ = memory::Buffer<float>(Device::cpu(), cpu::naive_workspace_elements(shape.attention));
  }

  void step() override {
    // Broken variants for the fault-injection tests (core/fault.hpp): the online softmax without
    // its rescaling, or the mean of v in place of attention (a kernel that ignored q·k).
    if (skip_rescale_) return flash_without_rescale(in_, out_.data(), shape_.attention, shape_.tiles.kv_tile);
    if (ignore_scores_) return cpu::attention_uniform(in_.v.data(), out_.data(), shape_.attention);
    compute(shape_, in_, out_.data(), scores_.data());
  }

  Work work() const override { return {.bytes = std::nullopt, .flops = shape_.attention.flops()}; }

  std::vector<Metric> finish() override {
    const fa::Errors e = fa::check_output(shape_, in_, out_.data(), fa::to_string(method_));
    // The workspace of one call at N/4, N/2 and N; inputs and output are allocated outside the
    // scope, so its peak is the variant's own memory (naive: the scores buffer it needs).
    std::vector<std::size_t> lengths = fa::fit_lengths(shape_.attention.q_len), bytes;
    for (std::size_t n : lengths) {
      const fa::Shape s = shape_.at_length(n);
      const fa::Inputs in = n == shape_.attention.q_len ? fa::Inputs{} : fa::make_inputs(s);
      const fa::Inputs& use = n == shape_.attention.q_len ? in_ : in;
      memory::Buffer<float> out(Device::cpu(), s.q_elements());
      memory::Scope scope(Device::cpu());
      {
        memory::Buffer<float> scores;
        if (method_ == fa::Method::naive)
          scores = memory::Buffer<float>(Device::cpu(), cpu::naive_workspace_elements(s.attention));
        compute(s, use, out.data(), scores.data());
      }
      bytes.push_back(scope.peak_bytes());
    }
    return fa::metrics(e, bytes.back(), fa::fitted_exponent(lengths, bytes));
  }

 private:
  void compute(const fa::Shape& s, const fa::Inputs& in, float* out, float* scores) const {
    switch (method_) {
      case fa::Method::naive:
        cpu::attention_naive(in.q.data(), in.k.data(), in.v.data(), out, scores, s.attention);
        break;
      case fa::Method::flash:
        cpu::attention_flash(in.q.data(), in.k.data(), in.v.data(), out, s.attention, s.tiles);
        break;
      case fa::Method::memory_efficient:
        cpu::attention_memory_efficient(in.q.data(), in.k.data(), in.v.data(), out, s.attention, s.chunk);
        break;
    }
  }

  fa::Shape shape_;
  fa::Method method_;
  fa::Inputs in_;               // (B, H, N, d) each
  memory::Buffer<float> out_;   // (B, H, N, d)
  memory::Buffer<float> scores_;  // naive: (B, H, N, N)
  bool skip_rescale_ = false, ignore_scores_ = false;  // faults
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind device) {
  const fa::Shape shape = fa::Shape::from(c);
  const kernels::AttentionShape& a = shape.attention;
  attention_inputs::check_shape("flash_attention", c.params, a.batch, a.heads, a.q_len, a.head_dim);
  if (device == DeviceKind::cpu && shape.dtype != DType::f32)
    throw NotApplicable("flash_attention: dtype=" + to_string(shape.dtype) +
                        " runs on cuda only (tensor cores); the cpu kernels are fp32");
  if (device == DeviceKind::cuda && shape.dtype != DType::f32 && fa::parse_method(c.variant) == fa::Method::flash &&
      a.head_dim != 64 && a.head_dim != 128)
    throw NotApplicable("flash_attention: variant flash with dtype=" + to_string(shape.dtype) +
                        " is the tensor-core kernel, built for head_dim 64 and 128, not " +
                        std::to_string(a.head_dim) + "; allowed: dtype=f32 at this width");
}

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  const fa::Shape shape = fa::Shape::from(c);
  const fa::Method method = fa::parse_method(c.variant);
  if (device.is_cpu()) return std::make_unique<CpuRun>(shape, method);
#ifdef AIOPT_HAVE_CUDA
  return fa::prepare_cuda(shape, method, device);
#else
  throw DeviceUnavailable("aiopt was built without CUDA");
#endif
}

std::unique_ptr<Technique> make_flash_attention() {
  return make_technique(
      {"flash_attention", "recomputation and tiling complexity vs N² memory", summary, params, variants, check, start});
}

}  // namespace aiopt
