#include "techniques/linear_attention/linear_attention.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numbers>
#include <sstream>
#include <stdexcept>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/rng.hpp"
#include "kernels/cpu/attention.hpp"
#include "techniques/technique_parts.hpp"

namespace aiopt {

namespace la = linear_attention;
namespace cpu = kernels::cpu;

// ---- parameters and variants

static std::string summary() {
  return "exact softmax attention (O(N²), flash kernel) vs kernelized attention in O(N): elu+1, Performer's FAVOR+, Linformer";
}

static std::vector<ParamSpec> params() {
  ParamSpec causal;
  causal.name = "causal";
  causal.type = ParamType::boolean;
  causal.default_value = false;
  causal.help = "decoder attention: query i sees keys j <= i (linear forms by prefix sums; linformer does not "
                "support it)";
  std::vector<ParamSpec> out = {
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
      real_param("score_std", 1.0, std::nullopt, 0.01, 16.0, "",
                 "standard deviation of the scores q·k/sqrt(d) on the generated inputs (q and k of variance "
                 "score_std each): 1 is nearly uniform attention, 3 or more concentrates it on few keys"),
  };
  for (ParamSpec& p : attention_inputs::specs()) out.push_back(std::move(p));
  return out;
}

const VariantTable<la::Kind>& la::kinds() {
  static const VariantTable<Kind> table(
      "linear_attention",
      {
          {Kind::softmax, "softmax",
           "exact attention by the flash kernel: online softmax over key tiles, fully masked causal tiles skipped "
           "(O(N²) time, O(1) workspace in N)",
           true},
          {Kind::naive, "naive",
           "exact attention with the N×N scores materialized (O(N²) time and memory); a reference row"},
          {Kind::linear_elu, "linear_elu",
           "φ(x) = elu(x)+1, out = φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1) (Katharopoulos et al. 2020)"},
          {Kind::performer, "performer",
           "FAVOR+: m positive orthogonal random features estimating the softmax kernel (Choromanski et al. 2021)"},
          {Kind::linformer, "linformer",
           "softmax over K and V projected along the sequence to k rows (Wang et al. 2020); non-causal"},
      });
  return table;
}

static std::vector<Variant> variants() { return la::kinds().variants(); }

// ---- the case

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
  s.trained.reset();
  return s;
}

