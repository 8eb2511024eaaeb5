// linear_attention: each CPU feature map against its float64 reference, the non-causal and the
// chunked causal forms against the plain quadratic form of the same kernel, Performer's
// convergence in m, Linformer's exactness with identity projections, the technique's runs,
// checks and input errors on generated inputs and on q, k, v of the trained tiny model, the CLI
// report, and ([gpu]) every CUDA kernel against the CPU.
//
// Tolerances, and why:
//   elu+1: 1e-6 relative (exp_poly is within 2e-7 of e^x; x + 1 is one rounding);
//   FAVOR+ features: 5e-5 relative. The exponent w·(c·x) − |c·x|²/2 is an fp32 GEMM over d = 64
//     terms of magnitude up to ~3 (|exponent| up to ~25), so it is off by up to ~1e-5 absolute,
//     which e^(·) turns into a relative error of the same size; plus exp_poly's 2e-7;
//   linear attention (both forms, fp32) against the float64 quadratic form: 1e-5 relative to
//     max|v|. Each output row is a convex combination of value rows (positive weights summing
//     to one), so max|v| bounds it and the fp32 rounding of its sums of N <= 300 terms (~1e-6
//     relative, measured below 2e-6); an elementwise relative bound would be meaningless where a
//     row's combination cancels to near zero;
//   Linformer against its float64 reference: 1e-5 relative to max|v| likewise (softmax weights);
//     with E = F = I and k = N, against exact softmax attention (float64): 1e-5 the same way, and
//     the float64 Linformer reference equals it to 1e-12;
//   CUDA against the CPU kernels: the same bounds (cuBLAS fp32 without TF32, expf).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/linear_attention.hpp"
#include "support/error_metric.hpp"
#include "support/files.hpp"
#include "support/metrics.hpp"
#include "support/model_cache.hpp"
#include "support/process.hpp"
#include "support/random.hpp"
#include "support/schema.hpp"
#include "support/technique_run.hpp"
#include "techniques/linear_attention/linear_attention.hpp"

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
namespace la = aiopt::linear_attention;

namespace {

using aiopt::test::random_vector;

// Largest |got − want| / (abs + rel·|want|): at most 1 when every element is within the bound;
// +inf on a NaN.
template <class G, class W>
double worst_ratio(const std::vector<G>& got, const std::vector<W>& want, double abs, double rel) {
  REQUIRE(got.size() == want.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (std::isnan(e)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, e / (abs + rel * std::fabs(static_cast<double>(want[i]))));
  }
  return worst;
}

using aiopt::test::max_abs;

// Features of `kind` for q and k: (groups, n, F).
struct Features {
  std::vector<float> q, k;
  std::size_t width = 0;
};
Features features(const std::string& kind, const std::vector<float>& q, const std::vector<float>& k,
                  std::size_t groups, std::size_t n, std::size_t d, std::size_t m, std::uint64_t seed) {
  Features f;
  if (kind == "elu") {
    f.width = d;
    f.q.resize(q.size());
    f.k.resize(k.size());
    cpu::elu_feature_map(q.data(), f.q.data(), q.size());
    cpu::elu_feature_map(k.data(), f.k.data(), k.size());
  } else {
    f.width = m;
    std::vector<float> w(m * d);
    cpu::orthogonal_gaussian_projection(w.data(), m, d, seed);
    f.q.resize(groups * n * m);
    f.k.resize(groups * n * m);
    cpu::favor_feature_map(q.data(), w.data(), f.q.data(), groups, n, d, m, cpu::FavorRole::query);
    cpu::favor_feature_map(k.data(), w.data(), f.k.data(), groups, n, d, m, cpu::FavorRole::key);
  }
  return f;
}

const std::unique_ptr<Technique> technique = make_linear_attention();

Case make_case(const std::string& variant, std::int64_t seq_len, bool causal = false, std::int64_t heads = 1,
               std::int64_t features = 32, std::int64_t proj_rows = 32, std::int64_t head_dim = 32,
               std::uint64_t seed = 7, double score_std = 1.0) {
  return aiopt::test::quick_case(
      *technique, variant,
      {{"batch", std::int64_t{1}}, {"heads", heads}, {"seq_len", seq_len}, {"head_dim", head_dim},
       {"causal", causal}, {"features", features}, {"proj_rows", proj_rows},
       {"projection_seed", std::int64_t{1}}, {"score_std", score_std}},
      seed);
}

// inputs=trained at the trained tiny model's shape (heads 4, head_dim 16, its context of 128
// positions), from its last block, on two windows of validation text; m = k = 32.
Case trained_case(const std::string& variant, bool causal) {
  Case c = make_case(variant, 128, causal, 4, 32, 32, 16);
  c.params.set("inputs", std::string("trained"));
  c.params.set("preset", std::string("tiny"));
  c.params.set("layer", std::int64_t{1});
  c.params.set("batch", std::int64_t{2});
  return c;
}

using aiopt::test::find_metric;

// The mean relative error (Σ|got − want| / Σ|want|) of Performer with m features against exact
// softmax attention, averaged over projection seeds.
double performer_error(std::size_t m, bool causal) {
  const std::size_t n = 128, d = 32;
  // |c·x|² = d·(1/12)/sqrt(d) ≈ 0.5: FAVOR+'s variance grows like exp(|c·q + c·k|²) (Choromanski et
  // al. 2021, Lemma 2), so inputs of this size make the 1/m decay visible with few draws.
  const auto q = random_vector(n * d, 11, -0.5f, 0.5f), k = random_vector(n * d, 12, -0.5f, 0.5f),
             v = random_vector(n * d, 13, -1.0f, 1.0f);
  std::vector<float> want(n * d);
  cpu::attention_memory_efficient(q.data(), k.data(), v.data(), want.data(),
                                  kernels::AttentionShape::self(1, 1, n, d, causal));
  double total = 0.0;
  const int seeds = 4;
  for (int seed = 1; seed <= seeds; ++seed) {
    const Features f = features("favor", q, k, 1, n, d, m, static_cast<std::uint64_t>(seed));
    cpu::LinearAttentionShape s{1, 1, n, d, m, causal};
    std::vector<float> out(n * d), ws(cpu::linear_attention_workspace_elements(s));
    cpu::linear_attention(f.q.data(), f.k.data(), v.data(), out.data(), ws.data(), s);
    total += la::compare(out.data(), want.data(), out.size()).mean_rel;
  }
  return total / seeds;
}

}  // namespace

