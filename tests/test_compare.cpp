// `aiopt compare`: verdicts on synthetic reports whose changes are known exactly, the contexts'
// warnings, the output formats and exit codes, and an A/A comparison of real CI sweeps.
//
// The synthetic timings are explicit sample lists summarized as the harness summarizes them,
// so each test knows its median, fastest sample and noise (IQR / median): "small noise" is a
// relative IQR of about 2%, the level of a quiet machine.
#include <catch2/catch.hpp>

#include <cmath>
#include <utility>

#include "core/error.hpp"
#include "harness/runner.hpp"
#include "report/drift.hpp"
#include "report/regression.hpp"
#include "report/report_json.hpp"
#include "support/files.hpp"
#include "support/process.hpp"
#include "support/schema.hpp"

using namespace aiopt;
using aiopt::test::run_aiopt;
using aiopt::test::TempDir;

namespace {

// Eleven samples around 10 ms, relative IQR about 2%.
const std::vector<double> quiet_ms{9.9, 10.1, 10.0, 9.8, 10.2, 10.0, 9.95, 10.05, 10.1, 9.9, 10.0};

Timing timing_of(const std::vector<double>& ms) {
  std::vector<double> seconds;
  for (double x : ms) seconds.push_back(x * 1e-3);
  return make_timing(seconds, 1);
}

std::vector<double> scaled(std::vector<double> ms, double factor) {
  for (auto& x : ms) x *= factor;
  return ms;
}

// A quiet machine: nothing else busy, one thread of two cores.
ojson idle_context() {
  return ojson{{"cpu", {{"model", "AMD EPYC 9B45"}, {"cores", {{"logical", 2}, {"physical", 2}}}}},
               {"blas", {{"name", "OpenBLAS"}, {"core", "Cooperlake"}}},
               {"threads", 1},
               {"load_average", {0.2, 0.3, 0.3}},
               {"busy_cores", 0.05},
               {"devices", ojson::array({ojson{{"index", 0}, {"name", "NVIDIA H100"}}})}};
}

Result timed_result(const std::string& variant, const std::vector<double>& ms, std::vector<Metric> metrics = {}) {
  Result r;
  r.technique = "kv_caching";
  r.variant = variant;
  r.baseline = variant == "recompute";
  r.device = "cpu";
  r.params = ojson{{"gen_tokens", 8}, {"prompt_len", 24}};
  r.timing = timing_of(ms);
  r.metrics = std::move(metrics);
  return r;
}

Report report_of(std::vector<Result> results, ojson context = idle_context()) {
  Report report;
  report.context = std::move(context);
  report.results = std::move(results);
  return report;
}

const Verdict& only_verdict(const Regressions& r) {
  REQUIRE(r.verdicts.size() == 1);
  return r.verdicts.front();
}

}  // namespace

TEST_CASE("a median 30% slower with small noise is SLOWER and a regression", "[compare]") {
  const auto base = report_of({timed_result("kv_cache", quiet_ms)});
  const auto slow = report_of({timed_result("kv_cache", scaled(quiet_ms, 1.3))});
  const auto reg = compare_reports(base, slow);
  const auto& v = only_verdict(reg);
  INFO(render_regressions(reg));
  CHECK(v.noise < 0.03);
  CHECK(v.change == Approx(0.3).epsilon(1e-9));
  CHECK(v.min_change == Approx(0.3).epsilon(1e-9));
  CHECK(v.allowance == Approx(default_regression_threshold));
  CHECK(v.timing == "SLOWER");
  CHECK(v.regressed());
  CHECK(any_regression(reg));
  CHECK_THAT(render_regressions(reg), Catch::Contains("+30.0%") && Catch::Contains("REGRESSION"));

  // The same samples 30% faster are FASTER, which is no regression; 3% is within the threshold.
  CHECK(only_verdict(compare_reports(base, report_of({timed_result("kv_cache", scaled(quiet_ms, 0.7))}))).timing ==
        "FASTER");
  CHECK_FALSE(any_regression(compare_reports(base, report_of({timed_result("kv_cache", scaled(quiet_ms, 0.7))}))));
  CHECK(only_verdict(compare_reports(base, report_of({timed_result("kv_cache", scaled(quiet_ms, 1.03))}))).timing ==
        "SAME");
}

