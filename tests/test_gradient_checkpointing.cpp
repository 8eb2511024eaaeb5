// gradient_checkpointing: sqrt_n's rounding, the case's validation, every policy's gradient
// against store_all's (computed here directly with the engine), the measured activation peaks
// (sqrt_n below store_all; the k sweep decreasing to k = 1), every variant's run and quick CLI
// report, and ([gpu]) the CUDA runs.
//
// Tolerances, and why:
//   Gradients vs store_all: 1e-6 of the largest |gradient| (the run's own check). A policy re-runs
//   the same kernels on the same inputs, so the gradient is bit-identical in practice; 1e-6 allows
//   an fp32 reassociation should a kernel ever block differently on recomputation, and is a
//   thousand times below what a wrong recomputed activation gives.
//   Activation peaks: exact byte counts from the tracked allocator, deterministic for a shape, so
//   their order is asserted strictly.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/memory.hpp"
#include "nn/training.hpp"
#include "support/metrics.hpp"
#include "support/process.hpp"
#include "support/technique_run.hpp"
#include "techniques/gradient_checkpointing/gradient_checkpointing.hpp"

using namespace aiopt;
namespace gc = aiopt::gradient_checkpointing;
using aiopt::test::metric;
using aiopt::test::run_aiopt;
using nlohmann::json;

namespace {

const std::unique_ptr<Technique> technique = make_gradient_checkpointing();

// A quick case (tiny, L2 d64, k 2, flash) of batch 2 × 32 tokens, with `overrides`.
Case make_case(const std::string& variant, const std::map<std::string, std::int64_t>& overrides = {},
               std::uint64_t seed = 7) {
  std::map<std::string, Value> changes = {{"batch", std::int64_t{2}}, {"seq_len", std::int64_t{32}}};
  for (const auto& [k, v] : overrides) changes[k] = v;
  return aiopt::test::quick_case(*technique, variant, changes, seed);
}

// Prepares, steps twice and finishes one case.
std::vector<Metric> run_case(const Case& c, const Device& device = Device::cpu()) {
  return aiopt::test::run_case(*technique, c, device, 2);
}

double activation_peak(const Case& c) { return metric(run_case(c), "activation_peak_bytes").value; }

}  // namespace

TEST_CASE("the technique declares its contract", "[gradient_checkpointing]") {
  const Technique& t = *technique;
  CHECK(t.baseline() == "store_all");
  std::vector<std::string> names;
  for (const auto& v : t.variants()) {
    names.push_back(v.name);
    CHECK(v.runs_on(DeviceKind::cpu));
    CHECK(v.runs_on(DeviceKind::cuda));
  }
  CHECK(names == std::vector<std::string>{"store_all", "checkpoint_every_k", "sqrt_n", "selective"});
  for (const auto& p : t.params())
    if (p.name == "preset") CHECK(std::get<std::string>(p.quick_value.value()) == "tiny");
}

TEST_CASE("sqrt_n rounds the square root of the layers to the nearest integer", "[gradient_checkpointing]") {
  // √2 ≈ 1.41, √3 ≈ 1.73, √8 ≈ 2.83, √12 ≈ 3.46, √13 ≈ 3.61, √20 ≈ 4.47, √21 ≈ 4.58.
  const std::map<std::size_t, std::size_t> want = {{1, 1}, {2, 1}, {3, 2}, {4, 2},  {8, 3},
                                                   {12, 3}, {13, 4}, {16, 4}, {20, 4}, {21, 5}};
  for (const auto& [layers, k] : want) {
    INFO("layers " << layers);
    CHECK(gc::sqrt_n_segment(layers) == k);
  }
  const gc::Shape s = gc::Shape::from(make_case("sqrt_n", {{"layers", 8}}), gc::Policy::sqrt_n);
  CHECK(gc::options(gc::Policy::sqrt_n, s).checkpoint_every == 3);
  CHECK(gc::checkpoints_kept(gc::options(gc::Policy::sqrt_n, s), 8) == 3);
  CHECK(gc::blocks_recomputed(gc::options(gc::Policy::sqrt_n, s), 8) == 8);
  CHECK(gc::blocks_recomputed(gc::options(gc::Policy::selective, s), 8) == 0);
}

