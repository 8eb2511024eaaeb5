#include "techniques/linear_attention/linear_attention.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numbers>
#include <sstream>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/rng.hpp"
#include "core/spelling.hpp"
#include "kernels/cpu/attention.hpp"

namespace aiopt {

namespace la = linear_attention;
namespace cpu = kernels::cpu;

// ---- parameters and variants

std::string LinearAttention::summary() const {
  return "exact softmax attention (O(N²)) vs kernelized attention in O(N): elu+1, Performer's FAVOR+, Linformer";
}

std::vector<ParamSpec> LinearAttention::params() const {
  ParamSpec causal;
  causal.name = "causal";
  causal.type = ParamType::boolean;
  causal.default_value = false;
  causal.help = "decoder attention: query i sees keys j <= i (linear forms by prefix sums; linformer does not "
                "support it)";
  return {
      integer_param("batch", 1, std::nullopt, 1, 256, "sequences", "sequences per call"),
      integer_param("heads", 4, 2, 1, 256, "heads", "attention heads"),
      integer_param("seq_len", 4096, 256, 1, 1 << 20, "tokens", "sequence length N (queries = keys)"),
      integer_param("head_dim", 64, std::nullopt, 1, 1024, "elements", "d, the width of q, k and v"),
      causal,
      integer_param("features", 256, 64, 1, 16384, "features", "performer: m, the number of random features"),
      integer_param("proj_rows", 256, 64, 1, 1 << 20, "rows",
                    "linformer: k, the rows K and V are projected to along the sequence (k <= seq_len)"),
      integer_param("projection_seed", 1, std::nullopt, 0, 1e15, "",
                    "seed of the random projections (performer's W, linformer's E and F); inputs follow --seed"),
  };
}

std::vector<Variant> LinearAttention::variants() const {
  const std::vector<DeviceKind> both = {DeviceKind::cpu, DeviceKind::cuda};
  return {
      {"softmax", "exact attention, the N×N scores materialized (O(N²) time and memory)", true, both},
      {"linear_elu", "φ(x) = elu(x)+1, out = φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1) (Katharopoulos et al. 2020)", false, both},
      {"performer", "FAVOR+: m positive orthogonal random features estimating the softmax kernel (Choromanski et al. "
                    "2021)", false, both},
      {"linformer", "softmax over K and V projected along the sequence to k rows (Wang et al. 2020); non-causal",
       false, both},
  };
}

// ---- the case

std::string la::to_string(Kind kind) {
  switch (kind) {
    case Kind::softmax: return "softmax";
    case Kind::linear_elu: return "linear_elu";
    case Kind::performer: return "performer";
    case Kind::linformer: return "linformer";
  }
  return "?";
}

std::size_t la::Shape::feature_dim() const {
  switch (kind) {
    case Kind::linear_elu: return head_dim;
    case Kind::performer: return features;
    default: return 0;
  }
}

kernels::AttentionShape la::Shape::attention() const {
  return kernels::AttentionShape::self(batch, heads, seq_len, head_dim, causal);
}

cpu::LinearAttentionShape la::Shape::linear() const {
  cpu::LinearAttentionShape s;
  s.batch = batch;
  s.heads = heads;
  s.seq_len = seq_len;
  s.head_dim = head_dim;
  s.features = feature_dim();
  s.causal = causal;
  return s;
}

la::Shape la::Shape::at(std::size_t n) const {
  Shape s = *this;
  s.seq_len = n;
  return s;
}

namespace {

std::string bad_value(const std::string& key, std::int64_t value, const std::string& allowed) {
  return "linear_attention: parameter '" + key + "' = " + std::to_string(value) + " is not allowed; allowed: " + allowed;
}

std::size_t positive(const Case& c, const std::string& key, std::int64_t max) {
  const std::int64_t v = c.params.integer(key);
  if (v < 1 || v > max) throw InputError(bad_value(key, v, "an integer from 1 to " + std::to_string(max)));
  return static_cast<std::size_t>(v);
}

}  // namespace

la::Shape la::Shape::from(const Case& c) {
  Shape s;
  const std::vector<std::string> kinds = {"softmax", "linear_elu", "performer", "linformer"};
  if (c.variant == "softmax") {
    s.kind = Kind::softmax;
  } else if (c.variant == "linear_elu") {
    s.kind = Kind::linear_elu;
  } else if (c.variant == "performer") {
    s.kind = Kind::performer;
  } else if (c.variant == "linformer") {
    s.kind = Kind::linformer;
  } else {
    throw InputError("linear_attention: unknown variant '" + c.variant + "'; allowed: " + join_names(kinds) +
                     did_you_mean(c.variant, kinds));
  }
  s.batch = positive(c, "batch", 256);
  s.heads = positive(c, "heads", 256);
  s.seq_len = positive(c, "seq_len", 1 << 20);
  s.head_dim = positive(c, "head_dim", 1024);
  s.features = positive(c, "features", 16384);
  s.proj_rows = positive(c, "proj_rows", 1 << 20);
  s.causal = c.params.boolean("causal");
  const std::int64_t seed = c.params.integer("projection_seed");
  if (seed < 0) throw InputError(bad_value("projection_seed", seed, "an integer >= 0"));
  if (s.kind == Kind::linformer && s.causal)
    throw NotApplicable("linear_attention: variant linformer does not support causal = true: its projection E·K mixes "
                     "every position, later ones included, into each projected key, so no causal mask applies "
                     "(Wang et al. 2020 is an encoder method); allowed: causal = false for linformer, or "
                     "--variant softmax,linear_elu,performer with causal = true");
  if (s.kind == Kind::linformer && s.proj_rows > s.seq_len)
    throw InputError(bad_value("proj_rows", static_cast<std::int64_t>(s.proj_rows),
                               "proj_rows <= seq_len = " + std::to_string(s.seq_len) +
                                   " (linformer projects the sequence down to proj_rows rows)"));
  s.projection_seed = static_cast<std::uint64_t>(seed);
  s.input_seed = rng::bits(c.seed, 3);
  return s;
}

// ---- inputs, projections, reference, errors

namespace {

// Standard normal entries (Box–Muller), counter i of `seed`.
void fill_gaussian(float* x, std::size_t n, std::uint64_t seed, double stddev) {
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    const double u1 = 1.0 - static_cast<double>(rng::uniform(seed, 2 * i));
    const double u2 = rng::uniform(seed, 2 * i + 1);
    x[i] = static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2));
  }
}

}  // namespace

