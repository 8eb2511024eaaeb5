#include "techniques/flash_attention/flash_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "core/spelling.hpp"

namespace aiopt {

namespace fa = flash_attention;
namespace cpu = kernels::cpu;

// ---- parameters and variants

std::string FlashAttention::summary() const {
  return "exact attention: N×N scores materialized (naive) vs tiled online softmax (flash) vs query chunks";
}

std::vector<ParamSpec> FlashAttention::params() const {
  ParamSpec causal;
  causal.name = "causal";
  causal.type = ParamType::boolean;
  causal.default_value = false;
  causal.help = "mask keys after the query (decoder self-attention): about half the work";

  return {
      integer_param("batch", 1, std::nullopt, 1, 4096, "", "B"),
      integer_param("heads", 8, 4, 1, 4096, "", "H, attention heads"),
      integer_param("seq_len", 2048, 256, 4, 1 << 20, "tokens", "N: queries and keys per head"),
      choice_param("head_dim", "64", std::nullopt, {"64", "128"}, "elements",
                   "d, the width of one head (the CUDA tensor-core kernel is built for 64 and 128)"),
      causal,
      choice_param("dtype", "f32", std::nullopt, {"f32", "f16", "bf16"}, "",
                   "how q, k, v and the output are stored; f16/bf16 (CUDA only) accumulate in fp32 on tensor "
                   "cores"),
      integer_param("q_tile", 128, std::nullopt, 1, 4096, "rows", "CPU flash: queries per tile"),
      integer_param("kv_tile", 256, std::nullopt, 1, 4096, "rows", "CPU flash: keys per tile"),
      integer_param("chunk", 128, std::nullopt, 1, 1 << 20, "rows", "memory_efficient: queries per chunk"),
  };
}

std::vector<Variant> FlashAttention::variants() const {
  return {
      {"naive", "S = q·kᵀ by batched GEMM into a (B, H, N, N) buffer, masked softmax, S·v by batched GEMM",
       true, {DeviceKind::cpu, DeviceKind::cuda}},
      {"flash", "tiles of q against tiles of k, v with the online softmax; no N×N storage (CUDA: tensor cores "
                "for f16/bf16)", false, {DeviceKind::cpu, DeviceKind::cuda}},
      {"memory_efficient", "chunk queries at a time, each with its full softmax row over the keys", false,
       {DeviceKind::cpu, DeviceKind::cuda}},
  };
}

// ---- the case

fa::Method fa::parse_method(const std::string& variant) {
  if (variant == "flash") return Method::flash;
  if (variant == "memory_efficient") return Method::memory_efficient;
  return Method::naive;
}

std::size_t fa::Shape::q_elements() const {
  return attention.batch * attention.heads * attention.q_len * attention.head_dim;
}

fa::Shape fa::Shape::at_length(std::size_t n) const {
  Shape s = *this;
  s.attention = kernels::AttentionShape::self(attention.batch, attention.heads, n, attention.head_dim,
                                              attention.causal);
  return s;
}

namespace {

std::string bad_value(const std::string& key, const std::string& value, const std::string& allowed) {
  return "flash_attention: parameter '" + key + "' = " + value + " is not allowed; allowed: " + allowed;
}

std::size_t positive(const Case& c, const std::string& key, std::int64_t max) {
  const std::int64_t v = c.params.integer(key);
  if (v < 1 || v > max)
    throw InputError(bad_value(key, std::to_string(v), "an integer from 1 to " + std::to_string(max)));
  return static_cast<std::size_t>(v);
}

}  // namespace

fa::Shape fa::Shape::from(const Case& c) {
  Shape s;
  const std::string& dtype = c.params.string("dtype");
  const std::vector<std::string> dtypes = {"f32", "f16", "bf16"};
  if (std::find(dtypes.begin(), dtypes.end(), dtype) == dtypes.end())
    throw InputError(bad_value("dtype", "'" + dtype + "'", join_names(dtypes)) + did_you_mean(dtype, dtypes));
  s.dtype = parse_dtype(dtype);
  const std::string& head_dim = c.params.string("head_dim");
  if (head_dim != "64" && head_dim != "128") throw InputError(bad_value("head_dim", head_dim, "64, 128"));
  const std::size_t n = positive(c, "seq_len", 1 << 20);
  if (n < 4) throw InputError(bad_value("seq_len", std::to_string(n), "an integer >= 4 (the fit runs N/4)"));
  s.attention = kernels::AttentionShape::self(positive(c, "batch", 4096), positive(c, "heads", 4096), n,
                                              std::stoul(head_dim), c.params.boolean("causal"));
  s.tiles = {positive(c, "q_tile", 4096), positive(c, "kv_tile", 4096)};
  s.chunk = positive(c, "chunk", 1 << 20);
  s.input_seed = rng::bits(c.seed, 1);
  return s;
}

// ---- inputs, reference, checks

fa::Inputs fa::make_inputs(const Shape& s) {
  const std::size_t n = s.q_elements();
  Inputs in{memory::Buffer<float>(Device::cpu(), n), memory::Buffer<float>(Device::cpu(), n),
            memory::Buffer<float>(Device::cpu(), n)};
  std::uint64_t stream = 0;
  for (memory::Buffer<float>* t : {&in.q, &in.k, &in.v}) {
    const std::uint64_t seed = rng::bits(s.input_seed, stream++);
    float* p = t->data();
    const DType dtype = s.dtype;
#pragma omp parallel for schedule(static)
    for (std::size_t i = 0; i < n; ++i) {
      const float x = -1.0f + 2.0f * rng::uniform(seed, i);
      p[i] = dtype == DType::f16    ? f16_to_float(float_to_f16(x))
             : dtype == DType::bf16 ? bf16_to_float(float_to_bf16(x))
                                    : x;
    }
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

double fa::tolerance(DType dtype) {
  // Inputs are uniform in [-1, 1], so every output is a convex combination of v rows: |out| <= 1,
  // and with scale 1/√d the scores stay within a few units.
  switch (dtype) {
    case DType::f16:
      // Scores (naive: stored as f16, relative 2^-11 at |s| <= 3) move a probability by ~1.5e-3
      // relative; P is rounded to f16 before P·v (2^-11 relative) and the output once more
      // (2^-12 at |out| <= 1): at most ~2.5e-3 when all errors align, 4e-3 with a margin.
      return 4e-3;
    case DType::bf16:
      // The same roundings with bf16's 2^-8 (half an ulp 2^-9): ~1.2e-2 aligned, 3e-2 with a margin.
      return 3e-2;
    default:
      // fp32: a score is a dot of d <= 128 products (~d·2^-24 relative), exp_poly is within 3e-7
      // relative and the sums over N keys add a few 1e-7: ~1e-5 in the worst alignment.
      return 2e-5;
  }
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
  const Errors e = errors(got.data(), want.data(), got.size());
  if (!(e.max_abs <= tolerance(s.dtype))) {
    const auto& a = s.attention;
    std::ostringstream m;
    m << "flash_attention: variant " << variant << " (B " << a.batch << ", H " << a.heads << ", N " << a.q_len
      << ", d " << a.head_dim << (a.causal ? ", causal" : "") << ", " << to_string(s.dtype)
      << "): max abs error " << e.max_abs << " vs the float64 reference exceeds the tolerance "
      << tolerance(s.dtype);
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
  };
}

// ---- the CPU run

namespace {

class CpuRun : public Run {
 public:
  CpuRun(const fa::Shape& shape, fa::Method method)
      : shape_(shape), method_(method), in_(fa::make_inputs(shape)), out_(Device::cpu(), shape.q_elements()) {
    if (method_ == fa::Method::naive)
      scores_ = memory::Buffer<float>(Device::cpu(), cpu::naive_workspace_elements(shape.attention));
  }

  void step() override { compute(shape_, in_, out_.data(), scores_.data()); }

  Work work() const override { return {.bytes = std::nullopt, .flops = shape_.attention.flops()}; }

  std::vector<Metric> finish() override {
    const fa::Errors e = fa::check_output(shape_, in_, out_.data(), variant_name());
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
  std::string variant_name() const {
    return method_ == fa::Method::naive ? "naive" : method_ == fa::Method::flash ? "flash" : "memory_efficient";
  }

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
};

}  // namespace

// ---- prepare

void FlashAttention::validate(const Case& c, DeviceKind device) const {
  const fa::Shape shape = fa::Shape::from(c);
  if (device == DeviceKind::cpu && shape.dtype != DType::f32)
    throw NotApplicable("flash_attention: dtype=" + to_string(shape.dtype) +
                        " runs on cuda only (tensor cores); the cpu kernels are fp32");
}

std::unique_ptr<Run> FlashAttention::prepare(const Case& c, const Device& device) const {
  const auto variant = find_variant(c.variant);
  if (!variant) {
    std::vector<std::string> names;
    for (const auto& v : variants()) names.push_back(v.name);
    throw InputError("flash_attention: unknown variant '" + c.variant + "'; allowed: " + join_names(names) +
                     did_you_mean(c.variant, names));
  }
  if (!variant->runs_on(device.kind)) {
    std::vector<std::string> kinds;
    for (DeviceKind k : variant->devices) kinds.push_back(aiopt::to_string(k));
    throw InputError("flash_attention: variant '" + c.variant + "' does not run on " +
                     aiopt::to_string(device.kind) + "; it runs on: " + join_names(kinds));
  }
  validate(c, device.kind);
  const fa::Shape shape = fa::Shape::from(c);
  const fa::Method method = fa::parse_method(c.variant);
  if (device.is_cpu()) return std::make_unique<CpuRun>(shape, method);
  cuda::require_device(device.index);
#ifdef AIOPT_HAVE_CUDA
  return fa::prepare_cuda(shape, method, device);
#else
  throw DeviceUnavailable("aiopt was built without CUDA");
#endif
}

}  // namespace aiopt