namespace {

// Ten cases, each with the canary speed given, every one's samples scaled by `factor`.
Report canaried(const std::vector<double>& canary_gflops, double factor) {
  std::vector<Result> results;
  for (std::size_t i = 0; i < canary_gflops.size(); ++i) {
    Result r = timed_result("kv_cache", scaled(quiet_ms, factor));
    r.params["case"] = i;
    r.canary_gflops = canary_gflops[i];
    results.push_back(std::move(r));
  }
  return report_of(std::move(results));
}

const std::vector<double> steady_canary{100, 101, 99, 100, 102, 100, 98, 101, 100, 99};
// The spread of a shared VM: one quick CI sweep's canaries ran from 93 to 141 GFLOP/s.
const std::vector<double> drifting_canary{100, 140, 95, 120, 104, 141, 96, 110, 130, 100};

}  // namespace

TEST_CASE("drift is the central 95% of both reports' canaries pooled and 0 with too few", "[compare]") {
  // 20 values pooled: k = 1, the smallest and the largest.
  CHECK(drift(canaried(steady_canary, 1), canaried(steady_canary, 1)) == Approx(102.0 / 98 - 1));
  CHECK(drift(canaried(steady_canary, 1), canaried(drifting_canary, 1)) == Approx(141.0 / 95 - 1));
  // 80 values: k = 2, so one outlier at each end is dropped.
  std::vector<double> forty(40, 100.0);
  forty[0] = 10;
  forty[1] = 1000;
  forty[2] = 90;
  forty[3] = 120;
  CHECK(drift(canaried(forty, 1), canaried(std::vector<double>(40, 100.0), 1)) == Approx(120.0 / 90 - 1));
  // Two steady runs at different speeds: the machine moved between them, and that counts.
  CHECK(drift(canaried(std::vector<double>(10, 100.0), 1), canaried(std::vector<double>(10, 150.0), 1)) ==
        Approx(0.5));
  CHECK(drift(canaried({100, 200}, 1), canaried({300, 400}, 1)) == 0);  // fewer than min_canaries_for_drift
  const Report before_canary = report_of({timed_result("kv_cache", quiet_ms)});
  CHECK(drift(before_canary, before_canary) == 0);
}

TEST_CASE("a machine that drifted widens the allowance and says so but a steady one does not", "[compare]") {
  // Steady on both sides: 30% slower everywhere is a regression, as on an idle machine.
  const auto steady = compare_reports(canaried(steady_canary, 1), canaried(steady_canary, 1.3));
  CHECK(count_verdicts(steady).slower == steady_canary.size());
  CHECK(steady.verdicts.front().allowance == Approx(default_regression_threshold));
  CHECK(any_regression(steady));

  // The machine moved by 48% across the two: a 30% change is within that, and compare says why.
  const auto drifted = compare_reports(canaried(steady_canary, 1), canaried(drifting_canary, 1.3));
  CHECK(drifted.drift == Approx(141.0 / 95 - 1));
  CHECK(drifted.verdicts.front().allowance == Approx(drifted.drift));
  CHECK(count_verdicts(drifted).slower == 0);
  CHECK_FALSE(any_regression(drifted));
  const std::string text = render_regressions(drifted);
  CHECK_THAT(text, Catch::Contains("The machine's own speed moved by 48%"));
  CHECK(to_json(drifted)["drift"] == Approx(drifted.drift));

  // Beyond the drift a slowdown is still caught: twice as slow.
  CHECK(any_regression(compare_reports(canaried(steady_canary, 1), canaried(drifting_canary, 2.0))));
}