la::Shape la::Shape::from(const Case& c) {
  Shape s;
  s.kind = kinds().parse(c.variant);
  const auto count = [&](const char* name) { return static_cast<std::size_t>(c.params.integer(name)); };
  s.batch = count("batch");
  s.heads = count("heads");
  s.seq_len = count("seq_len");
  s.head_dim = count("head_dim");
  s.features = count("features");
  s.proj_rows = count("proj_rows");
  s.causal = c.params.boolean("causal");
  if (s.kind == Kind::linformer && s.causal)
    throw NotApplicable("linear_attention: variant linformer does not support causal = true: its projection E·K mixes "
                     "every position, later ones included, into each projected key, so no causal mask applies "
                     "(Wang et al. 2020 is an encoder method); allowed: causal = false for linformer, or "
                     "--variant softmax,naive,linear_elu,performer with causal = true");
  if (s.kind == Kind::linformer && s.proj_rows > s.seq_len)
    throw InputError("linear_attention: parameter 'proj_rows' = " + std::to_string(s.proj_rows) +
                     " is not allowed; allowed: proj_rows <= seq_len = " + std::to_string(s.seq_len) +
                     " (linformer projects the sequence down to proj_rows rows)");
  s.projection_seed = static_cast<std::uint64_t>(c.params.integer("projection_seed"));
  s.score_std = c.params.real("score_std");
  s.input_seed = rng::bits(c.seed, 3);
  s.trained = attention_inputs::trained(c.params);
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
  if (s.trained) {
    nn::AttentionCapture c = s.trained->capture(s.batch, s.seq_len);
    if (c.q.size() != s.elements())  // check() holds heads and head_dim to the model's
      throw std::logic_error("linear_attention: the captured q, k, v do not have the case's shape");
    in.q = std::move(c.q);
    in.k = std::move(c.k);
    in.v = std::move(c.v);
    return in;
  }
  const Device host = Device::cpu();
  in.q = memory::Buffer<float>(host, s.elements());
  in.k = memory::Buffer<float>(host, s.elements());
  in.v = memory::Buffer<float>(host, s.elements());
  // q and k of variance σ each give scores q·k/sqrt(d) (d products of variance σ², over √d) of
  // standard deviation σ = score_std: 1 (the default) is nearly uniform attention, 3 or more
  // concentrates each query on a few keys.
  const double qk_std = std::sqrt(s.score_std);
  fill_gaussian(in.q.data(), s.elements(), rng::bits(s.input_seed, 0), qk_std);
  fill_gaussian(in.k.data(), s.elements(), rng::bits(s.input_seed, 1), qk_std);
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

namespace {

// The query rows the float64 checks evaluate: the first and last checked_rows of a group.
std::vector<std::size_t> checked_row_indices(std::size_t n) {
  std::vector<std::size_t> rows;
  for (std::size_t i = 0; i < std::min(n, la::checked_rows); ++i) rows.push_back(i);
  for (std::size_t i = n > la::checked_rows ? std::max(la::checked_rows, n - la::checked_rows) : n; i < n; ++i)
    rows.push_back(i);
  return rows;
}

// Rounding-error bounds. Each fp32 sum of K terms is taken with the probabilistic bound of Higham
// and Mary (2019, Theorem 3.1): |error| <= λ·√K·u·Σ|terms| with probability at least
// 1 − 2·exp(−λ²/2) per sum, u = 2^-24; with λ = 8 that is 1 − 3e-14, so no correct kernel in
// any realistic number of checked elements exceeds it, while a worst-case K·u bound would be √K
// times looser than anything a kernel produces.
constexpr double unit_roundoff = 0x1p-24;
constexpr double exp_error = 2e-7;  // exp_poly's relative error
double sum_error(std::size_t terms) { return 8.0 * std::sqrt(static_cast<double>(terms)) * unit_roundoff; }

double max_abs_of(const float* x, std::size_t n) {
  double m = 0.0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(x[i])));
  return m;
}

// Largest Euclidean norm of the rows of x (rows, d), times `c`.
double max_row_norm(const float* x, std::size_t rows, std::size_t d, double c = 1.0) {
  double m = 0.0;
  for (std::size_t i = 0; i < rows; ++i) {
    double n2 = 0.0;
    for (std::size_t t = 0; t < d; ++t) n2 += static_cast<double>(x[i * d + t]) * x[i * d + t];
    m = std::max(m, n2);
  }
  return c * std::sqrt(m);
}