TEST_CASE("a bad k or sequence length is an input error at validate", "[gradient_checkpointing]") {
  const Technique& t = *technique;
  // tiny has 2 layers.
  CHECK_THROWS_AS(t.validate(make_case("checkpoint_every_k", {{"k", 0}}), DeviceKind::cpu), InputError);
  CHECK_THROWS_AS(t.validate(make_case("checkpoint_every_k", {{"k", 3}}), DeviceKind::cpu), InputError);
  CHECK_THROWS_WITH(t.validate(make_case("checkpoint_every_k", {{"k", 3}}), DeviceKind::cpu),
                    Catch::Contains("'k' = 3") && Catch::Contains("1 to the model's 2 layers"));
  CHECK_NOTHROW(t.validate(make_case("checkpoint_every_k", {{"k", 2}}), DeviceKind::cpu));
  CHECK_NOTHROW(t.validate(make_case("checkpoint_every_k", {{"k", 8}, {"layers", 8}}), DeviceKind::cpu));
  CHECK_THROWS_WITH(t.validate(make_case("store_all", {{"seq_len", 129}}), DeviceKind::cpu),
                    Catch::Contains("'seq_len' = 129"));
  CHECK_THROWS_WITH(t.validate(make_case("sqrt_m"), DeviceKind::cpu), Catch::Contains("did you mean 'sqrt_n'"));
}

TEST_CASE("every policy's gradient is store_all's", "[gradient_checkpointing][cpu]") {
  for (const char* attention : {"flash", "naive"}) {
    Case base = make_case("store_all", {{"layers", 5}, {"batch", 3}, {"seq_len", 24}});
    base.params.set("attention", std::string(attention));
    const gc::Shape s = gc::Shape::from(base, gc::Policy::store_all);
    const nn::GptWeights w = nn::GptWeights::initialize(s.model, s.weight_seed, Device::cpu());
    const nn::Batch batch = gc::make_batch(s);
    nn::GptWeights want = nn::GptWeights::zeros(s.model, Device::cpu());
    nn::forward_backward(w, batch, want, gc::options(gc::Policy::store_all, s));
    for (std::int64_t k : {1, 2, 3, 5}) {
      Case c = base;
      c.params.set("k", k);
      const gc::Shape sk = gc::Shape::from(c, gc::Policy::checkpoint_every_k);
      for (auto policy : {gc::Policy::checkpoint_every_k, gc::Policy::sqrt_n, gc::Policy::selective}) {
        INFO(attention << " " << gc::to_string(policy) << " k " << k);
        nn::GptWeights got = nn::GptWeights::zeros(s.model, Device::cpu());
        nn::forward_backward(w, batch, got, gc::options(policy, sk));
        CHECK(nn::max_relative_difference(got, want) <= gc::gradient_tolerance);
      }
    }
  }
}

TEST_CASE("the gradient difference is relative to the largest entry and fails a NaN", "[gradient_checkpointing]") {
  const gc::Shape s = gc::Shape::from(make_case("store_all"), gc::Policy::store_all);
  nn::GptWeights a = nn::GptWeights::initialize(s.model, 3, Device::cpu());
  nn::GptWeights b = nn::GptWeights::initialize(s.model, 3, Device::cpu());
  CHECK(nn::max_relative_difference(a, b) == 0.0);
  // LayerNorm weights are 1, the largest entries; one entry off by 0.5 is 0.5 relative.
  b.ln_f_weight.data<float>()[3] = 1.5f;
  CHECK(nn::max_relative_difference(a, b) == Approx(0.5 / 1.5));
  a.blocks[0].attn_c_attn_weight.data<float>()[5] = NAN;
  CHECK(std::isnan(nn::max_relative_difference(a, b)));
}

TEST_CASE("every variant's run passes its checks and reports its memory and recomputation",
          "[gradient_checkpointing][cpu]") {
  for (const char* variant : {"store_all", "checkpoint_every_k", "sqrt_n", "selective"}) {
    INFO(variant);
    std::vector<Metric> m;
    REQUIRE_NOTHROW(m = run_case(make_case(variant)));
    CHECK(metric(m, "activation_peak_bytes").value > 0);
    CHECK(metric(m, "max_rel_grad_difference").value <= gc::gradient_tolerance);
    const bool recomputes = std::string(variant) == "checkpoint_every_k" || std::string(variant) == "sqrt_n";
    CHECK(metric(m, "blocks_recomputed").value == (recomputes ? 2 : 0));
    CHECK((metric(m, "recompute_flops_analytic").value > 0) == recomputes);
    CHECK(metric(m, "recompute_flops_analytic").value < 100.0 / 3.0);
  }
}