TEST_CASE("a timing whose noise is unknown is unjudged and not a regression", "[compare]") {
  auto base = report_of({timed_result("kv_cache", quiet_ms)});
  const auto slow = report_of({timed_result("kv_cache", scaled(quiet_ms, 2.0))});
  base.results[0].timing->noise_known = false;  // the timeout cut it below its minimum samples
  const auto reg = compare_reports(base, slow);
  CHECK(only_verdict(reg).timing == "UNJUDGED");
  CHECK_FALSE(any_regression(reg));
  CHECK(count_verdicts(reg).unjudged == 1);
  CHECK_THAT(render_regressions(reg), Catch::Contains("UNJUDGED (too few samples: noise unknown)") &&
                                          Catch::Contains("1 unjudged"));
  CHECK(to_json(reg)["summary"]["unjudged"] == 1);
  // Known on both sides, the same change is SLOWER.
  base.results[0].timing->noise_known = true;
  CHECK(only_verdict(compare_reports(base, slow)).timing == "SLOWER");
}

TEST_CASE("a check that newly fails is a regression, a skip is not", "[compare]") {
  const auto base = report_of({timed_result("kv_cache", quiet_ms), timed_result("kv_cache_int8", quiet_ms)});
  auto now = base;
  now.results[0].status = Status::failed;
  now.results[0].message = "max relative logit error 0.02 vs recompute exceeds 1e-05";
  now.results[0].timing.reset();
  now.results[1].status = Status::skipped;
  now.results[1].message = "not applicable";
  const auto reg = compare_reports(base, now);
  REQUIRE(reg.verdicts.size() == 2);
  CHECK(reg.verdicts[0].regressed());
  CHECK(reg.verdicts[0].timing.empty());
  CHECK_FALSE(reg.verdicts[1].regressed());
  CHECK(any_regression(reg));
  CHECK(count_verdicts(reg).newly_failed == 1);
  CHECK_THAT(render_regressions(reg), Catch::Contains("failed in NEW: max relative logit error 0.02"));
}

TEST_CASE("a metric from time moving within its noise is unjudged, not a regression", "[compare]") {
  // kv_caching's instrumented generation: one timed run, which moved by up to 47% A/A.
  const std::vector<Metric> base_metrics{time_metric("ms_per_token", 0.15, "ms", Better::lower),
                                         {"cache_bytes", 53248, "B", Better::lower},
                                         {"compute_fraction", 0.8, "", Better::higher, false}};
  auto now_metrics = base_metrics;
  now_metrics[0].value = 0.15 * 1.4;
  now_metrics[2].value = 0.4;  // a peak measured afresh: no judgement either
  const auto base = report_of({timed_result("kv_cache", quiet_ms, base_metrics)});
  const auto now = report_of({timed_result("kv_cache", quiet_ms, now_metrics)});
  const auto reg = compare_reports(base, now);
  const auto& v = only_verdict(reg);
  REQUIRE(v.metrics.size() == 2);  // compute_fraction is not compared
  CHECK(v.metrics[0].name == "ms_per_token");
  CHECK(v.metrics[0].verdict == "unjudged");
  CHECK(v.metrics[1].verdict == "same");
  CHECK(v.timing == "SAME");
  CHECK_FALSE(any_regression(reg));

  // The flag is what spares it: the same move of a metric not from time is worse.
  auto undeclared = now;
  undeclared.results[0].metrics[0].from_time = false;
  auto undeclared_base = base;
  undeclared_base.results[0].metrics[0].from_time = false;
  CHECK(only_verdict(compare_reports(undeclared_base, undeclared)).metrics[0].verdict == "worse");
  CHECK(any_regression(compare_reports(undeclared_base, undeclared)));

  // A metric not from time that got worse beyond the threshold is still caught.
  auto bigger = now;
  bigger.results[0].metrics[1].value = 2 * 53248;
  CHECK(only_verdict(compare_reports(base, bigger)).metrics[1].verdict == "worse");
  CHECK(any_regression(compare_reports(base, bigger)));
}

TEST_CASE("from_time is written to JSON, valid against the schema, and read back", "[compare]") {
  const auto report = report_of({timed_result(
      "kv_cache", quiet_ms, {time_metric("tokens_per_s", 6400, "tok/s", Better::higher), {"cache_bytes", 1, "B"}})});
  const auto j = to_json(report);
  CHECK(j["results"][0]["metrics"]["tokens_per_s"]["from_time"] == true);
  CHECK_FALSE(j["results"][0]["metrics"]["cache_bytes"].contains("from_time"));
  CHECK(aiopt::test::schema_errors(nlohmann::json::parse(j.dump())).empty());
  const Result back = report_from_json(j, "r.json").results.at(0);
  CHECK(back.metric("tokens_per_s")->from_time);
  CHECK_FALSE(back.metric("cache_bytes")->from_time);
}