// A kernelized variant (elu, performer) in float64 on the checked rows of every group, from the
// float64 feature maps of the same q, k and W: out_i = Σ_j w_ij v_j / Σ_j w_ij, w_ij = φ(q_i)·φ(k_j),
// j over the keys row i sees. Returns the largest |out − ref| and sets *tolerance.
//
// Tolerance, V = max|v|: the output is a ratio of positive-weighted sums, so a relative error ε
// in every weight moves it by at most 2ε·V, and the fp32 sums over N keys (numerator and
// denominator) and over F features add 2·(sum_error(N) + sum_error(F))·V. A weight is a dot of
// two features, each off by ε_φ relative: elu+1 one rounding and exp_poly (u + 2e-7); FAVOR+
// exp(e − s), whose exponent e = w·(c x) − |c x|²/2 and stabilizer s are fp32 sums of d terms of
// magnitude up to M = max|w_r|·max|c x| + max|c x|²/2, so ε_φ = (sum_error(d) + 2u)·M + u + 2e-7.
// Altogether 2·(2ε_φ + sum_error(F))·V + 2·(sum_error(N) + sum_error(F))·V.
double kernelized_error(const la::Shape& s, const float* out, const la::Inputs& in, double* tolerance) {
  const std::size_t N = s.seq_len, d = s.head_dim, F = s.feature_dim();
  const std::vector<std::size_t> rows = checked_row_indices(N);
  memory::Buffer<float> w;
  double feature_error = unit_roundoff + exp_error;
  if (s.kind == la::Kind::performer) {
    w = la::performer_projection(s);
    const double c = std::pow(static_cast<double>(d), -0.25);
    const double cx = std::max(max_row_norm(in.q.data(), s.groups() * N, d, c),
                               max_row_norm(in.k.data(), s.groups() * N, d, c));
    const double m = max_row_norm(w.data(), F, d) * cx + cx * cx / 2.0;
    feature_error += (sum_error(d) + 2.0 * unit_roundoff) * m;
  }
  const double v_scale = max_abs_of(in.v.data(), s.elements());
  *tolerance = 2.0 * v_scale * (2.0 * feature_error + sum_error(F)) + 2.0 * v_scale * (sum_error(N) + sum_error(F));

  double worst = 0.0;
  std::vector<float> q_rows(rows.size() * d);
  std::vector<double> phi_q(rows.size() * F), phi_k(N * F), num(d);
  for (std::size_t g = 0; g < s.groups(); ++g) {
    const float* q = in.q.data() + g * N * d;
    const float* k = in.k.data() + g * N * d;
    const float* v = in.v.data() + g * N * d;
    for (std::size_t r = 0; r < rows.size(); ++r) std::copy_n(q + rows[r] * d, d, q_rows.data() + r * d);
    if (s.kind == la::Kind::performer) {
      cpu::favor_feature_map_reference(q_rows.data(), w.data(), phi_q.data(), 1, rows.size(), d, F,
                                       cpu::FavorRole::query);
      cpu::favor_feature_map_reference(k, w.data(), phi_k.data(), 1, N, d, F, cpu::FavorRole::key);
    } else {
      cpu::elu_feature_map_reference(q_rows.data(), phi_q.data(), q_rows.size());
      cpu::elu_feature_map_reference(k, phi_k.data(), N * d);
    }
    for (std::size_t r = 0; r < rows.size(); ++r) {
      const std::size_t i = rows[r], seen = s.causal ? i + 1 : N;
      std::fill(num.begin(), num.end(), 0.0);
      double den = 0.0;
      for (std::size_t j = 0; j < seen; ++j) {
        double wij = 0.0;
        for (std::size_t f = 0; f < F; ++f) wij += phi_q[r * F + f] * phi_k[j * F + f];
        den += wij;
        for (std::size_t t = 0; t < d; ++t) num[t] += wij * v[j * d + t];
      }
      for (std::size_t t = 0; t < d; ++t) {
        const double e = std::fabs(static_cast<double>(out[g * N * d + i * d + t]) - num[t] / den);
        if (!(e <= worst)) worst = std::isnan(e) ? std::numeric_limits<double>::infinity() : e;
      }
    }
  }
  return worst;
}