// ---- feature maps

TEST_CASE("elu+1 features match the float64 reference and are positive", "[linear_attention][cpu]") {
  const auto x = random_vector(1000, 1, -6.0f, 4.0f);
  std::vector<float> got(x.size());
  std::vector<double> want(x.size());
  cpu::elu_feature_map(x.data(), got.data(), x.size());
  cpu::elu_feature_map_reference(x.data(), want.data(), x.size());
  CHECK(worst_ratio(got, want, 0.0, 1e-6) <= 1.0);
  for (float p : got) CHECK(p > 0.0f);
}

TEST_CASE("FAVOR+ features match the float64 reference, stabilized per query row and per key group",
          "[linear_attention][cpu]") {
  for (const auto& [groups, rows, d, m] : {std::tuple<std::size_t, std::size_t, std::size_t, std::size_t>{2, 50, 64, 96},
                                          {3, 17, 16, 40}, {1, 1, 8, 5}}) {
    INFO(groups << " groups, " << rows << " rows, d " << d << ", m " << m);
    const auto x = random_vector(groups * rows * d, 2, -2.0f, 2.0f);
    std::vector<float> w(m * d);
    cpu::orthogonal_gaussian_projection(w.data(), m, d, 5);
    for (const auto role : {cpu::FavorRole::query, cpu::FavorRole::key}) {
      std::vector<float> got(groups * rows * m);
      std::vector<double> want(got.size());
      cpu::favor_feature_map(x.data(), w.data(), got.data(), groups, rows, d, m, role);
      cpu::favor_feature_map_reference(x.data(), w.data(), want.data(), groups, rows, d, m, role);
      CHECK(worst_ratio(got, want, 1e-30, 5e-5) <= 1.0);
      // The stabilizer makes the largest feature of each query row (of each key group) 1/sqrt(m).
      const double top = 1.0 / std::sqrt(static_cast<double>(m));
      const std::size_t span = role == cpu::FavorRole::query ? m : rows * m;
      for (std::size_t b = 0; b < got.size() / span; ++b) {
        double mx = 0.0;
        for (std::size_t i = 0; i < span; ++i) {
          CHECK(got[b * span + i] >= 0.0f);
          mx = std::max(mx, static_cast<double>(got[b * span + i]));
        }
        CHECK(mx == Approx(top).epsilon(1e-6));
      }
    }
  }
}

