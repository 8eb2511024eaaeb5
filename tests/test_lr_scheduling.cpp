// lr_scheduling: the case's parameters and their errors, the warmup parameter, the smoothed loss,
// steps to target and divergence on known histories, every schedule's quick run with its LR
// series equal to LrSchedule::at, a high peak LR with and without warmup, and the metrics over
// several seeds equal to the means of single-seed runs.
//
// Tolerances, and why:
//   The LR series must equal LrSchedule::at exactly: the trainer records the float at() returns.
//   High peak LR (tiny, batch 4 × 64, 300 steps): measured first (README.md "A high peak LR
//   without warmup"). Nothing diverges on this pre-LN model with AdamW and clipping, and whether
//   warmup helps at peak 0.1 depends on the seed (it wins on seeds 1, 3, 5, loses on 2, 4). What
//   holds on all five seeds: both end at least 0.40 nats above constant at the default peak 3e-3
//   (seed 5 here: constant 0.1 → 2.917, warmup_cosine 0.1 → 2.260, constant 3e-3 → 1.863). The
//   test asserts half that, 0.2: the runs are deterministic, the margin is for another BLAS
//   build's summation order.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/fault.hpp"
#include "nn/lr_schedule.hpp"
#include "support/metrics.hpp"
#include "support/technique_run.hpp"
#include "techniques/lr_scheduling/lr_scheduling.hpp"

using namespace aiopt;
namespace ls = aiopt::lr_scheduling;
using aiopt::test::find_series;
using aiopt::test::metric;
using nlohmann::json;

namespace {

const std::unique_ptr<Technique> technique = make_lr_scheduling();

// The quick parameters: tiny, batch 4 × 64 tokens, 150 steps.
Case make_case(const std::string& variant, const std::map<std::string, Value>& changes = {}) {
  return aiopt::test::quick_case(*technique, variant, changes, 5);
}

std::vector<nn::StepRecord> history(const std::vector<double>& losses) {
  std::vector<nn::StepRecord> h(losses.size());
  for (std::size_t i = 0; i < losses.size(); ++i) {
    h[i].step = i + 1;
    h[i].loss = losses[i];
  }
  return h;
}

}  // namespace

// ---- the case

TEST_CASE("the technique declares its contract", "[lr_scheduling]") {
  const Technique& t = *technique;
  CHECK(t.name() == "lr_scheduling");
  CHECK(t.trade_off() == "training time vs final quality");
  CHECK(t.baseline() == "constant");
  std::vector<std::string> names;
  for (const auto& v : t.variants()) names.push_back(v.name);
  CHECK(names == nn::schedule_names());
}

TEST_CASE("warmup is a fraction of the budget below 1 and steps from 1 on", "[lr_scheduling]") {
  CHECK(ls::warmup_steps(0.1, 60) == 6);
  CHECK(ls::warmup_steps(0.0, 60) == 0);
  CHECK(ls::warmup_steps(0.25, 10) == 3);  // 2.5 rounds away from zero
  CHECK(ls::warmup_steps(1.0, 60) == 1);
  CHECK(ls::warmup_steps(60.0, 60) == 60);
  CHECK_THROWS_WITH(ls::warmup_steps(61.0, 60), Catch::Contains("'warmup' = 61"));
  CHECK_THROWS_AS(ls::warmup_steps(2.5, 60), InputError);
  CHECK_THROWS_AS(ls::warmup_steps(-0.1, 60), InputError);
}

TEST_CASE("each variant trains under its own schedule from the parameters", "[lr_scheduling]") {
  for (const auto& name : nn::schedule_names()) {
    const nn::TrainConfig c = ls::train_config(make_case(name, {{"peak_lr", 0.01}, {"min_lr", 0.001}}));
    CHECK(nn::to_string(c.schedule.kind) == name);
    CHECK(c.schedule.peak_lr == 0.01f);
    CHECK(c.schedule.min_lr == 0.001f);
    CHECK(c.schedule.total_steps == 150);
    CHECK(c.schedule.warmup_steps == 15);
    CHECK(c.schedule.step_every == 37);
  }
}