la::Inputs la::make_inputs(const Shape& s) {
  Inputs in;
  const Device host = Device::cpu();
  in.q = memory::Buffer<float>(host, s.elements());
  in.k = memory::Buffer<float>(host, s.elements());
  in.v = memory::Buffer<float>(host, s.elements());
  // Unit-variance q and k give logits q·k/sqrt(d) of unit variance: attention neither uniform
  // nor one-hot, the regime in which the approximations are compared.
  fill_gaussian(in.q.data(), s.elements(), rng::bits(s.input_seed, 0), 1.0);
  fill_gaussian(in.k.data(), s.elements(), rng::bits(s.input_seed, 1), 1.0);
  fill_gaussian(in.v.data(), s.elements(), rng::bits(s.input_seed, 2), 1.0);
  return in;
}

memory::Buffer<float> la::performer_projection(const Shape& s) {
  memory::Buffer<float> w(Device::cpu(), s.features * s.head_dim);
  cpu::orthogonal_gaussian_projection(w.data(), s.features, s.head_dim, rng::bits(s.projection_seed, 0));
  return w;
}

memory::Buffer<float> la::linformer_projection(const Shape& s, int which) {
  memory::Buffer<float> p(Device::cpu(), s.proj_rows * s.seq_len);
  fill_gaussian(p.data(), p.size(), rng::bits(s.projection_seed, 1 + static_cast<std::uint64_t>(which)),
                1.0 / std::sqrt(static_cast<double>(s.proj_rows)));
  return p;
}

la::Errors la::compare(const float* got, const float* want, std::size_t n) {
  double worst = 0.0, diff = 0.0, ref = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(got[i])) {
      const double inf = std::numeric_limits<double>::infinity();
      return {inf, inf};
    }
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    worst = std::max(worst, e);
    diff += e;
    ref += std::fabs(static_cast<double>(want[i]));
  }
  return {worst, ref > 0 ? diff / ref : diff};
}