TEST_CASE("sqrt_n keeps fewer activation bytes than store_all on an 8-layer model", "[gradient_checkpointing][cpu]") {
  const std::map<std::string, std::int64_t> eight = {{"layers", 8}, {"batch", 2}, {"seq_len", 64}};
  const double all = activation_peak(make_case("store_all", eight));
  const double sqrt_n = activation_peak(make_case("sqrt_n", eight));
  const double selective = activation_peak(make_case("selective", eight));
  INFO("store_all " << all << " B, sqrt_n " << sqrt_n << " B, selective " << selective << " B");
  CHECK(sqrt_n < all);
  CHECK(selective < all);
}

TEST_CASE("the activation peak falls from store_all through k = 4 to k = 1 on 8 layers",
          "[gradient_checkpointing][cpu]") {
  std::map<std::string, std::int64_t> eight = {{"layers", 8}, {"batch", 2}, {"seq_len", 64}};
  const double all = activation_peak(make_case("store_all", eight));
  eight["k"] = 4;
  const double k4 = activation_peak(make_case("checkpoint_every_k", eight));
  eight["k"] = 1;
  const double k1 = activation_peak(make_case("checkpoint_every_k", eight));
  INFO("store_all " << all << " B, k=4 " << k4 << " B, k=1 " << k1 << " B");
  CHECK(k1 < k4);
  CHECK(k4 < all);
}

// ---- through the CLI

TEST_CASE("the four variants' quick runs give a valid report with checks passing", "[gradient_checkpointing][cli]") {
  const json report = aiopt::test::quick_report("gradient_checkpointing", 4);
  for (const auto& res : report.at("results")) {
    CHECK(res.at("params").at("preset") == "tiny");
    CHECK(res.at("metrics").contains("activation_peak_bytes"));
  }
  CHECK(report.at("comparisons").size() == 3);
}

TEST_CASE("a k past the layers exits 2 with the reason before running", "[gradient_checkpointing][cli]") {
  auto r = run_aiopt({"bench", "--technique", "gradient_checkpointing", "--quick", "--device", "cpu", "--format",
                      "json", "--progress", "never", "--set", "k=5"});
  INFO(r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.out.empty());
  CHECK(r.err.find("'k' = 5") != std::string::npos);
}

// ---- CUDA

TEST_CASE("CUDA runs of every variant pass their checks, and checkpointing lowers their peak",
          "[gradient_checkpointing][gpu]") {
  const std::map<std::string, std::int64_t> eight = {{"layers", 8}, {"batch", 2}, {"seq_len", 64}};
  std::map<std::string, double> peaks;
  for (const char* variant : {"store_all", "checkpoint_every_k", "sqrt_n", "selective"}) {
    INFO(variant);
    std::vector<Metric> m;
    REQUIRE_NOTHROW(m = run_case(make_case(variant, eight), Device::cuda()));
    peaks[variant] = metric(m, "activation_peak_bytes").value;
  }
  CHECK(peaks["sqrt_n"] < peaks["store_all"]);
  CHECK(peaks["selective"] < peaks["store_all"]);
}

// ---- fault injection

TEST_CASE("a recomputation from a stale residual stream fails the gradient check", "[gradient_checkpointing][fault]") {
  const fault::Scope stale("gradient_checkpointing.stale_recompute");
  // Four layers: k 2 re-runs two segments of two blocks, sqrt_n (k 2) the same; k 1 re-runs every
  // block from the checkpoint before its own.
  for (const auto& [variant, k] : {std::pair{"checkpoint_every_k", 2}, std::pair{"checkpoint_every_k", 1},
                                   std::pair{"sqrt_n", 2}}) {
    const Result r = aiopt::test::run_through_runner(
        *technique, make_case(variant, {{"layers", std::int64_t{4}}, {"k", std::int64_t{k}}}));
    INFO(variant << " k " << k << ": " << r.message);
    CHECK(r.status == Status::failed);
    CHECK_THAT(r.message, Catch::Contains("max relative gradient difference"));
  }
  // store_all and selective re-run no block: the fault leaves them as they are.
  for (const char* variant : {"store_all", "selective"}) {
    const Result r = aiopt::test::run_through_runner(*technique, make_case(variant));
    INFO(variant << ": " << r.message);
    CHECK(r.status == Status::ok);
  }
}