TEST_CASE("the FAVOR+ projection is orthogonal within blocks of d rows, Gaussian-scaled, seeded",
          "[linear_attention][cpu]") {
  const std::size_t m = 40, d = 16;
  std::vector<float> w(m * d), again(m * d), other(m * d);
  cpu::orthogonal_gaussian_projection(w.data(), m, d, 3);
  cpu::orthogonal_gaussian_projection(again.data(), m, d, 3);
  cpu::orthogonal_gaussian_projection(other.data(), m, d, 4);
  CHECK(w == again);
  CHECK(w != other);
  double mean_square_norm = 0.0;
  for (std::size_t i = 0; i < m; ++i) {
    double ni = 0.0;
    for (std::size_t t = 0; t < d; ++t) ni += static_cast<double>(w[i * d + t]) * w[i * d + t];
    mean_square_norm += ni / m;
    for (std::size_t j = 0; j < i; ++j) {
      if (i / d != j / d) continue;  // orthogonal only within a block
      double dot = 0.0, nj = 0.0;
      for (std::size_t t = 0; t < d; ++t) {
        dot += static_cast<double>(w[i * d + t]) * w[j * d + t];
        nj += static_cast<double>(w[j * d + t]) * w[j * d + t];
      }
      CHECK(std::fabs(dot) / std::sqrt(ni * nj) < 1e-5);
    }
  }
  // Row norms are chi(d): E|w|² = d; 40 rows give a mean within 30% of it (5 standard errors).
  CHECK(mean_square_norm == Approx(static_cast<double>(d)).epsilon(0.3));
}

// ---- the forms of linear attention

TEST_CASE("linear attention, non-causal and chunked causal, equals the quadratic form of the same features",
          "[linear_attention][cpu]") {
  // N = 256: whole chunks; 200 and 37: a padded last chunk; 1: a single row.
  for (const std::string kind : {"elu", "favor"})
    for (const bool causal : {false, true})
      for (const std::size_t n : {std::size_t{256}, std::size_t{200}, std::size_t{37}, std::size_t{1}}) {
        const std::size_t groups = 3, d = 32, m = 48;
        INFO(kind << (causal ? " causal" : " non-causal") << " N = " << n);
        const auto q = random_vector(groups * n * d, 21, -2.0f, 2.0f), k = random_vector(groups * n * d, 22, -2.0f, 2.0f),
                   v = random_vector(groups * n * d, 23, -1.0f, 1.0f);
        const Features f = features(kind, q, k, groups, n, d, m, 9);
        cpu::LinearAttentionShape s{1, groups, n, d, f.width, causal};
        std::vector<float> got(groups * n * d), ws(cpu::linear_attention_workspace_elements(s));
        std::vector<double> want(got.size());
        cpu::linear_attention(f.q.data(), f.k.data(), v.data(), got.data(), ws.data(), s);
        cpu::linear_attention_quadratic(f.q.data(), f.k.data(), v.data(), want.data(), s);
        CHECK(worst_ratio(got, want, 1e-5 * max_abs(v), 0.0) <= 1.0);
      }
}

TEST_CASE("the causal form sees no later key", "[linear_attention][cpu]") {
  // Changing the last key and value must leave every earlier output untouched.
  const std::size_t n = 130, d = 16;
  auto q = random_vector(n * d, 31, -1.0f, 1.0f), k = random_vector(n * d, 32, -1.0f, 1.0f),
       v = random_vector(n * d, 33, -1.0f, 1.0f);
  cpu::LinearAttentionShape s{1, 1, n, d, d, true};
  std::vector<float> phi_q(n * d), phi_k(n * d), a(n * d), b(n * d), ws(cpu::linear_attention_workspace_elements(s));
  cpu::elu_feature_map(q.data(), phi_q.data(), q.size());
  cpu::elu_feature_map(k.data(), phi_k.data(), k.size());
  cpu::linear_attention(phi_q.data(), phi_k.data(), v.data(), a.data(), ws.data(), s);
  for (std::size_t t = 0; t < d; ++t) {
    phi_k[(n - 1) * d + t] *= 3.0f;
    v[(n - 1) * d + t] += 5.0f;
  }
  cpu::linear_attention(phi_q.data(), phi_k.data(), v.data(), b.data(), ws.data(), s);
  CHECK(std::vector<float>(a.begin(), a.end() - d) == std::vector<float>(b.begin(), b.end() - d));
  CHECK(std::vector<float>(a.end() - d, a.end()) != std::vector<float>(b.end() - d, b.end()));
}

TEST_CASE("Performer approaches softmax attention as m grows", "[linear_attention][cpu]") {
  // FAVOR+ is an unbiased estimate of the softmax kernel whose variance falls like 1/m: with 64×
  // the features the error, averaged over 4 projection draws, must fall well below the m = 16 one.
  for (const bool causal : {false, true}) {
    INFO((causal ? "causal" : "non-causal"));
    const double coarse = performer_error(16, causal), fine = performer_error(1024, causal);
    CHECK(fine < 0.5 * coarse);
  }
}