memory::Buffer<float> la::softmax_output(const Shape& s, const Inputs& in) {
  memory::Buffer<float> out(Device::cpu(), s.elements());
  cpu::attention_memory_efficient(in.q.data(), in.k.data(), in.v.data(), out.data(), s.attention());
  return out;
}

la::Errors la::check(const Shape& s, const float* out, const Inputs& in) {
  if (s.kind != Kind::softmax) {
    const memory::Buffer<float> want = softmax_output(s, in);
    const Errors e = compare(out, want.data(), s.elements());
    if (!std::isfinite(e.max_abs))
      throw CheckFailed("linear_attention: variant " + to_string(s.kind) + " produced a NaN or inf output");
    return e;
  }
  const std::size_t N = s.seq_len, d = s.head_dim, rows = std::min<std::size_t>(N, 32);
  std::vector<float> got, want;
  std::vector<double> ref(rows * d);
  for (std::size_t g = 0; g < s.groups(); ++g)
    for (std::size_t i0 : {std::size_t{0}, N - rows}) {
      kernels::AttentionShape a = kernels::AttentionShape::self(1, 1, N, d, s.causal);
      a.q_len = rows;
      a.q_offset = i0;
      const std::size_t base = g * N * d;
      cpu::attention_reference(in.q.data() + base + i0 * d, in.k.data() + base, in.v.data() + base, ref.data(), a);
      for (std::size_t t = 0; t < rows * d; ++t) {
        got.push_back(out[base + i0 * d + t]);
        want.push_back(static_cast<float>(ref[t]));
      }
    }
  const Errors e = compare(got.data(), want.data(), got.size());
  if (!(e.max_abs <= softmax_tolerance)) {
    std::ostringstream m;
    m << "linear_attention: softmax max abs error " << e.max_abs << " against the float64 reference exceeds "
      << softmax_tolerance;
    throw CheckFailed(m.str());
  }
  return e;
}

double la::loglog_slope(const std::vector<double>& x, const std::vector<double>& y) {
  const std::size_t n = x.size();
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < n; ++i) {
    mx += std::log(x[i]);
    my += std::log(y[i]);
  }
  mx /= static_cast<double>(n);
  my /= static_cast<double>(n);
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sxy += (std::log(x[i]) - mx) * (std::log(y[i]) - my);
    sxx += (std::log(x[i]) - mx) * (std::log(x[i]) - mx);
  }
  return sxx > 0 ? sxy / sxx : std::numeric_limits<double>::quiet_NaN();
}

// ---- the CPU forward

namespace {

class CpuForward : public la::Forward {
 public:
  explicit CpuForward(const la::Shape& s) : s_(s), in_(la::make_inputs(s)), out_(Device::cpu(), s.elements()) {
    if (s.kind == la::Kind::performer) w_ = la::performer_projection(s);
    if (s.kind == la::Kind::linformer) {
      e_ = la::linformer_projection(s, 0);
      f_ = la::linformer_projection(s, 1);
    }
    memory::Scope scope(Device::cpu());
    const std::size_t features = s.groups() * s.seq_len * s.feature_dim();
    if (features) {
      phi_q_ = memory::Buffer<float>(Device::cpu(), features);
      phi_k_ = memory::Buffer<float>(Device::cpu(), features);
    }
    std::size_t workspace = 0;
    switch (s.kind) {
      case la::Kind::softmax: workspace = cpu::naive_workspace_elements(s.attention()); break;
      case la::Kind::linear_elu:
      case la::Kind::performer: workspace = cpu::linear_attention_workspace_elements(s.linear()); break;
      case la::Kind::linformer: workspace = cpu::linformer_workspace_elements(s.attention(), s.proj_rows); break;
    }
    workspace_ = memory::Buffer<float>(Device::cpu(), workspace);
    run();
    workspace_bytes_ = scope.peak_bytes();
  }