// Linformer in float64 on the checked rows of every group, from the same q, k, v, E and F:
// K' = E·K, V' = F·V, out_i = softmax(scale·q_i·K'ᵀ)·V'. Returns the largest |out − ref| and
// sets *tolerance.
//
// Tolerance: K' and V' are fp32 sums of N terms, off by at most sum_error(N)·A_K and
// sum_error(N)·A_V with A = max_r,t Σ_j |E_rj||k_jt| (likewise F, v). A logit scale·q·K'_r is a
// sum of d terms: off by scale·(sum_error(d)·|q|·|K'_r| + |q|·sum_error(N)·A_K) (K's d errors
// enter as independent terms of q·δK', hence the 2-norm |q| rather than |q|₁), plus a
// rounding of the logit (u·L, L its largest magnitude) and exp_poly's 2e-7 relative. The output
// is a softmax-weighted mean of V' rows, so a relative error ε in every weight moves it by at
// most 2ε·max|V'|; the sums over k rows add 2·sum_error(k)·max|V'|, and V's own error
// sum_error(N)·A_V passes through.
double linformer_error(const la::Shape& s, const float* out, const la::Inputs& in, double* tolerance) {
  const std::size_t N = s.seq_len, d = s.head_dim, P = s.proj_rows;
  const double scale = s.attention().scale;
  const std::vector<std::size_t> rows = checked_row_indices(N);
  const memory::Buffer<float> e = la::linformer_projection(s, 0), f = la::linformer_projection(s, 1);
  double worst = 0.0, v_scale = 0.0, a_k = 0.0, a_v = 0.0, k_norm = 0.0, logit_max = 0.0;
  double q_norm = 0.0;
  std::vector<std::vector<double>> refs;  // per group: (rows, d)
  std::vector<double> kp(P * d), vp(P * d), abs_k(P * d), abs_v(P * d), logits(P);
  for (std::size_t g = 0; g < s.groups(); ++g) {
    const float* q = in.q.data() + g * N * d;
    const float* k = in.k.data() + g * N * d;
    const float* v = in.v.data() + g * N * d;
    std::fill(kp.begin(), kp.end(), 0.0);
    std::fill(vp.begin(), vp.end(), 0.0);
    std::fill(abs_k.begin(), abs_k.end(), 0.0);
    std::fill(abs_v.begin(), abs_v.end(), 0.0);
#pragma omp parallel for schedule(static)
    for (std::size_t r = 0; r < P; ++r)
      for (std::size_t j = 0; j < N; ++j) {
        const double er = e[r * N + j], fr = f[r * N + j];
        for (std::size_t t = 0; t < d; ++t) {
          kp[r * d + t] += er * k[j * d + t];
          vp[r * d + t] += fr * v[j * d + t];
          abs_k[r * d + t] += std::fabs(er * k[j * d + t]);
          abs_v[r * d + t] += std::fabs(fr * v[j * d + t]);
        }
      }
    for (std::size_t r = 0; r < P; ++r) {
      double n2 = 0.0;
      for (std::size_t t = 0; t < d; ++t) {
        v_scale = std::max(v_scale, std::fabs(vp[r * d + t]));
        a_k = std::max(a_k, abs_k[r * d + t]);
        a_v = std::max(a_v, abs_v[r * d + t]);
        n2 += kp[r * d + t] * kp[r * d + t];
      }
      k_norm = std::max(k_norm, std::sqrt(n2));
    }
    for (std::size_t i : rows) {
      double n2 = 0.0, max = -std::numeric_limits<double>::infinity();
      for (std::size_t t = 0; t < d; ++t) n2 += static_cast<double>(q[i * d + t]) * q[i * d + t];
      q_norm = std::max(q_norm, std::sqrt(n2));
      for (std::size_t r = 0; r < P; ++r) {
        double dot = 0.0;
        for (std::size_t t = 0; t < d; ++t) dot += static_cast<double>(q[i * d + t]) * kp[r * d + t];
        logits[r] = scale * dot;
        max = std::max(max, logits[r]);
        logit_max = std::max(logit_max, std::fabs(logits[r]));
      }
      double den = 0.0;
      for (std::size_t r = 0; r < P; ++r) den += logits[r] = std::exp(logits[r] - max);
      for (std::size_t t = 0; t < d; ++t) {
        double num = 0.0;
        for (std::size_t r = 0; r < P; ++r) num += logits[r] * vp[r * d + t];
        const double err = std::fabs(static_cast<double>(out[g * N * d + i * d + t]) - num / den);
        if (!(err <= worst)) worst = std::isnan(err) ? std::numeric_limits<double>::infinity() : err;
      }
    }
  }
  const double logit_error = scale * (sum_error(d) * q_norm * k_norm + q_norm * sum_error(N) * a_k) +
                             unit_roundoff * logit_max + exp_error;
  *tolerance = v_scale * (2.0 * logit_error + 2.0 * sum_error(P)) + sum_error(N) * a_v;
  return worst;
}