TEST_CASE("interference on some samples is SAME, every sample slower is SLOWER", "[compare]") {
  // Another process took the core for every other sample: 2.2 ms steps measured as 6.3 ms.
  std::vector<double> interrupted = quiet_ms;
  for (std::size_t i = 0; i < interrupted.size(); i += 2) interrupted[i] *= 2.8;
  const auto base = report_of({timed_result("kv_cache", quiet_ms)});
  const auto reg = compare_reports(base, report_of({timed_result("kv_cache", interrupted)}));
  const auto& v = only_verdict(reg);
  CHECK(v.change > 1.0);
  CHECK(v.change > v.allowance);
  CHECK(std::fabs(v.min_change) < 0.05);
  CHECK(v.timing == "SAME");
  CHECK_FALSE(any_regression(reg));
  CHECK_THAT(render_regressions(reg), Catch::Contains("(fastest +0%)"));
}

TEST_CASE("a busy machine's contention widens the allowance, with a warning, and an idle one's does not", "[compare]") {
  auto busy = idle_context();
  busy["busy_cores"] = 2.0;
  busy["load_average"] = ojson::array({5.0, 5.0, 4.0});
  CHECK(contention(idle_context()) == 0.0);
  CHECK(contention(busy) == Approx((5.0 + 1) / 2 - 1));
  auto fits = idle_context();
  fits["busy_cores"] = 1.0;  // one busy core beside our one thread on two
  CHECK(contention(fits) == 0.0);
  CHECK(contention(ojson::object()) == 0.0);

  // Every sample twice as slow, small noise: SLOWER on an idle machine, SAME when NEW ran busy.
  const auto base = report_of({timed_result("kv_cache", quiet_ms)});
  const auto doubled = timed_result("kv_cache", scaled(quiet_ms, 2.0));
  CHECK(only_verdict(compare_reports(base, report_of({doubled}))).timing == "SLOWER");
  const auto reg = compare_reports(base, report_of({doubled}, busy));
  CHECK(reg.new_contention == Approx(2.0));
  CHECK(only_verdict(reg).allowance == Approx(2.0));
  CHECK(only_verdict(reg).timing == "SAME");
  CHECK_THAT(render_regressions(reg), Catch::Contains("warning: NEW was measured on a busy machine"));
}

TEST_CASE("contexts that differ in CPU, threads, BLAS core or a used GPU are listed, and still compared",
          "[compare]") {
  auto other = idle_context();
  other["cpu"]["model"] = "Intel Xeon 8480";
  other["threads"] = 2;
  other["blas"]["core"] = "Haswell";
  other["devices"][0]["name"] = "NVIDIA A100";
  auto gpu = timed_result("kv_cache", quiet_ms);
  gpu.device = "cuda:0";
  const auto reg = compare_reports(report_of({timed_result("kv_cache", quiet_ms), gpu}),
                                   report_of({timed_result("kv_cache", quiet_ms), gpu}, other));
  REQUIRE(reg.context_differences.size() == 4);
  CHECK(reg.context_differences[0].field == "cpu.model");
  CHECK(reg.context_differences[0].base == "AMD EPYC 9B45");
  CHECK(reg.context_differences[0].now == "Intel Xeon 8480");
  CHECK(reg.context_differences[1].field == "threads");
  CHECK(reg.context_differences[1].now == "2");
  CHECK(reg.context_differences[2].field == "blas.core");
  CHECK(reg.context_differences[3].field == "devices[0].name");
  CHECK(reg.context_differences[3].now == "NVIDIA A100");
  CHECK(reg.verdicts.size() == 2);
  CHECK_THAT(render_regressions(reg), Catch::Contains("warning: BASE and NEW differ in cpu.model (BASE: AMD EPYC 9B45, "
                                                      "NEW: Intel Xeon 8480): compared anyway"));

  // A GPU no matched result ran on does not matter; the same context has no differences.
  const auto cpu_only = compare_reports(report_of({timed_result("kv_cache", quiet_ms)}),
                                        report_of({timed_result("kv_cache", quiet_ms)}, [&] {
                                          auto c = idle_context();
                                          c["devices"][0]["name"] = "NVIDIA A100";
                                          return c;
                                        }()));
  CHECK(cpu_only.context_differences.empty());
}