  void run() override {
    const float *q = in_.q.data(), *k = in_.k.data(), *v = in_.v.data();
    float* out = out_.data();
    switch (s_.kind) {
      case la::Kind::softmax:
        cpu::attention_naive(q, k, v, out, workspace_.data(), s_.attention());
        break;
      case la::Kind::linear_elu:
        cpu::elu_feature_map(q, phi_q_.data(), phi_q_.size());
        cpu::elu_feature_map(k, phi_k_.data(), phi_k_.size());
        cpu::linear_attention(phi_q_.data(), phi_k_.data(), v, out, workspace_.data(), s_.linear());
        break;
      case la::Kind::performer:
        cpu::favor_feature_map(q, w_.data(), phi_q_.data(), s_.groups(), s_.seq_len, s_.head_dim, s_.features,
                               cpu::FavorRole::query);
        cpu::favor_feature_map(k, w_.data(), phi_k_.data(), s_.groups(), s_.seq_len, s_.head_dim, s_.features,
                               cpu::FavorRole::key);
        cpu::linear_attention(phi_q_.data(), phi_k_.data(), v, out, workspace_.data(), s_.linear());
        break;
      case la::Kind::linformer:
        cpu::linformer_attention(q, k, v, e_.data(), f_.data(), out, workspace_.data(), s_.attention(), s_.proj_rows);
        break;
    }
  }

  memory::Buffer<float> output() override {
    memory::Buffer<float> copy(Device::cpu(), out_.size());
    std::copy(out_.begin(), out_.end(), copy.begin());
    return copy;
  }

 private:
  la::Shape s_;
  la::Inputs in_;
  memory::Buffer<float> out_;                // (B, H, N, d)
  memory::Buffer<float> w_;                  // performer: (m, d)
  memory::Buffer<float> e_, f_;              // linformer: (k, N) each
  memory::Buffer<float> phi_q_, phi_k_;      // (B, H, N, F)
  memory::Buffer<float> workspace_;
};

}  // namespace

std::unique_ptr<la::Forward> la::make_cpu_forward(const Shape& shape) { return std::make_unique<CpuForward>(shape); }

// ---- the run: the measured forward, then the checks and the fits over N

std::unique_ptr<la::Forward> la::make_forward(const Shape& s, const Device& device) {
  if (device.is_cpu()) return la::make_cpu_forward(s);
#ifdef AIOPT_HAVE_CUDA
  return la::make_cuda_forward(s, device);
#else
  throw DeviceUnavailable("aiopt was built without CUDA");
#endif
}

namespace {

// Median seconds of `reps` forwards (the constructor's call was the warm-up).
double median_seconds(la::Forward& f, int reps) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    f.synchronize();
    const auto start = std::chrono::steady_clock::now();
    f.run();
    f.synchronize();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

constexpr int fit_reps = 3;
// The crossover search stops past this much time, and before a softmax whose N×N scores would
// exceed this many bytes: finish() stays within seconds.
constexpr double crossover_budget_s = 4.0;
constexpr double crossover_max_scores_bytes = 1024.0 * 1024 * 1024;
constexpr std::size_t crossover_first_len = 128;

// Multiply-adds counted as 2 FLOPs (README "Work").
double flops(const la::Shape& s) {
  const double G = static_cast<double>(s.groups()), N = static_cast<double>(s.seq_len),
               d = static_cast<double>(s.head_dim), F = static_cast<double>(s.feature_dim());
  switch (s.kind) {
    case la::Kind::softmax: return s.attention().flops();
    case la::Kind::linear_elu:
    case la::Kind::performer: {
      // φ(K)ᵀV and φ(Q)·KV (2·N·F·d each), the normalizer (2·N·F); causal adds the chunks' blocks
      // φ(Q_c)φ(K_c)ᵀ and A_c V_c (2·N·C·(F + d)).
      double f = 4.0 * N * F * d + 2.0 * N * F;
      if (s.causal) f += 2.0 * N * static_cast<double>(s.linear().chunk) * (F + d);
      if (s.kind == la::Kind::performer) f += 2.0 * 2.0 * N * d * F;  // the projections of q and k
      return G * f;
    }
    case la::Kind::linformer: {
      const double k = static_cast<double>(s.proj_rows);
      return G * (2.0 * 2.0 * k * N * d + 2.0 * N * k * d + 2.0 * N * k * d);  // E·K, F·V, Q·K'ᵀ, P·V'
    }
  }
  return 0.0;
}

class LinearAttentionRun : public Run {
 public:
  LinearAttentionRun(const la::Shape& s, const Device& device)
      : s_(s), device_(device), forward_(la::make_forward(s, device)) {}

  void step() override { forward_->run(); }
  void* stream() override { return forward_->stream(); }
  Work work() const override { return {.bytes = std::nullopt, .flops = flops(s_)}; }

