// The runner: what it records of a case — samples under the stopping rule (batched for short
// steps), the machine's canary speed, the memory of the
// work (not of the checks), roofline rates and the memory level from declared work, the repro
// command — and how failures are recorded.
#include <catch2/catch.hpp>

#include <csignal>
#include <stdexcept>
#include <vector>

#include "core/error.hpp"
#include "core/memory.hpp"
#include "harness/interrupt.hpp"
#include "harness/memory_level.hpp"
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
            {"absent", "", false, both}, {"stops", "", false, both}};
  }

  struct ProbeRun : Run {
    ProbeRun(std::size_t n, std::string variant) : input(Device::cpu(), n), variant(std::move(variant)) {}
    void step() override {
      memory::Buffer<float> scratch(Device::cpu(), input.size());  // the work's own temporary
      for (std::size_t i = 0; i < input.size(); ++i) scratch[i] = static_cast<float>(i);
      ++steps;
      if (variant == "stops" && steps == 3) request_stop(SIGTERM);  // as a signal mid-sampling would
    }
    Work work() const override {
      return {input.bytes() * 2.0, static_cast<double>(input.size()), static_cast<double>(input.bytes())};
    }
    std::vector<Metric> finish() override {
      memory::Buffer<float> reference(Device::cpu(), input.size() * 10);  // a check's reference
      if (variant == "wrong") throw CheckFailed("off by one");
      return {{"steps", static_cast<double>(steps), "", Better::lower}};
    }
    memory::Buffer<float> input;
    std::string variant;
    int steps = 0;
  };

  std::unique_ptr<Run> start(const Case& c, const Device&) const override {
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
  CHECK(r.timing->noise_known);
  CHECK(r.timing->samples.size() == 7);
  CHECK(r.timing->warmup == 2);
  // A step of microseconds is timed in batches of at least 1 ms.
  const std::size_t batch = r.timing->steps_per_sample;
  CHECK(batch > 1);
  CHECK(r.timing->median * 1e-3 * static_cast<double>(batch) >= 0.5 * min_sample_seconds);
  CHECK(r.timing->min <= r.timing->median);
  CHECK(r.timing->median <= r.timing->max);
  // The input and one step's scratch were live at once; finish()'s reference is not counted.
  REQUIRE(r.memory);
  CHECK(r.memory->peak_bytes == 2 * 4096 * sizeof(float));
  const Metric* steps = r.metric("steps");
  REQUIRE(steps);
  // 2 warmup steps, the growing batches that sized the sample (at least one step, none larger
  // than the final batch), then 7 samples of `batch` steps.
  const double sampled = 2 + 7 * static_cast<double>(batch);
  CHECK(steps->value >= sampled + 1);
  CHECK(steps->value <= sampled + 10 * static_cast<double>(batch));
  REQUIRE(r.canary_gflops);
  CHECK(*r.canary_gflops > 0);
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

TEST_CASE("a sample lasts at least 1 ms: short steps are batched up to 10000 to a sample", "[runner]") {
  // A step of fixed length; each call's count is recorded.
  std::vector<std::size_t> asked;
  const auto steady = [&asked](double step_s) {
    asked.clear();
    return [&asked, step_s](std::size_t n) {
      asked.push_back(n);
      return step_s * static_cast<double>(n);
    };
  };
  CHECK(steps_per_sample(steady(2e-3)) == 1);
  CHECK(asked == std::vector<std::size_t>{1});
  CHECK(steps_per_sample(steady(1e-3)) == 1);
  const std::size_t gemv = steps_per_sample(steady(2e-6));
  CHECK(gemv * 2e-6 >= 1e-3);
  CHECK(gemv * 2e-6 <= 1.2e-3);
  CHECK(steps_per_sample(steady(1e-9)) == 10000);
  CHECK(steps_per_sample(steady(0.0)) == 10000);  // a clock that reads nothing: the cap, not a loop

  // A cold first step (10x the rest) does not leave the batch short: the count grows until a
  // batch measures long enough.
  asked.clear();
  const std::size_t warmed = steps_per_sample([&asked](std::size_t n) {
    asked.push_back(n);
    return n == 1 ? 1e-4 : 1e-5 * static_cast<double>(n);
  });
  CHECK(asked.size() >= 3);
  CHECK(warmed * 1e-5 >= 1e-3);
}

TEST_CASE("with --flush-cache every sample times one step, cold", "[runner]") {
  const Probe probe;
  RunSettings s = fast_settings();
  s.sampling.flush_cache = true;
  const Result r = run_case(probe, planned("ok", 4096), s);
  REQUIRE(r.status == Status::ok);
  CHECK(r.timing->steps_per_sample == 1);
  CHECK(r.metric("steps")->value == 2 + 7);
}

TEST_CASE("a stop request ends the case in progress as interrupted without timing", "[runner]") {
  const Probe probe;
  {
    const StopOnSignals handlers;  // clears the request when it goes
    request_stop(SIGINT);
    const Result before = run_case(probe, planned("ok"), fast_settings());
    CHECK(before.status == Status::interrupted);
    CHECK(before.message == "interrupted by SIGINT before the case started");
  }
  CHECK_FALSE(stop_requested());
  const StopOnSignals handlers;
  const Result during = run_case(probe, planned("stops"), fast_settings());
  CHECK(during.status == Status::interrupted);
  CHECK(during.message == "interrupted by SIGTERM while the case was sampled");
  CHECK_FALSE(during.timing);
  CHECK(during.metrics.empty());
}

TEST_CASE("peak RSS is measured from each case's start and not from the process's", "[runner]") {
  const Probe probe;
  // 2^24 floats: every step fills a 64 MiB scratch (the input is allocated but never touched, so
  // it takes no resident pages).
  const Result big = run_case(probe, planned("ok", std::int64_t{1} << 24), fast_settings());
  const Result small = run_case(probe, planned("ok", 1024), fast_settings());
  REQUIRE(big.memory);
  REQUIRE(small.memory);
  if (!big.memory->peak_rss_bytes) {
    WARN("skipped: this OS does not let a process reset its peak RSS (/proc/self/clear_refs)");
    return;
  }
  constexpr std::size_t mib = std::size_t{1} << 20;
  CHECK(*big.memory->peak_rss_bytes >= 64 * mib);
  REQUIRE(small.memory->peak_rss_bytes);
  // The big case's buffers went back to the OS; a peak since the process began would keep them.
  CHECK(*small.memory->peak_rss_bytes + 48 * mib < *big.memory->peak_rss_bytes);
}

TEST_CASE("a case estimated past the case-time limit is skipped with the estimate unless forced", "[runner]") {
  const Probe probe;
  RunSettings s = fast_settings();
  // The probe declares 8 bytes and 1 FLOP per element: 2^20 elements take microseconds at any
  // peak, more than a limit of a nanosecond.
  s.sampling.max_case_s = 1e-9;
  const Result skipped = run_case(probe, planned("ok", std::int64_t{1} << 20), s);
  CHECK(skipped.status == Status::skipped);
  CHECK_THAT(skipped.message, Catch::StartsWith("estimated to take at least") &&
                                  Catch::Contains("10 steps of at least") && Catch::Contains("GB at the measured") &&
                                  Catch::Contains("past --max-case-time 0 s; --force runs it"));
  CHECK_FALSE(skipped.timing);
  s.sampling.force = true;
  const Result forced = run_case(probe, planned("ok", std::int64_t{1} << 20), s);
  CHECK(forced.status == Status::ok);
  CHECK_THAT(forced.repro, Catch::Contains("--max-case-time 1e-09 --force"));
  // Under the default limit the same case runs.
  CHECK(run_case(probe, planned("ok", std::int64_t{1} << 20), fast_settings()).status == Status::ok);
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
  CHECK_FALSE(r.timing->noise_known);  // cut below its minimum count: too few samples to tell
}

TEST_CASE("the case record identifies a case the way reports key it", "[runner]") {
  const Result a = case_record(planned("ok", 16));
  const Result b = case_record(planned("ok", 32));
  CHECK(a.key() != b.key());
  CHECK(a.case_key() == case_record(planned("wrong", 16)).case_key());
  CHECK(a.device == "cpu");
  CHECK(a.params.at("n") == 16);
}

TEST_CASE("a working set fits the smallest level that holds it, else DRAM", "[runner]") {
  constexpr double KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
  // This machine's host: 48 KiB L1d, 1 MiB L2, 260 MiB L3.
  const std::vector<MemoryLevel> host{{"L1d", 48 << 10}, {"L2", 1 << 20}, {"L3", 260u << 20}, {"DRAM", 8ull << 30}};
  CHECK(fitting_level(4 * KiB, host).name == "L1d");
  CHECK(fitting_level(48 * KiB, host).name == "L1d");  // exactly full still fits
  CHECK(fitting_level(48 * KiB + 1, host).name == "L2");
  // The default decode GEMV's int8 weights, 4096 × 14336: 56 MiB, in L3 rather than DRAM.
  const MemoryLevel gemv = fitting_level(4096.0 * 14336, host);
  CHECK(gemv.name == "L3");
  CHECK(gemv.bytes == 260u << 20);
  CHECK(fitting_level(261 * MiB, host).name == "DRAM");
  CHECK(fitting_level(64 * GiB, host).name == "DRAM");  // beyond the memory: still the last level
  // A GPU: its L2, then device memory.
  const std::vector<MemoryLevel> gpu{{"L2", 60u << 20}, {"DRAM", 141ull << 30}};
  CHECK(fitting_level(56 * MiB, gpu).name == "L2");
  CHECK(fitting_level(112 * MiB, gpu).name == "DRAM");
  // The host's levels as this machine reports them end with DRAM, smallest first.
  const auto levels = memory_levels(Device::cpu());
  REQUIRE_FALSE(levels.empty());
  CHECK(levels.back().name == "DRAM");
  for (std::size_t i = 1; i < levels.size(); ++i) CHECK(levels[i - 1].bytes <= levels[i].bytes);
}

TEST_CASE("a declared working set is recorded with its level, and whether caches were flushed", "[runner]") {
  const Probe probe;
  const Result warm = run_case(probe, planned("ok", 4096), fast_settings());
  REQUIRE(warm.working_set);
  CHECK(warm.working_set->bytes == 4096 * sizeof(float));
  CHECK(warm.working_set->fits == fitting_level(4096 * sizeof(float), memory_levels(Device::cpu())).name);
  CHECK(warm.working_set->level_bytes >= warm.working_set->bytes);
  CHECK_FALSE(warm.working_set->cache_flushed);

  RunSettings flushed = fast_settings();
  flushed.sampling.flush_cache = true;
  flushed.sampling.min_samples = 2;
  const Result cold = run_case(probe, planned("ok", 4096), flushed);
  REQUIRE(cold.working_set);
  CHECK(cold.working_set->cache_flushed);
  CHECK_FALSE(run_case(probe, planned("wrong"), fast_settings()).working_set);
}

TEST_CASE("repro keeps every setting that changes a result, and only what differs from the defaults", "[runner]") {
  RunSettings s;
  s.threads = 3;
  const std::string plain = repro_command(planned("ok", 64), s);
  CHECK(plain == "aiopt bench --technique probe --variant ok --device cpu --set n=64 --seed 7 --threads 3");

  s.sampling.warmup = 4;
  s.sampling.min_samples = 9;
  s.sampling.min_time_s = 0.25;
  s.sampling.max_noise = 0.015;
  s.sampling.timeout_s = 60;
  s.sampling.flush_cache = true;
  CHECK(repro_command(planned("ok", 64), s) ==
        plain + " --warmup 4 --min-samples 9 --min-time 0.25 --max-noise 0.015 --timeout 60 --flush-cache");

  // --quick chooses its own sampling bounds: they need no flag, a change to them does.
  RunSettings q;
  q.quick = true;
  q.sampling = Sampling::quick();
  CHECK(repro_command(planned("ok", 64), q) ==
        "aiopt bench --technique probe --variant ok --device cpu --set n=64 --seed 7 --threads 1 --quick");
  q.sampling.min_samples = Sampling{}.min_samples;
  CHECK(repro_command(planned("ok", 64), q).find("--quick --min-samples 5") != std::string::npos);
}