// ---- Linformer

TEST_CASE("Linformer with k = N and E = F = I is exact softmax attention", "[linear_attention][cpu]") {
  const std::size_t groups = 2, n = 96, d = 32;
  const auto q = random_vector(groups * n * d, 41, -2.0f, 2.0f), k = random_vector(groups * n * d, 42, -2.0f, 2.0f),
             v = random_vector(groups * n * d, 43, -1.0f, 1.0f);
  std::vector<float> eye(n * n, 0.0f);
  for (std::size_t i = 0; i < n; ++i) eye[i * n + i] = 1.0f;
  const auto shape = kernels::AttentionShape::self(1, groups, n, d, false);
  std::vector<double> exact(q.size()), ref(q.size());
  cpu::attention_reference(q.data(), k.data(), v.data(), exact.data(), shape);
  cpu::linformer_attention_reference(q.data(), k.data(), v.data(), eye.data(), eye.data(), ref.data(), shape, n);
  CHECK(worst_ratio(ref, exact, 1e-12, 0.0) <= 1.0);
  std::vector<float> got(q.size()), ws(cpu::linformer_workspace_elements(shape, n));
  cpu::linformer_attention(q.data(), k.data(), v.data(), eye.data(), eye.data(), got.data(), ws.data(), shape, n);
  CHECK(worst_ratio(got, exact, 1e-5 * max_abs(v), 0.0) <= 1.0);
}

TEST_CASE("Linformer with random projections matches its float64 reference, and causal is refused",
          "[linear_attention][cpu]") {
  const std::size_t groups = 3, n = 150, d = 16, kr = 40;
  const auto q = random_vector(groups * n * d, 51, -2.0f, 2.0f), k = random_vector(groups * n * d, 52, -2.0f, 2.0f),
             v = random_vector(groups * n * d, 53, -1.0f, 1.0f);
  const auto e = random_vector(kr * n, 54, -0.2f, 0.2f), f = random_vector(kr * n, 55, -0.2f, 0.2f);
  const auto shape = kernels::AttentionShape::self(1, groups, n, d, false);
  std::vector<double> want(q.size());
  std::vector<float> got(q.size()), ws(cpu::linformer_workspace_elements(shape, kr));
  cpu::linformer_attention_reference(q.data(), k.data(), v.data(), e.data(), f.data(), want.data(), shape, kr);
  cpu::linformer_attention(q.data(), k.data(), v.data(), e.data(), f.data(), got.data(), ws.data(), shape, kr);
  CHECK(worst_ratio(got, want, 1e-5 * max_abs(v), 0.0) <= 1.0);
  const auto causal = kernels::AttentionShape::self(1, groups, n, d, true);
  CHECK_THROWS_AS(cpu::linformer_attention(q.data(), k.data(), v.data(), e.data(), f.data(), got.data(), ws.data(),
                                           causal, kr),
                  std::invalid_argument);
}

// ---- the technique

TEST_CASE("the technique declares its contract", "[linear_attention]") {
  const Technique& t = *technique;
  CHECK(t.name() == "linear_attention");
  CHECK(t.trade_off() == "attention quality vs complexity");
  CHECK(t.baseline() == "softmax");
  CHECK_FALSE(t.find_variant("naive")->baseline);
  for (const std::string v : {"softmax", "naive", "linear_elu", "performer", "linformer"}) {
    CHECK(t.find_variant(v)->runs_on(DeviceKind::cpu));
    CHECK(t.find_variant(v)->runs_on(DeviceKind::cuda));
  }
  std::vector<std::string> names;
  for (const auto& p : t.params()) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"batch", "heads", "seq_len", "head_dim", "causal", "features", "proj_rows",
                                          "projection_seed", "score_std", "inputs", "preset", "layer"});
}