TEST_CASE("bad parameters are input errors naming the parameter", "[lr_scheduling]") {
  const Technique& t = *technique;
  CHECK_THROWS_WITH(t.validate(make_case("constant", {{"min_lr", 1.0}}), DeviceKind::cpu),
                    Catch::Contains("'min_lr' = 1") && Catch::Contains("peak_lr"));
  CHECK_THROWS_WITH(t.validate(make_case("constant", {{"peak_lr", 0.0}}), DeviceKind::cpu),
                    Catch::Contains("'peak_lr' = 0"));
  CHECK_THROWS_WITH(t.validate(make_case("constant", {{"seq_len", std::int64_t{200}}}), DeviceKind::cpu),
                    Catch::Contains("'seq_len' = 200"));
  CHECK_THROWS_WITH(t.validate(make_case("cosine", {{"target_loss", 0.0}}), DeviceKind::cpu),
                    Catch::Contains("'target_loss' = 0"));
  CHECK_THROWS_WITH(t.validate(make_case("wsd", {{"warmup", 200.0}}), DeviceKind::cpu), Catch::Contains("'warmup'"));
  CHECK_THROWS_WITH(t.validate(make_case("cosin"), DeviceKind::cpu), Catch::Contains("did you mean 'cosine'"));
  CHECK_THROWS_WITH(t.validate(make_case("constant", {{"vocab", std::int64_t{100}}}), DeviceKind::cpu),
                    Catch::Contains("'vocab' = 100"));
}

// ---- outcomes of a budget

TEST_CASE("the smoothed loss is a trailing mean of up to ten steps", "[lr_scheduling]") {
  std::vector<double> losses;
  for (int i = 0; i < 15; ++i) losses.push_back(static_cast<double>(i));
  const std::vector<double> s = ls::smoothed_losses(history(losses));
  REQUIRE(s.size() == 15);
  CHECK(s[0] == 0.0);
  CHECK(s[3] == Approx(1.5));   // mean of 0..3
  CHECK(s[9] == Approx(4.5));   // mean of 0..9
  CHECK(s[14] == Approx(9.5));  // mean of 5..14
}

TEST_CASE("steps to target is the first smoothed step at or below it, budget + 1 when none", "[lr_scheduling]") {
  const auto h = history({5, 4, 3, 2, 1});
  // Smoothed: 5, 4.5, 4, 3.5, 3.
  CHECK(ls::steps_to_target(h, 4.0) == 3.0);
  CHECK(ls::steps_to_target(h, 5.0) == 1.0);
  CHECK(ls::steps_to_target(h, 2.0) == 6.0);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(ls::steps_to_target(history({5, nan, 1, 1}), 4.0) == 5.0);
}

TEST_CASE("a run diverged when a loss is not finite or it ends above its start", "[lr_scheduling]") {
  CHECK_FALSE(ls::diverged(history({5, 4, 3})));
  CHECK(ls::diverged(history({5, 7, 8, 9})));  // smoothed 7.25 > 5
  CHECK(ls::diverged(history({5, 4, std::numeric_limits<double>::infinity(), 3})));
  CHECK(ls::diverged(history({5, std::numeric_limits<double>::quiet_NaN(), 3})));
}

// ---- runs

TEST_CASE("every schedule's quick run reports its metrics and its LR series is LrSchedule::at", "[lr_scheduling][cpu]") {
  const Technique& t = *technique;
  for (const auto& name : nn::schedule_names()) {
    INFO(name);
    const Case c = make_case(name, {{"seeds", std::int64_t{1}}});  // one seed: the seeds have their own test
    const nn::TrainConfig config = ls::train_config(c);
    std::vector<Series> series;
    const std::vector<Metric> m = aiopt::test::run_case(t, c, Device::cpu(), 1, &series);
    const Series& lr = find_series(series, "lr");
    REQUIRE(lr.y.size() == 150);
    for (std::size_t i = 0; i < lr.y.size(); ++i) {
      CHECK(lr.x[i] == static_cast<double>(i + 1));
      CHECK(lr.y[i] == static_cast<double>(config.schedule.at(i)));
    }
    CHECK(find_series(series, "train_loss").y.size() == 150);
    CHECK(find_series(series, "val_loss").y.size() == 10);
    const double val = metric(m, "final_val_loss").value;
    CHECK(std::isfinite(val));
    CHECK(val < metric(m, "initial_train_loss").value);
    CHECK(metric(m, "diverged").value == 0.0);
    const double to_target = metric(m, "steps_to_target").value;
    CHECK((to_target >= 1 && to_target <= 151));
    CHECK(std::isfinite(metric(m, "final_train_loss").value));
  }
}