TEST_CASE("reports that share no case are an InputError, not a pass", "[compare]") {
  const auto base = report_of({timed_result("kv_cache", quiet_ms)});
  auto other = base;
  other.results[0].params["prompt_len"] = 512;
  CHECK_THROWS_AS(compare_reports(base, other), InputError);
  CHECK_THROWS_WITH(compare_reports(base, other),
                    Catch::Contains("nothing to compare") && Catch::Contains("prompt_len=512"));
  CHECK_THROWS_AS(compare_reports(report_of({}), report_of({})), InputError);
}

TEST_CASE("compare as JSON has the documented shape, md is a Markdown table, csv is refused", "[compare]") {
  const auto base = report_of({timed_result("recompute", quiet_ms), timed_result("kv_cache", quiet_ms)});
  const auto now = report_of({timed_result("recompute", quiet_ms), timed_result("kv_cache", scaled(quiet_ms, 1.3))});
  const auto reg = compare_reports(base, now);
  const auto j = ojson::parse(render_regressions(reg, Format::json));
  CHECK(j["schema"] == "aiopt-compare/1");
  CHECK(j["threshold"] == default_regression_threshold);
  CHECK(j["regression"] == true);
  CHECK(j["context_differences"].empty());
  CHECK(j["summary"]["matched"] == 2);
  CHECK(j["summary"]["same"] == 1);
  CHECK(j["summary"]["slower"] == 1);
  REQUIRE(j["verdicts"].size() == 2);
  CHECK(j["verdicts"][0]["regression"] == false);
  CHECK(j["verdicts"][1]["timing"]["verdict"] == "SLOWER");
  CHECK(j["verdicts"][1]["timing"]["change"].get<double>() == Approx(0.3));
  CHECK(j["verdicts"][1]["timing"]["min_change"].get<double>() == Approx(0.3));
  CHECK(j["verdicts"][1]["params"]["prompt_len"] == 24);
  CHECK(j["verdicts"][1]["regression"] == true);

  const auto md = render_regressions(reg, Format::md);
  CHECK(md.rfind("| technique | variant | device | params | base | new | change | verdict | metrics |\n", 0) == 0);
  CHECK_THAT(md, Catch::Contains("| kv_caching | kv_cache | cpu |") && Catch::Contains("REGRESSION"));
  CHECK_THROWS_AS(render_regressions(reg, Format::csv), InputError);
}

TEST_CASE("aiopt compare: --format, exit 3 on a regression, exit 2 when nothing matches", "[compare][cli]") {
  TempDir tmp;
  const auto base = report_of({timed_result("kv_cache", quiet_ms)});
  auto other = base;
  other.results[0].params["prompt_len"] = 512;
  aiopt::test::write_text(tmp.file("base.json"), to_json(base).dump());
  aiopt::test::write_text(tmp.file("slow.json"), to_json(report_of({timed_result("kv_cache", scaled(quiet_ms, 1.3))})).dump());
  aiopt::test::write_text(tmp.file("other.json"), to_json(other).dump());

  const auto same = run_aiopt({"compare", tmp.file("base.json"), tmp.file("base.json"), "--format", "md"});
  INFO(same.out << same.err);
  CHECK(same.exit_code == 0);
  CHECK_THAT(same.out, Catch::StartsWith("| technique |") && Catch::Contains("no regression"));

  const auto slow = run_aiopt({"compare", tmp.file("base.json"), tmp.file("slow.json"), "--format", "json"});
  INFO(slow.out << slow.err);
  CHECK(slow.exit_code == 3);
  CHECK(ojson::parse(slow.out)["regression"] == true);
  const auto table = run_aiopt({"compare", tmp.file("base.json"), tmp.file("slow.json")});
  CHECK(table.exit_code == 3);
  CHECK_THAT(table.out, Catch::Contains("SLOWER") && Catch::Contains("REGRESSION"));

  const auto none = run_aiopt({"compare", tmp.file("base.json"), tmp.file("other.json")});
  INFO(none.err);
  CHECK(none.exit_code == 2);
  CHECK_THAT(none.err, Catch::Contains("aiopt: error: compare ") && Catch::Contains("nothing to compare"));
  CHECK(none.out.empty());

  const auto csv = run_aiopt({"compare", tmp.file("base.json"), tmp.file("base.json"), "--format", "csv"});
  CHECK(csv.exit_code == 2);
  CHECK_THAT(csv.err, Catch::Contains("csv"));
}