TEST_CASE("CPU runs pass their checks and report errors, workspace, exponents and crossover",
          "[linear_attention][cpu]") {
  const Technique& t = *technique;
  for (const bool causal : {false, true})
    for (const std::string variant : {"softmax", "naive", "linear_elu", "performer", "linformer"}) {
      if (causal && variant == "linformer") continue;
      INFO(variant << (causal ? " causal" : ""));
      auto run = t.prepare(make_case(variant, 256, causal), Device::cpu());
      run->step();
      const auto metrics = run->finish();
      for (const std::string name : {"workspace_bytes", "kernel_error", "kernel_tolerance", "max_abs_error",
                                     "mean_rel_error", "time_exponent", "memory_exponent"})
        REQUIRE(find_metric(metrics, name) != nullptr);
      CHECK(find_metric(metrics, "kernel_error")->value <= find_metric(metrics, "kernel_tolerance")->value);
      CHECK(find_metric(metrics, "workspace_bytes")->value > 0);
      const double error = find_metric(metrics, "max_abs_error")->value;
      if (variant == "softmax" || variant == "naive") {
        CHECK(error <= la::softmax_tolerance);
        CHECK(find_metric(metrics, "crossover_seq_len") == nullptr);
        CHECK(find_metric(metrics, "error_vs_trivial") == nullptr);
        // naive's scores are N×N: its workspace grows exactly 4× per doubling; flash's tiles stop
        // growing at q_tile × kv_tile, so its growth from N/4 to N is less.
        if (variant == "naive") CHECK(find_metric(metrics, "memory_exponent")->value == Approx(2.0).margin(1e-9));
        if (variant == "softmax") CHECK(find_metric(metrics, "memory_exponent")->value < 1.99);
      } else {
        // An approximation, yet bounded: outputs and errors are of order one, not NaN.
        CHECK(std::isfinite(error));
        CHECK(error > 0.0);
        REQUIRE(find_metric(metrics, "crossover_seq_len") != nullptr);
        REQUIRE(find_metric(metrics, "error_vs_trivial") != nullptr);
        CHECK(find_metric(metrics, "trivial_mean_rel_error")->value > 0.0);
        REQUIRE(find_metric(metrics, "crossover_searched_up_to") != nullptr);
        CHECK(find_metric(metrics, "memory_exponent")->value < 1.2);
      }
      CHECK(run->work().flops.value() > 0);
    }
}

TEST_CASE("the check fails a NaN output and a wrong softmax", "[linear_attention]") {
  for (const std::string variant : {"softmax", "naive", "linear_elu", "performer", "linformer"}) {
    INFO(variant);
    const la::Shape s = la::Shape::from(make_case(variant, 64, false, 2));
    const la::Inputs in = la::make_inputs(s);
    auto forward = la::make_cpu_forward(s);
    memory::Buffer<float> out = forward->output();
    CHECK_NOTHROW(la::check(s, out.data(), in));
    out[77] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_AS(la::check(s, out.data(), in), CheckFailed);
  }
  const la::Shape s = la::Shape::from(make_case("softmax", 64, true, 2));
  const la::Inputs in = la::make_inputs(s);
  memory::Buffer<float> out = la::make_cpu_forward(s)->output();
  out[3] += 1e-3f;  // row 0 is checked
  CHECK_THROWS_AS(la::check(s, out.data(), in), CheckFailed);
}

TEST_CASE("the flash baseline equals naive attention and float64 with masked key tiles skipped",
          "[linear_attention][cpu]") {
  // N = 700 spans 6 query tiles and 3 key tiles of the flash kernel (128 × 256, not multiples of
  // them): causal, the first query tiles skip the key tiles past their last query. Both kernels
  // are within softmax_tolerance (1e-4) of float64 on every row, so of each other within 2e-4; at
  // score s.d. 3 attention concentrates on a few keys, so a wrongly masked or skipped tile moves
  // outputs by O(1).
  const std::size_t n = 700, d = 32;
  for (const double score_std : {1.0, 3.0})
    for (const bool causal : {false, true}) {
      INFO((causal ? "causal" : "non-causal") << " score s.d. " << score_std);
      const la::Shape s = la::Shape::from(make_case("softmax", n, causal, 2, 32, 32, d, 21, score_std));
      la::Shape naive = s;
      naive.kind = la::Kind::naive;
      const memory::Buffer<float> flash = la::make_cpu_forward(s)->output();
      const memory::Buffer<float> reference = la::make_cpu_forward(naive)->output();
      const la::Inputs in = la::make_inputs(s);
      std::vector<double> exact(s.elements());
      cpu::attention_reference(in.q.data(), in.k.data(), in.v.data(), exact.data(), s.attention());
      const std::vector<float> a(flash.begin(), flash.end()), b(reference.begin(), reference.end());
      CHECK(worst_ratio(a, exact, la::softmax_tolerance, 0.0) <= 1.0);
      CHECK(worst_ratio(b, exact, la::softmax_tolerance, 0.0) <= 1.0);
      CHECK(worst_ratio(a, b, 2 * la::softmax_tolerance, 0.0) <= 1.0);
    }
}