  std::vector<Metric> finish() override {
    forward_->synchronize();
    const memory::Buffer<float> out = forward_->output();
    const la::Inputs in = la::make_inputs(s_);
    const la::Errors errors = la::check(s_, out.data(), in);
    std::vector<Metric> metrics = {
        {"workspace_bytes", static_cast<double>(forward_->workspace_bytes()), "B", Better::lower},
        {"max_abs_error", errors.max_abs, "", Better::lower},
        {"mean_rel_error", errors.mean_rel, "", Better::lower},
    };
    fit_exponents(metrics);
    if (s_.kind != la::Kind::softmax) find_crossover(metrics);
    return metrics;
  }

 private:
  // Time and workspace at N/4, N/2 and N (linformer: only lengths >= k), slopes in log-log.
  void fit_exponents(std::vector<Metric>& metrics) const {
    std::vector<double> lens, seconds, bytes;
    for (std::size_t n : {s_.seq_len / 4, s_.seq_len / 2, s_.seq_len}) {
      if (n < 2 || (s_.kind == la::Kind::linformer && n < s_.proj_rows)) continue;
      if (!lens.empty() && static_cast<double>(n) == lens.back()) continue;
      auto f = la::make_forward(s_.at(n), device_);
      lens.push_back(static_cast<double>(n));
      seconds.push_back(median_seconds(*f, fit_reps));
      bytes.push_back(static_cast<double>(f->workspace_bytes()));
    }
    if (lens.size() < 2) return;  // too short to fit (README "Exponents")
    // Powers, not quantities: a % change between them means nothing, so they are reported but
    // not compared with the baseline's.
    metrics.push_back({"time_exponent", la::loglog_slope(lens, seconds), "", Better::lower, false, /*from_time=*/true});
    metrics.push_back({"memory_exponent", la::loglog_slope(lens, bytes), "", Better::lower, false});
  }

  // The smallest N of the ladder 128, 256, ... (up to 4·seq_len) at which this variant is faster
  // than softmax with the same other parameters; 0 when none is within the searched range.
  void find_crossover(std::vector<Metric>& metrics) const {
    const auto start = std::chrono::steady_clock::now();
    std::size_t found = 0, searched = 0;
    for (std::size_t n = crossover_first_len; n <= 4 * s_.seq_len; n *= 2) {
      if (s_.kind == la::Kind::linformer && n < s_.proj_rows) continue;
      const double scores = static_cast<double>(s_.groups()) * static_cast<double>(n) * static_cast<double>(n) * 4.0;
      if (scores > crossover_max_scores_bytes) break;
      la::Shape base = s_.at(n);
      base.kind = la::Kind::softmax;
      auto softmax = la::make_forward(base, device_);
      const double t_softmax = median_seconds(*softmax, fit_reps);
      softmax.reset();
      auto variant = la::make_forward(s_.at(n), device_);
      const double t_variant = median_seconds(*variant, fit_reps);
      searched = n;
      if (t_variant < t_softmax) {
        found = n;
        break;
      }
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > crossover_budget_s) break;
    }
    metrics.push_back(time_metric("crossover_seq_len", static_cast<double>(found), "tokens", Better::lower));
    metrics.push_back(
        {"crossover_searched_up_to", static_cast<double>(searched), "tokens", Better::higher, false, /*from_time=*/true});
  }

  la::Shape s_;
  Device device_;
  std::unique_ptr<la::Forward> forward_;
};

}  // namespace

// ---- prepare

void LinearAttention::validate(const Case& c, DeviceKind) const { (void)la::Shape::from(c); }

std::unique_ptr<Run> LinearAttention::prepare(const Case& c, const Device& device) const {
  const auto variant = find_variant(c.variant);
  if (!variant) {
    std::vector<std::string> names;
    for (const auto& v : variants()) names.push_back(v.name);
    throw InputError("linear_attention: unknown variant '" + c.variant + "'; allowed: " + join_names(names) +
                     did_you_mean(c.variant, names));
  }
  const la::Shape shape = la::Shape::from(c);
  if (device.is_cuda()) cuda::require_device(device.index);
  return std::make_unique<LinearAttentionRun>(shape, device);
}

}  // namespace aiopt