// Three runs of the real quick CI sweep (about 30 s each on 2 cores), so ctest runs it alone
// ([serial], tests/CMakeLists.txt): beside other tests its times would measure them.
//
// At the default threshold every case matches, no metric got worse and nothing newly failed. The
// false regressions this caught were metrics from one timed run, fractions of a peak measured
// afresh, a clip count that followed the number of samples, and microsecond steps timed one at a
// time (now batched to 1 ms samples). Timing verdicts are reported, not asserted: on the shared
// 2-core VMs this runs on, with busy_cores 0, cases moved by up to 2.45x between runs in median
// and fastest sample alike, while a fixed product timed before each case moved far less (central
// 95% of two runs' canaries pooled: 14% on an AMD EPYC; 57-105% on an Intel Xeon). compare allows
// for the measured drift and says so (the drift tests above hold that logic on fixed reports).
TEST_CASE("A/A: three runs of the quick CI sweep, each pair compared, report no regression",
          "[compare][serial]") {
  TempDir tmp;
  std::vector<std::string> runs;
  std::size_t results = 0;
  for (int i = 1; i <= 3; ++i) {
    runs.push_back(tmp.file("run" + std::to_string(i) + ".jsonl"));
    const auto r = run_aiopt({"sweep", AIOPT_SOURCE_DIR "/configs/ci.yaml", "-o", runs.back(), "--progress", "never",
                              "--format", "json"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    results = ojson::parse(r.out).at("results").size();
  }
  REQUIRE(results > 50);
  for (const auto& [a, b] : {std::pair{0, 1}, std::pair{0, 2}, std::pair{1, 2}}) {
    // At the default threshold, with each report's measured drift (report/drift.hpp).
    const auto c = run_aiopt({"compare", runs[a], runs[b], "--format", "json"});
    INFO("compare run" << a + 1 << " run" << b + 1 << "\n" << c.err);
    REQUIRE((c.exit_code == 0 || c.exit_code == 3));
    const auto j = ojson::parse(c.out);
    INFO("drift " << j["drift"].dump());
    for (const auto& v : j["verdicts"])
      if (v.contains("timing") && v["timing"]["verdict"] == "SLOWER")
        WARN(v["technique"].get<std::string>() << " " << v["variant"].get<std::string>() << " SLOWER A/A: median "
                                                        << v["timing"]["change"] << ", fastest " << v["timing"]["min_change"]
                                                        << ", allowance " << v["timing"]["allowance"]);
    CHECK(j["summary"]["matched"] == results);
    CHECK(j["summary"]["worse_metrics"] == 0);
    CHECK(j["summary"]["newly_failed"] == 0);
    // Every judged timing allows at least the default threshold.
    for (const auto& v : j["verdicts"])
      if (v.contains("timing") && v["timing"]["verdict"] != "UNJUDGED") {
        INFO(v["technique"].get<std::string>() << " " << v["variant"].get<std::string>() << " " << v["timing"].dump());
        CHECK(v["timing"]["allowance"].is_number());
        CHECK(v["timing"].value("allowance", 0.0) >= default_regression_threshold);
      }
    if (j["summary"]["slower"] != 0) WARN("A/A at the default threshold: " << j["summary"]["slower"] << " SLOWER");
  }
}