TEST_CASE("each variant is held to its own approximation: a small change to an output fails", "[linear_attention]") {
  // The bound of a correct fp32 kernel against the float64 evaluation of the same approximation is
  // ~1e-4 of max|v| here for the kernelized forms and ~1e-2 for linformer (its sums over N keys
  // of E·K cancel: the bound carries Σ|E||k|, ~10× |E·K|); 0.1 on one element is beyond both.
  for (const bool causal : {false, true})
    for (const std::string variant : {"linear_elu", "performer", "linformer"}) {
      if (causal && variant == "linformer") continue;
      INFO(variant << (causal ? " causal" : ""));
      const la::Shape s = la::Shape::from(make_case(variant, 160, causal, 2, 32, 32, 32, 7, 3.0));
      const la::Inputs in = la::make_inputs(s);
      memory::Buffer<float> out = la::make_cpu_forward(s)->output();
      const la::Checked c = la::check(s, out.data(), in);
      INFO("kernel error " << c.kernel_error << " within " << c.kernel_tolerance);
      CHECK(c.kernel_tolerance < 2e-2);
      CHECK(c.kernel_error < c.kernel_tolerance / 4);
      out[(160 + 159) * 32 + 5] += 0.1f;  // the last row of the second head
      CHECK_THROWS_WITH(la::check(s, out.data(), in), Catch::Contains("its own approximation"));
    }
}

TEST_CASE("an output of zeros or of the mean of v fails its run", "[linear_attention][fault]") {
  // On i.i.d. inputs both are closer to exact attention than performer and linformer are (see
  // error_vs_trivial): only the check against the variant's own approximation can fail them.
  for (const double score_std : {1.0, 3.0})
    for (const bool causal : {false, true})
      for (const std::string variant : {"softmax", "naive", "linear_elu", "performer", "linformer"}) {
        if (causal && variant == "linformer") continue;
        INFO(variant << (causal ? " causal" : "") << " score s.d. " << score_std);
        const Case c = make_case(variant, 128, causal, 2, 32, 32, 32, 7, score_std);
        for (const std::string fault_name : {"linear_attention.zeros", "linear_attention.ignore_scores"}) {
          INFO(fault_name);
          const Result r = aiopt::test::broken_run(*technique, c, fault_name);
          CHECK_THAT(r.message, Catch::Contains("variant " + variant) && Catch::Contains("exceeds"));
        }
      }
}

TEST_CASE("on the trained model's q k v every variant passes its check and reports its error and the trivial one",
          "[linear_attention][cpu]") {
  const aiopt::test::TestModelCache cache_dir;
  for (const bool causal : {false, true})
    for (const std::string variant : {"softmax", "naive", "linear_elu", "performer", "linformer"}) {
      if (causal && variant == "linformer") continue;
      INFO(variant << (causal ? " causal" : ""));
      const auto metrics = aiopt::test::run_case(*technique, trained_case(variant, causal), Device::cpu(), 1);
      const double kernel_error = find_metric(metrics, "kernel_error")->value;
      INFO("kernel error " << kernel_error << " within " << find_metric(metrics, "kernel_tolerance")->value);
      CHECK(kernel_error <= find_metric(metrics, "kernel_tolerance")->value);
      const double error = find_metric(metrics, "mean_rel_error")->value;
      CHECK(std::isfinite(find_metric(metrics, "max_abs_error")->value));
      CHECK(std::isfinite(error));
      if (la::is_exact(la::kinds().parse(variant))) continue;
      // The approximation's distance from exact attention, in the trivial predictor's units: reported,
      // finite, and whether it is below 1 is the finding (README "Quality against exact attention").
      const double trivial = find_metric(metrics, "trivial_mean_rel_error")->value;
      INFO("mean rel error " << error << ", trivial " << trivial);
      CHECK(error > 0.0);
      CHECK(trivial > 0.0);
      CHECK(find_metric(metrics, "error_vs_trivial")->value == Approx(error / trivial));
    }
}

TEST_CASE("on trained inputs an output of zeros or of the mean of v fails its run", "[linear_attention][fault]") {
  const aiopt::test::TestModelCache cache_dir;
  for (const bool causal : {false, true})
    for (const std::string variant : {"softmax", "naive", "linear_elu", "performer", "linformer"}) {
      if (causal && variant == "linformer") continue;
      INFO(variant << (causal ? " causal" : ""));
      for (const std::string fault_name : {"linear_attention.zeros", "linear_attention.ignore_scores"}) {
        INFO(fault_name);
        const Result r = aiopt::test::broken_run(*technique, trained_case(variant, causal), fault_name);
        CHECK_THAT(r.message, Catch::Contains("variant " + variant) && Catch::Contains("exceeds"));
      }
    }
}