TEST_CASE("a high peak LR ends much worse than a moderate one, with or without warmup, and diverges in neither", "[lr_scheduling][cpu]") {
  const Technique& t = *technique;
  auto final_val = [&](const std::string& variant, double peak) {
    auto run = t.prepare(
        make_case(variant, {{"steps", std::int64_t{300}}, {"peak_lr", peak}, {"seeds", std::int64_t{1}}}), Device::cpu());
    const std::vector<Metric> m = run->finish();
    CHECK(metric(m, "diverged").value == 0.0);
    return metric(m, "final_val_loss").value;
  };
  const double constant_high = final_val("constant", 0.1);
  const double warmup_high = final_val("warmup_cosine", 0.1);
  const double constant_moderate = final_val("constant", 3e-3);
  INFO("final val loss: constant at 0.1 " << constant_high << ", warmup_cosine at 0.1 " << warmup_high
                                          << ", constant at 3e-3 " << constant_moderate);
  CHECK(constant_high > constant_moderate + 0.2);
  CHECK(warmup_high > constant_moderate + 0.2);
}

TEST_CASE("seeds trains one run per seed and the metrics are the single-seed runs' means", "[lr_scheduling][cpu]") {
  // warmup_cosine against the constant baseline, 30 steps: seeds = 2 from seed 5 against seeds = 1
  // at seeds 5 and 6. The runs are deterministic, so the means agree to double rounding.
  const Technique& t = *technique;
  auto run = [&](const std::string& variant, std::int64_t seeds, std::uint64_t seed, std::vector<Series>* series) {
    Case c = make_case(variant, {{"steps", std::int64_t{30}}, {"seeds", seeds}});
    c.seed = seed;
    return aiopt::test::run_case(t, c, Device::cpu(), 1, series);
  };
  std::vector<Series> two_series;
  const std::vector<Metric> two = run("warmup_cosine", 2, 5, &two_series);
  const std::vector<Metric> five = run("warmup_cosine", 1, 5, nullptr), six = run("warmup_cosine", 1, 6, nullptr);
  const std::vector<Metric> base5 = run("constant", 1, 5, nullptr), base6 = run("constant", 1, 6, nullptr);
  for (const char* name : {"final_val_loss", "final_train_loss", "steps_to_target"}) {
    INFO(name);
    const double a = metric(five, name).value, b = metric(six, name).value;
    CHECK(metric(two, name).value == Approx((a + b) / 2).epsilon(1e-12));
    CHECK(metric(two, std::string(name) + "_min").value == std::min(a, b));
    CHECK(metric(two, std::string(name) + "_max").value == std::max(a, b));
    CHECK(metric(two, std::string(name) + "_std").value == Approx(std::fabs(a - b) / std::sqrt(2.0)).epsilon(1e-9));
    CHECK_FALSE(metric(two, std::string(name) + "_std").compared);
    // One seed: no spread and no verdict.
    CHECK(aiopt::test::find_metric(five, std::string(name) + "_std") == nullptr);
  }
  // Two seeds of real training differ.
  CHECK(metric(two, "final_val_loss_std").value > 0);
  CHECK(aiopt::test::find_metric(five, "final_val_loss_within_noise") == nullptr);
  // The verdict against constant from the same seeds: the mean paired difference, and whether it is within noise.
  const double d5 = metric(five, "final_val_loss").value - metric(base5, "final_val_loss").value;
  const double d6 = metric(six, "final_val_loss").value - metric(base6, "final_val_loss").value;
  CHECK(metric(two, "final_val_loss_vs_baseline").value == Approx((d5 + d6) / 2).epsilon(1e-9));
  // t_{0.975, 1} · s_d / √2 with s_d = |d5 − d6| / √2.
  const double noise = 12.7062 * std::fabs(d5 - d6) / 2;
  CHECK(metric(two, "final_val_loss_vs_baseline_noise").value == Approx(noise).epsilon(1e-4));
  CHECK(metric(two, "final_val_loss_within_noise").value == (std::fabs(d5 + d6) / 2 <= noise ? 1.0 : 0.0));
  CHECK(aiopt::test::find_metric(two, "steps_to_target_within_noise"));
  const Series& by_seed = find_series(two_series, "final_val_loss_by_seed");
  CHECK(by_seed.x == std::vector<double>{5, 6});
  CHECK(by_seed.y == std::vector<double>{metric(five, "final_val_loss").value, metric(six, "final_val_loss").value});
  // The curves are the first seed's.
  CHECK(find_series(two_series, "train_loss").y.size() == 30);
}

TEST_CASE("the baseline is within noise of itself", "[lr_scheduling][cpu]") {
  const std::vector<Metric> m = aiopt::test::run_case(
      *technique, make_case("constant", {{"steps", std::int64_t{20}}, {"seeds", std::int64_t{2}}}), Device::cpu(), 1);
  CHECK(metric(m, "final_val_loss_vs_baseline").value == 0.0);
  CHECK(metric(m, "final_val_loss_within_noise").value == 1.0);
}

