// The runner: what it records of a case — samples under the stopping rule, the memory of the
// work (not of the checks), roofline rates from declared work — and how failures are recorded.
#include <catch2/catch.hpp>

#include <stdexcept>

#include "core/error.hpp"
#include "core/memory.hpp"
#include "harness/runner.hpp"

using namespace aiopt;

namespace {

// A technique whose behaviour each test chooses through the variant name.
class Probe : public Technique {
 public:
  std::string name() const override { return "probe"; }
  std::string summary() const override { return "a fake technique for runner tests"; }
  std::string trade_off() const override { return "none"; }
  std::vector<ParamSpec> params() const override {
    ParamSpec n;
    n.name = "n";
    n.type = ParamType::integer;
    n.default_value = std::int64_t{1024};
    return {n};
  }
  std::vector<Variant> variants() const override {
    const std::vector<DeviceKind> both{DeviceKind::cpu, DeviceKind::cuda};
    return {{"ok", "", true, both}, {"wrong", "", false, both}, {"throws", "", false, both},
            {"absent", "", false, both}};
  }

  struct ProbeRun : Run {
    ProbeRun(std::size_t n, std::string variant) : input(Device::cpu(), n), variant(std::move(variant)) {}
    void step() override {
      memory::Buffer<float> scratch(Device::cpu(), input.size());  // the work's own temporary
      for (std::size_t i = 0; i < input.size(); ++i) scratch[i] = static_cast<float>(i);
      ++steps;
    }
    Work work() const override { return {input.bytes() * 2.0, static_cast<double>(input.size())}; }
    std::vector<Metric> finish() override {
      memory::Buffer<float> reference(Device::cpu(), input.size() * 10);  // a check's reference
      if (variant == "wrong") throw CheckFailed("off by one");
      return {{"steps", static_cast<double>(steps), "", Better::lower}};
    }
    memory::Buffer<float> input;
    std::string variant;
    int steps = 0;
  };

  std::unique_ptr<Run> prepare(const Case& c, const Device&) const override {
    if (c.variant == "throws") throw std::runtime_error("the workload broke");
    if (c.variant == "absent") throw DeviceUnavailable("no such accelerator here");
    return std::make_unique<ProbeRun>(static_cast<std::size_t>(c.params.integer("n")), c.variant);
  }
};

PlannedCase planned(const std::string& variant, std::int64_t n = 1024) {
  PlannedCase p;
  p.c.technique = "probe";
  p.c.variant = variant;
  p.c.params.set("n", n);
  p.c.seed = 7;
  p.device = DeviceKind::cpu;
  p.baseline = variant == "ok";
  return p;
}

RunSettings fast_settings() {
  RunSettings s;
  s.sampling.warmup = 2;
  s.sampling.min_samples = 7;
  s.sampling.min_time_s = 0;
  s.sampling.max_noise = 1e9;
  s.sampling.timeout_s = 30;
  s.threads = 1;
  return s;
}

}  // namespace

TEST_CASE("an ok case keeps every sample, the work's memory peak and roofline rates", "[runner]") {
  const Probe probe;
  const Result r = run_case(probe, planned("ok", 4096), fast_settings());
  INFO(r.message);
  REQUIRE(r.status == Status::ok);
  REQUIRE(r.timing);
  CHECK(r.timing->count == 7);
  CHECK(r.timing->samples.size() == 7);
  CHECK(r.timing->warmup == 2);
  CHECK(r.timing->min <= r.timing->median);
  CHECK(r.timing->median <= r.timing->max);
  // The input and one step's scratch were live at once; finish()'s reference is not counted.
  REQUIRE(r.memory);
  CHECK(r.memory->peak_bytes == 2 * 4096 * sizeof(float));
  const Metric* steps = r.metric("steps");
  REQUIRE(steps);
  CHECK(steps->value == 9);  // 2 warmup + 7 samples
  const Metric* gbs = r.metric("achieved_bandwidth");
  REQUIRE(gbs);
  CHECK(gbs->value == Approx(2.0 * 4096 * sizeof(float) / (r.timing->median * 1e-3) / 1e9));
  CHECK_FALSE(gbs->compared);  // efficiency figures are not weighed against the baseline
  REQUIRE(r.metric("bandwidth_fraction"));
  CHECK_FALSE(r.metric("bandwidth_fraction")->compared);
  REQUIRE(r.metric("achieved_gflops"));
  CHECK_FALSE(r.metric("achieved_gflops")->compared);
  CHECK(steps->compared);
  CHECK(r.repro.find("--variant ok") != std::string::npos);
  CHECK(r.repro.find("--set n=4096") != std::string::npos);
  CHECK(r.repro.find("--seed 7") != std::string::npos);
}

TEST_CASE("a failed check is a failed case with the message, and no timing", "[runner]") {
  const Probe probe;
  const Result r = run_case(probe, planned("wrong"), fast_settings());
  CHECK(r.status == Status::failed);
  CHECK(r.message.find("off by one") != std::string::npos);
  CHECK_FALSE(r.timing);
  CHECK(r.metrics.empty());
}

TEST_CASE("a throwing workload fails, an absent device skips, both with the reason", "[runner]") {
  const Probe probe;
  const Result thrown = run_case(probe, planned("throws"), fast_settings());
  CHECK(thrown.status == Status::failed);
  CHECK(thrown.message == "the workload broke");
  const Result absent = run_case(probe, planned("absent"), fast_settings());
  CHECK(absent.status == Status::skipped);
  CHECK(absent.message == "no such accelerator here");
}

TEST_CASE("the timeout ends sampling of a slow case", "[runner]") {
  const Probe probe;
  RunSettings s = fast_settings();
  s.sampling.min_samples = 1000000;
  s.sampling.timeout_s = 0.05;
  const Result r = run_case(probe, planned("ok", 1 << 16), s);
  REQUIRE(r.status == Status::ok);
  CHECK(r.timing->count >= 1);
  CHECK(r.timing->count < 1000000);
}

TEST_CASE("the case record identifies a case the way reports key it", "[runner]") {
  const Result a = case_record(planned("ok", 16));
  const Result b = case_record(planned("ok", 32));
  CHECK(a.key() != b.key());
  CHECK(a.case_key() == case_record(planned("wrong", 16)).case_key());
  CHECK(a.device == "cpu");
  CHECK(a.params.at("n") == 16);
}