TEST_CASE("inputs=trained takes its shape from the model and says which", "[linear_attention]") {
  const Technique& t = *technique;
  CHECK_NOTHROW(t.validate(trained_case("performer", true), DeviceKind::cpu));
  Case c = make_case("performer", 256);
  c.params.set("inputs", std::string("trained"));
  CHECK_THROWS_WITH(t.validate(c, DeviceKind::cpu),
                    Catch::Contains("layer 0 of the trained tiny model") &&
                        Catch::Contains("heads = 4, head_dim = 16, seq_len <= 128") &&
                        Catch::Contains("got heads = 1, head_dim = 32, seq_len = 256"));
}

TEST_CASE("a NaN in the inputs makes a NaN output, which the check fails", "[linear_attention][cpu]") {
  const std::size_t n = 64, d = 16;
  for (const std::string kind : {"elu", "favor"})
    for (const bool causal : {false, true}) {
      INFO(kind << (causal ? " causal" : ""));
      auto q = random_vector(n * d, 61, -1.0f, 1.0f), k = random_vector(n * d, 62, -1.0f, 1.0f),
           v = random_vector(n * d, 63, -1.0f, 1.0f);
      k[5] = std::numeric_limits<float>::quiet_NaN();
      const Features f = features(kind, q, k, 1, n, d, 24, 1);
      cpu::LinearAttentionShape s{1, 1, n, d, f.width, causal};
      std::vector<float> out(n * d), ws(cpu::linear_attention_workspace_elements(s));
      cpu::linear_attention(f.q.data(), f.k.data(), v.data(), out.data(), ws.data(), s);
      CHECK(std::isinf(la::compare(out.data(), v.data(), out.size()).max_abs));
    }
  const auto shape = kernels::AttentionShape::self(1, 1, n, d, false);
  auto q = random_vector(n * d, 64, -1.0f, 1.0f), k = random_vector(n * d, 65, -1.0f, 1.0f),
       v = random_vector(n * d, 66, -1.0f, 1.0f);
  v[9] = std::numeric_limits<float>::quiet_NaN();
  const auto e = random_vector(8 * n, 67, -0.3f, 0.3f);
  std::vector<float> out(n * d), ws(cpu::linformer_workspace_elements(shape, 8));
  cpu::linformer_attention(q.data(), k.data(), v.data(), e.data(), e.data(), out.data(), ws.data(), shape, 8);
  CHECK(std::isinf(la::compare(out.data(), q.data(), out.size()).max_abs));
}

TEST_CASE("the log-log slope recovers a power law", "[linear_attention]") {
  CHECK(la::loglog_slope({256, 512, 1024}, {3.0 * 256 * 256, 3.0 * 512 * 512, 3.0 * 1024 * 1024}) ==
        Approx(2.0).margin(1e-12));
  CHECK(la::loglog_slope({100, 1000}, {7.0, 70.0}) == Approx(1.0).margin(1e-12));
}

TEST_CASE("bad parameters are input errors that say what is allowed", "[linear_attention]") {
  const Technique& t = *technique;
  // A causal linformer is not an error but a case that does not apply: skipped with the reason.
  CHECK_THROWS_AS(t.validate(make_case("linformer", 256, true), DeviceKind::cpu), NotApplicable);
  CHECK_THROWS_WITH(t.prepare(make_case("linformer", 256, true), Device::cpu()),
                    Catch::Contains("causal") && Catch::Contains("allowed"));
  CHECK_THROWS_AS(t.validate(make_case("performer", 64, false, 1, 0), DeviceKind::cpu), InputError);
  CHECK_THROWS_WITH(t.prepare(make_case("linformer", 64, false, 1, 32, 128), Device::cpu()),
                    Catch::Contains("'proj_rows' = 128") && Catch::Contains("seq_len = 64"));
  CHECK_THROWS_WITH(t.prepare(make_case("perfomer", 64), Device::cpu()), Catch::Contains("did you mean 'performer'"));
  CHECK_THROWS_WITH(t.prepare(make_case("softmax", 0), Device::cpu()), Catch::Contains("parameter 'seq_len': value '0' is out of range"));
  CHECK_THROWS_AS(t.prepare(make_case("performer", 64, false, 1, 0), Device::cpu()), InputError);
  // The CUDA baseline is the fp32 flash kernel, compiled for head_dim <= 128: wider is not applicable.
  CHECK_THROWS_WITH(t.validate(make_case("softmax", 64, false, 1, 32, 32, 160), DeviceKind::cuda),
                    Catch::Contains("head_dim <= 128") && Catch::Contains("--variant naive"));
  CHECK_NOTHROW(t.validate(make_case("naive", 64, false, 1, 32, 32, 160), DeviceKind::cuda));
  CHECK_NOTHROW(t.validate(make_case("softmax", 64, false, 1, 32, 32, 160), DeviceKind::cpu));
}