// ---- through the CLI

TEST_CASE("the eight schedules' quick runs give a valid report with their curves", "[lr_scheduling][cli]") {
  const json report = aiopt::test::quick_report("lr_scheduling", 8);
  for (const auto& res : report.at("results")) {
    CHECK(res.at("params").at("steps") == 150);
    CHECK(res.at("metrics").contains("steps_to_target"));
    CHECK(res.at("series").at("lr").at("y").size() == 150);
  }
}

// ---- CUDA

TEST_CASE("a CUDA case without a usable GPU is unavailable, with the reason", "[lr_scheduling]") {
  const Technique& t = *technique;
  if (!cuda::unavailable_reason().empty())
    CHECK_THROWS_AS(t.prepare(make_case("wsd"), Device::cuda()), DeviceUnavailable);
  CHECK_THROWS_AS(t.prepare(make_case("wsd"), Device::cuda(cuda::device_count())), DeviceUnavailable);
}

TEST_CASE("a CUDA run records the same LR series and trains", "[lr_scheduling][gpu]") {
  const Case c = make_case("warmup_cosine", {{"seeds", std::int64_t{1}}});
  const nn::TrainConfig config = ls::train_config(c);
  auto run = technique->prepare(c, Device::cuda());
  run->step();
  std::vector<Metric> m;
  REQUIRE_NOTHROW(m = run->finish());
  const std::vector<Series> series = run->series();
  const Series& lr = find_series(series, "lr");
  REQUIRE(lr.y.size() == 150);
  for (std::size_t i = 0; i < lr.y.size(); ++i) CHECK(lr.y[i] == static_cast<double>(config.schedule.at(i)));
  CHECK(metric(m, "diverged").value == 0.0);
  CHECK(metric(m, "final_val_loss").value < metric(m, "initial_train_loss").value);
}

// ---- the LR check

TEST_CASE("the reference LR check passes the schedule and fails a shifted or warmup-less one", "[lr_scheduling]") {
  const nn::LrSchedule s = ls::schedule(make_case("warmup_cosine", {{"steps", std::int64_t{40}}}), 40);
  REQUIRE(s.warmup_steps == 4);
  std::vector<nn::StepRecord> h(40);
  for (std::size_t i = 0; i < h.size(); ++i) {
    h[i].step = i + 1;
    h[i].lr = s.at(i);
    h[i].loss = 3.0;
  }
  CHECK_NOTHROW(ls::check_run("warmup_cosine", s, h));
  std::vector<nn::StepRecord> shifted = h;
  for (std::size_t i = 0; i < h.size(); ++i) shifted[i].lr = s.at(i + 1);
  CHECK_THROWS_WITH(ls::check_run("warmup_cosine", s, shifted), Catch::Contains("step 1 was given LR"));
  std::vector<nn::StepRecord> nan_loss = h;
  nan_loss[7].loss = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(ls::check_run("warmup_cosine", s, nan_loss), Catch::Contains("step 8's training loss"));
  h.pop_back();
  CHECK_THROWS_WITH(ls::check_run("warmup_cosine", s, h), Catch::Contains("39 steps recorded"));
}

TEST_CASE("a skipped warmup or an LR read one step ahead fails the run's LR check", "[lr_scheduling][fault]") {
  const std::map<std::string, Value> short_budget = {{"steps", std::int64_t{30}}};
  {
    const fault::Scope skipped("lr_scheduling.warmup_skipped");
    const Result r = aiopt::test::run_through_runner(*technique, make_case("warmup_cosine", short_budget));
    INFO(r.message);
    CHECK(r.status == Status::failed);
    CHECK_THAT(r.message, Catch::Contains("step 1 was given LR 0.003") && Catch::Contains("W = 3"));
  }
  for (const char* variant : {"step", "cosine", "wsd"}) {
    const fault::Scope ahead("lr_scheduling.off_by_one");
    const Result r = aiopt::test::run_through_runner(*technique, make_case(variant, short_budget));
    INFO(variant << ": " << r.message);
    CHECK(r.status == Status::failed);
    CHECK_THAT(r.message, Catch::Contains("was given LR"));
  }
  // A constant LR has no step to be off by: the fault changes nothing and the run passes.
  const fault::Scope ahead("lr_scheduling.off_by_one");
  const Result r = aiopt::test::run_through_runner(*technique, make_case("constant", short_budget));
  INFO(r.message);
  CHECK(r.status == Status::ok);
}