// Exact attention (softmax or naive) against the float64 reference on the checked rows.
double softmax_error(const la::Shape& s, const float* out, const la::Inputs& in) {
  const std::size_t N = s.seq_len, d = s.head_dim, rows = std::min(N, la::checked_rows);
  std::vector<double> ref(rows * d);
  double worst = 0.0;
  for (std::size_t g = 0; g < s.groups(); ++g)
    for (std::size_t i0 : {std::size_t{0}, N - rows}) {
      kernels::AttentionShape a = kernels::AttentionShape::self(1, 1, N, d, s.causal);
      a.q_len = rows;
      a.q_offset = i0;
      const std::size_t base = g * N * d;
      cpu::attention_reference(in.q.data() + base + i0 * d, in.k.data() + base, in.v.data() + base, ref.data(), a);
      for (std::size_t t = 0; t < rows * d; ++t) {
        const double e = std::fabs(static_cast<double>(out[base + i0 * d + t]) - ref[t]);
        if (!(e <= worst)) worst = std::isnan(e) ? std::numeric_limits<double>::infinity() : e;
      }
    }
  return worst;
}

}  // namespace

la::Checked la::check(const Shape& s, const float* out, const Inputs& in) {
  Checked c;
  switch (s.kind) {
    case Kind::softmax:
    case Kind::naive:
      c.kernel_error = softmax_error(s, out, in);
      c.kernel_tolerance = softmax_tolerance;
      break;
    case Kind::linear_elu:
    case Kind::performer: c.kernel_error = kernelized_error(s, out, in, &c.kernel_tolerance); break;
    case Kind::linformer: c.kernel_error = linformer_error(s, out, in, &c.kernel_tolerance); break;
  }
  if (!(c.kernel_error <= c.kernel_tolerance)) {
    std::ostringstream m;
    m << "linear_attention: variant " << to_string(s.kind) << " max abs error " << c.kernel_error
      << " against the float64 evaluation of "
      << (is_exact(s.kind) ? "exact attention" : "its own approximation (same features and projections)")
      << " exceeds " << c.kernel_tolerance << ", the bound of a correct fp32 kernel";
    throw CheckFailed(m.str());
  }
  const memory::Buffer<float> exact = softmax_output(s, in);
  memory::Buffer<float> trivial(Device::cpu(), s.elements());
  cpu::attention_uniform(in.v.data(), trivial.data(), s.attention());
  c.vs_softmax = compare(out, exact.data(), s.elements());
  c.trivial = compare(trivial.data(), exact.data(), s.elements());
  if (!std::isfinite(c.vs_softmax.max_abs))
    throw CheckFailed("linear_attention: variant " + to_string(s.kind) + " produced a NaN or inf output");
  // Exact attention's max abs error is the one against float64 (the fp32 exact output is its peer).
  if (is_exact(s.kind)) c.vs_softmax.max_abs = c.kernel_error;
  return c;
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
  explicit CpuForward(const la::Shape& s)
      : s_(s),
        in_(la::make_inputs(s)),
        out_(Device::cpu(), s.elements()),
        zeros_(fault::active("linear_attention.zeros")),
        uniform_(fault::active("linear_attention.ignore_scores")) {
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
      case la::Kind::softmax: break;  // attention_flash allocates its tiles inside the call, in this scope
      case la::Kind::naive: workspace = cpu::naive_workspace_elements(s.attention()); break;
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
      case la::Kind::softmax: cpu::attention_flash(q, k, v, out, s_.attention()); break;
      case la::Kind::naive:
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
    // Broken variants for the fault-injection tests (core/fault.hpp): an output of zeros, or the
    // trivial predictor (the mean of the visible values) in place of the approximation.
    if (zeros_) std::fill(out_.begin(), out_.end(), 0.0f);
    if (uniform_) cpu::attention_uniform(v, out, s_.attention());
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
  bool zeros_ = false, uniform_ = false;  // faults
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
// The crossover search stops past this much time, and before a softmax that would compute more
// than this many scores (B·H·N², 2^28: a second or more per call on a few cores): finish() stays
// within seconds.
constexpr double crossover_budget_s = 4.0;
constexpr double crossover_max_scores = 268435456.0;
constexpr std::size_t crossover_first_len = 128;

// Multiply-adds counted as 2 FLOPs (README "Work").
double flops(const la::Shape& s) {
  const double G = static_cast<double>(s.groups()), N = static_cast<double>(s.seq_len),
               d = static_cast<double>(s.head_dim), F = static_cast<double>(s.feature_dim());
  switch (s.kind) {
    case la::Kind::softmax:
    case la::Kind::naive: return s.attention().flops();
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
    const la::Checked c = la::check(s_, out.data(), in);
    std::vector<Metric> metrics = {
        {"workspace_bytes", static_cast<double>(forward_->workspace_bytes()), "B", Better::lower},
        {"kernel_error", c.kernel_error, "", Better::lower},
        {"kernel_tolerance", c.kernel_tolerance, "", Better::lower, false},
        {"max_abs_error", c.vs_softmax.max_abs, "", Better::lower},
        {"mean_rel_error", c.vs_softmax.mean_rel, "", Better::lower},
    };
    if (!la::is_exact(s_.kind)) {
      // The trivial predictor, and the variant's error in its units: above 1 the approximation is
      // further from exact attention than the mean of v is (README "Quality against exact
      // attention").
      metrics.push_back({"trivial_max_abs_error", c.trivial.max_abs, "", Better::lower, false});
      metrics.push_back({"trivial_mean_rel_error", c.trivial.mean_rel, "", Better::lower, false});
      metrics.push_back({"error_vs_trivial", c.vs_softmax.mean_rel / c.trivial.mean_rel, "", Better::lower});
    }
    fit_exponents(metrics);
    if (!la::is_exact(s_.kind)) find_crossover(metrics);
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
      const double scores = static_cast<double>(s_.groups()) * static_cast<double>(n) * static_cast<double>(n);
      if (scores > crossover_max_scores) break;
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

namespace {

// The CUDA flash kernel's fp32 path is compiled for head_dim <= 128
// (kernels/cuda/attention.hpp). Wider heads have no CUDA baseline; naive still runs them.
void require_supported(const la::Shape& s, DeviceKind device) {
  if (device == DeviceKind::cuda && s.kind == la::Kind::softmax && s.head_dim > 128)
    throw NotApplicable("linear_attention: variant softmax on CUDA is the fp32 flash kernel, which takes head_dim "
                        "<= 128, not " + std::to_string(s.head_dim) +
                        "; allowed: head_dim <= 128, or --variant naive for exact attention at this width");
}

}  // namespace

static void check(const Case& c, DeviceKind device) {
  const la::Shape s = la::Shape::from(c);
  attention_inputs::check_shape("linear_attention", c.params, s.batch, s.heads, s.seq_len, s.head_dim);
  require_supported(s, device);
}

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  const la::Shape shape = la::Shape::from(c);
  require_supported(shape, device.kind);
  return std::make_unique<LinearAttentionRun>(shape, device);
}

std::unique_ptr<Technique> make_linear_attention() {
  return make_technique(
      {"linear_attention", "attention quality vs complexity", summary, params, variants, check, start});
}

}  // namespace aiopt