TEST_CASE("a CUDA case without a usable GPU is unavailable, with the reason", "[linear_attention]") {
  const Technique& t = *technique;
  const std::string why = cuda::unavailable_reason();
  if (!why.empty()) {
    CHECK_THROWS_AS(t.prepare(make_case("linear_elu", 64), Device::cuda()), DeviceUnavailable);
    CHECK_THROWS_WITH(t.prepare(make_case("linear_elu", 64), Device::cuda()), Catch::Contains(why));
  }
  CHECK_THROWS_AS(t.prepare(make_case("linear_elu", 64), Device::cuda(cuda::device_count())), DeviceUnavailable);
}

TEST_CASE("bench --quick writes a valid JSON report with every variant ok", "[linear_attention][cli]") {
  test::TempDir tmp;
  const std::string path = tmp.file("la.json");
  const auto r = test::run_aiopt({"bench", "--technique", "linear_attention", "--quick", "--device", "cpu",
                                  "--format", "json", "-o", path, "--progress", "never"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::ifstream in(path);
  const auto doc = nlohmann::json::parse(in);
  CHECK(test::schema_errors(doc).empty());
  REQUIRE(doc["results"].size() == 5);
  for (const auto& result : doc["results"]) {
    CHECK(result["status"] == "ok");
    CHECK(result["metrics"].contains("workspace_bytes"));
    CHECK(result["metrics"].contains("time_exponent"));
  }
  CHECK(doc["comparisons"].size() == 4);
}

TEST_CASE("a causal grid runs every variant that applies and skips the causal linformer", "[linear_attention][cli]") {
  const auto r = test::run_aiopt({"bench", "--technique", "linear_attention", "--quick", "--device", "cpu",
                                  "--set", "causal=false,true", "--format", "json", "--progress", "never"});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto doc = nlohmann::json::parse(r.out);
  CHECK(test::schema_errors(doc).empty());
  REQUIRE(doc["results"].size() == 10);
  int skipped = 0;
  for (const auto& result : doc["results"]) {
    const bool causal_linformer = result["variant"] == "linformer" && result["params"]["causal"] == true;
    CHECK(result["status"] == (causal_linformer ? "skipped" : "ok"));
    if (causal_linformer) {
      ++skipped;
      CHECK_THAT(result["message"].get<std::string>(), Catch::Contains("not applicable") && Catch::Contains("causal"));
    }
  }
  CHECK(skipped == 1);
}

// ---- CUDA against the CPU

TEST_CASE("every CUDA variant passes its checks and matches the CPU forward", "[linear_attention][gpu]") {
  const Technique& t = *technique;
  for (const bool causal : {false, true})
    for (const std::int64_t n : {256, 200})
      for (const std::string variant : {"softmax", "naive", "linear_elu", "performer", "linformer"}) {
        if (causal && variant == "linformer") continue;
        INFO(variant << (causal ? " causal" : "") << " N = " << n);
        const Case c = make_case(variant, n, causal, 2);
        const la::Shape s = la::Shape::from(c);
        auto run = t.prepare(c, Device::cuda());
        CHECK(run->stream() != nullptr);
        for (int i = 0; i < 2; ++i) run->step();
        std::vector<Metric> metrics;
        REQUIRE_NOTHROW(metrics = run->finish());
        REQUIRE(find_metric(metrics, "workspace_bytes") != nullptr);
        // The same forward on the CPU: the CUDA output must equal it to fp32 rounding, relative
        // to the output's largest element. 1e-5 for softmax, naive and elu+1 (as the CPU forms against
        // float64); 1e-4 for performer (each side's features are within 5e-5 of float64) and
        // linformer (logits q·(E k) of a few units, rounded in a different order, move
        // probabilities by ~1e-6 relative each and its outputs exceed max|v|).
        auto gpu = la::make_forward(s, Device::cuda());
        auto host = la::make_cpu_forward(s);
        const memory::Buffer<float> a = gpu->output(), b = host->output();
        const std::vector<float> va(a.begin(), a.end()), vb(b.begin(), b.end());
        const double rel = variant == "performer" || variant == "linformer" ? 1e-4 : 1e-5;
        CHECK(worst_ratio(va, vb, rel * max_abs(vb), 0.0) <= 1.0);
      }
}
