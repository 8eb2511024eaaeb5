// gradient_accumulation: the accumulated gradient against the large batch's (computed here
// directly with the engine), the noise-scale estimator on known norms, both variants' runs (loss
// trajectories, activation peaks, a finite positive noise scale), the quick CLI report with its
// series, bad parameters, and ([gpu]) the CUDA runs.
//
// Tolerances, and why:
//   Gradients: 1e-6 of the largest |gradient|. The same fp32 sums grouped by micro-batch, and 1/k
//   and 1/(b·T) rounded once each instead of 1/(b·k·T): ~1e-7 relative; a missing or doubled
//   micro-batch is off by 1/k.
//   Loss trajectories: the run's own check, 1e-4 nats (see gradient_accumulation.hpp).
//   Noise-scale estimator: exact inputs, double arithmetic: 1e-12 relative.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "nn/training.hpp"
#include "support/metrics.hpp"
#include "support/technique_run.hpp"
#include "techniques/gradient_accumulation/gradient_accumulation.hpp"

using namespace aiopt;
namespace ga = aiopt::gradient_accumulation;
using aiopt::test::find_metric;
using aiopt::test::metric;
using nlohmann::json;

namespace {

const std::unique_ptr<Technique> technique = make_gradient_accumulation();

// A quick case (tiny, L2 d64, micro_batch 2, k 4, 32 tokens, 2 noise batches) of 6 steps, with
// `overrides`.
Case make_case(const std::string& variant, const std::map<std::string, std::int64_t>& overrides = {},
               std::uint64_t seed = 5) {
  std::map<std::string, Value> changes = {{"steps", std::int64_t{6}}};
  for (const auto& [k, v] : overrides) changes[k] = v;
  return aiopt::test::quick_case(*technique, variant, changes, seed);
}

// Prepares, steps twice and finishes one case.
std::vector<Metric> run_case(const Case& c, const Device& device = Device::cpu(),
                             std::vector<Series>* series = nullptr) {
  return aiopt::test::run_case(*technique, c, device, 2, series);
}

}  // namespace

TEST_CASE("the technique declares its contract", "[gradient_accumulation]") {
  const Technique& t = *technique;
  CHECK(t.baseline() == "large_batch");
  std::vector<std::string> names;
  for (const auto& v : t.variants()) {
    names.push_back(v.name);
    CHECK(v.runs_on(DeviceKind::cpu));
    CHECK(v.runs_on(DeviceKind::cuda));
  }
  CHECK(names == std::vector<std::string>{"large_batch", "accumulate"});
}

TEST_CASE("k accumulated micro-batches give the large batch's gradient", "[gradient_accumulation][cpu]") {
  for (std::int64_t k : {2, 3, 4}) {
    INFO("k " << k);
    const ga::Shape s = ga::Shape::from(make_case("accumulate", {{"k", k}, {"micro_batch", 3}}));
    const nn::GptWeights w = nn::GptWeights::initialize(s.model, 9, Device::cpu());
    const nn::TokenSplit tokens = ga::load_tokens(s);
    const nn::Batch large = nn::BatchSampler(tokens.train, s.effective_batch(), s.seq_len, 4).next();

    // Directly with the engine: one pass over b·k rows, and k passes over rows [i·b, (i + 1)·b).
    nn::GptWeights want = nn::GptWeights::zeros(s.model, Device::cpu());
    nn::forward_backward(w, large, want, nn::TrainingOptions{});
    nn::GptWeights got = nn::GptWeights::zeros(s.model, Device::cpu());
    for (std::size_t i = 0; i < s.k; ++i) {
      nn::Batch micro;
      micro.batch = s.micro_batch;
      micro.seq_len = s.seq_len;
      const auto span = static_cast<std::ptrdiff_t>(s.micro_batch * s.seq_len);
      const auto first = static_cast<std::ptrdiff_t>(i) * span;
      micro.inputs.assign(large.inputs.begin() + first, large.inputs.begin() + first + span);
      micro.targets.assign(large.targets.begin() + first, large.targets.begin() + first + span);
      nn::forward_backward(w, micro, got, nn::TrainingOptions{}, 1.0f / static_cast<float>(s.k));
    }
    CHECK(nn::max_relative_difference(got, want) <= ga::gradient_tolerance);
    CHECK(nn::max_relative_difference(got, want) > 0.0);  // really two different summations

    // The technique's own step gives the same two gradients.
    nn::GptWeights step = nn::GptWeights::zeros(s.model, Device::cpu());
    ga::step_gradient(ga::Method::accumulate, w, large, s.k, step);
    CHECK(nn::max_relative_difference(step, got) == 0.0);
    ga::step_gradient(ga::Method::large_batch, w, large, s.k, step);
    CHECK(nn::max_relative_difference(step, want) == 0.0);

    // A micro-batch left out is a 1/k-sized error, far beyond the tolerance.
    nn::GptWeights partial = nn::GptWeights::zeros(s.model, Device::cpu());
    for (std::size_t i = 1; i < s.k; ++i)
      nn::forward_backward(w, ga::rows_of(large, i * s.micro_batch, s.micro_batch), partial, nn::TrainingOptions{},
                           1.0f / static_cast<float>(s.k));
    CHECK(nn::max_relative_difference(partial, want) > 1e-3);
  }
}

TEST_CASE("the noise-scale estimator recovers the gradient norm and the noise trace from two batch sizes",
          "[gradient_accumulation]") {
  // |G|² = 2, tr Σ = 10: E|G_b|² = 2 + 10/b, so b = 2 gives 7 and B = 8 gives 3.25.
  const ga::NoiseScale n = ga::noise_scale(7.0, 2.0, 3.25, 8.0);
  CHECK(n.gradient_norm_sq == Approx(2.0).epsilon(1e-12));
  CHECK(n.trace_sigma == Approx(10.0).epsilon(1e-12));
  CHECK(n.simple == Approx(5.0).epsilon(1e-12));
}

TEST_CASE("bad parameters are input errors that say what is allowed", "[gradient_accumulation]") {
  const Technique& t = *technique;
  CHECK_THROWS_WITH(t.validate(make_case("accumulate", {{"seq_len", 200}}), DeviceKind::cpu),
                    Catch::Contains("'seq_len' = 200") && Catch::Contains("context of 128"));
  CHECK_THROWS_WITH(t.validate(make_case("accumulate", {{"k", 0}}), DeviceKind::cpu), Catch::Contains("parameter 'k': value '0' is out of range"));
  CHECK_THROWS_WITH(t.validate(make_case("accumulate", {{"micro_batch", 0}}), DeviceKind::cpu),
                    Catch::Contains("parameter 'micro_batch': value '0' is out of range"));
  CHECK_THROWS_WITH(t.validate(make_case("acumulate"), DeviceKind::cpu), Catch::Contains("did you mean 'accumulate'"));
}

TEST_CASE("both variants pass their checks, and accumulating keeps fewer activation bytes",
          "[gradient_accumulation][cpu]") {
  std::vector<Series> series;
  const std::vector<Metric> large = run_case(make_case("large_batch"));
  const std::vector<Metric> acc = run_case(make_case("accumulate"), Device::cpu(), &series);
  for (const auto* m : {&large, &acc}) {
    CHECK(metric(*m, "max_rel_grad_difference").value <= ga::gradient_tolerance);
    CHECK(metric(*m, "max_loss_difference").value <= ga::loss_tolerance);
    const double noise = metric(*m, "noise_scale_simple").value;
    CHECK(std::isfinite(noise));
    CHECK(noise > 0.0);
    CHECK(metric(*m, "gradient_norm_sq").value > 0.0);
    CHECK(metric(*m, "gradient_noise_trace").value > 0.0);
  }
  CHECK(metric(large, "max_rel_grad_difference").value == 0.0);
  const double peak_large = metric(large, "activation_peak_bytes").value;
  const double peak_acc = metric(acc, "activation_peak_bytes").value;
  INFO("activation peak: large_batch " << peak_large << " B, accumulate " << peak_acc << " B");
  CHECK(peak_acc < peak_large);
  // The same weights after the same updates: the trajectories end on the same loss.
  CHECK(std::fabs(metric(acc, "final_train_loss").value - metric(large, "final_train_loss").value) <=
        ga::loss_tolerance);

  REQUIRE(series.size() == 2);
  CHECK(series[0].name == "train_loss");
  CHECK(series[0].y.size() == 6);
  CHECK(series[0].y.back() < series[0].y.front());  // it trains
  CHECK(series[1].name == "gradient_norm_sq_by_batch");
  // b = 2 and k = 4: batch sizes 2, 4, 8 sequences; a larger batch averages the noise down.
  CHECK(series[1].x == std::vector<double>{2, 4, 8});
  CHECK(series[1].y[0] > series[1].y[2]);
}

TEST_CASE("with k = 1 the two ways are one and no noise scale is reported", "[gradient_accumulation][cpu]") {
  const std::vector<Metric> m = run_case(make_case("accumulate", {{"k", 1}}));
  CHECK(metric(m, "max_rel_grad_difference").value == 0.0);
  CHECK(metric(m, "max_loss_difference").value == 0.0);
  CHECK(find_metric(m, "noise_scale_simple") == nullptr);
}

// ---- through the CLI

TEST_CASE("the two variants' quick runs give a valid report with the loss curve", "[gradient_accumulation][cli]") {
  const json report = aiopt::test::quick_report("gradient_accumulation", 2);
  for (const auto& res : report.at("results")) {
    CHECK(res.at("params").at("preset") == "tiny");
    CHECK(res.at("params").at("steps") == 10);
    CHECK(res.at("metrics").contains("noise_scale_simple"));
    CHECK(res.at("series").at("train_loss").at("y").size() == 10);
  }
  CHECK(report.at("comparisons").size() == 1);
}

// ---- CUDA

TEST_CASE("CUDA runs of both variants pass their checks", "[gradient_accumulation][gpu]") {
  const std::vector<Metric> large = run_case(make_case("large_batch"), Device::cuda());
  const std::vector<Metric> acc = run_case(make_case("accumulate"), Device::cuda());
  CHECK(metric(acc, "max_rel_grad_difference").value <= ga::gradient_tolerance);
  CHECK(metric(acc, "max_loss_difference").value <= ga::loss_tolerance);
  CHECK(metric(acc, "activation_peak_bytes").value < metric(large, "activation_peak_bytes").value);
  CHECK(std::isfinite(metric(acc, "noise_scale_simple").value));
}

// ---- fault injection

TEST_CASE("micro-batch gradients summed without the 1/k fail the gradient check", "[gradient_accumulation][fault]") {
  const fault::Scope no_average("gradient_accumulation.no_average");
  const Result r = aiopt::test::run_through_runner(*technique, make_case("accumulate"));
  INFO(r.message);
  CHECK(r.status == Status::failed);
  // k = 4 micro-batches summed: the gradient is 4× large_batch's, 3 of its largest entry off.
  CHECK_THAT(r.message, Catch::Contains("max relative gradient difference 3"));
}
