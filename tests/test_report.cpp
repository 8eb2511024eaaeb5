// Reports: JSON and JSONL I/O against the published schema, comparisons and their words, the five
// printers, loading and merging files, and `compare` verdicts.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>


#include "core/error.hpp"
#include "core/rng.hpp"
#include "report/comparison.hpp"
#include "report/number_text.hpp"
#include "report/printers.hpp"
#include "report/regression.hpp"
#include "report/report_json.hpp"
#include "report/roofline_note.hpp"
#include "support/files.hpp"
#include "support/schema.hpp"

using namespace aiopt;
using aiopt::test::read_text;
using aiopt::test::TempDir;
using aiopt::test::write_text;

namespace {

constexpr double MiB = 1024.0 * 1024.0;

// Timing from `n` random samples spread ±spread/2 around 1, scaled so that the median is exactly
// `median` (the comparisons below are checked against hand-computed ratios of medians).
Timing timing_around(std::uint64_t seed, double median, double spread, std::size_t n = 15) {
  rng::Stream s(seed);
  std::vector<double> samples(n);
  for (auto& x : samples) x = 1.0 + spread * (s.uniform() - 0.5);
  auto sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  const double scale = median / sorted[n / 2];
  for (auto& x : samples) x *= scale;
  for (auto& x : sorted) x *= scale;
  Timing t;
  t.samples = samples;
  t.count = n;
  t.warmup = 2;
  t.median = median;
  t.min = sorted.front();
  t.max = sorted.back();
  double sum = 0;
  for (double x : samples) sum += x;
  t.mean = sum / static_cast<double>(n);
  double sq = 0;
  for (double x : samples) sq += (x - t.mean) * (x - t.mean);
  t.stddev = std::sqrt(sq / static_cast<double>(n - 1));
  t.iqr = sorted[3 * n / 4] - sorted[n / 4];
  return t;
}

Result result(const std::string& technique, const std::string& variant, bool baseline,
              const std::string& device, ojson params) {
  Result r;
  r.technique = technique;
  r.variant = variant;
  r.baseline = baseline;
  r.device = device;
  r.params = std::move(params);
  r.seed = 1234;
  r.repro = "aiopt bench --technique " + technique + " --variant " + variant + " --device " +
            device;
  return r;
}

MemoryRecord memory(double peak_bytes) {
  return MemoryRecord{static_cast<std::size_t>(peak_bytes), static_cast<std::size_t>(peak_bytes),
                      static_cast<std::size_t>(300 * MiB)};
}

// `r` as a measured case: its timing, its memory peaking at `peak_bytes`, and its metrics.
Result measured(Result r, Timing timing, double peak_bytes, std::vector<Metric> metrics) {
  r.timing = std::move(timing);
  r.memory = memory(peak_bytes);
  r.metrics = std::move(metrics);
  return r;
}

const std::string failure_message =
    "max_abs_error 0.5 exceeds tolerance 1e-3, see \"check\"\nsecond line";

// A realistic report: two kv_caching cases on the CPU (one variant failed its check), a skipped
// CUDA case, and a quantization case whose variant is slower and bigger.
Report sample_report() {
  Report report;
  report.context = ojson{{"aiopt_version", "0.1.0"},
                         {"git_commit", "290bf93abcde"},
                         {"cpu", {{"model", "AMD EPYC 9B45"}, {"cores", 2}}},
                         {"blas", {{"name", "OpenBLAS"}, {"core", "Haswell"}}},
                         {"threads", 2},
                         {"devices", ojson::array()}};
  const ojson p128{{"gen_tokens", 64}, {"prompt_len", 128}};
  const ojson p512{{"gen_tokens", 64}, {"prompt_len", 512}};

  const auto base = measured(result("kv_caching", "recompute", true, "cpu", p128), timing_around(1, 10.0, 0.04),
                             100 * MiB,
                             {{"tokens_per_s", 100.0, "tok/s", Better::higher},
                              {"max_abs_error", 0.0, "", Better::lower},
                              {"perplexity", 10.0, "", Better::lower},
                              {"bytes_per_token", 1000.0, "B", Better::lower},
                              {"log_likelihood", -2.0, "nat", Better::higher}});
  const auto cached = measured(result("kv_caching", "kv_cache", false, "cpu", p128), timing_around(2, 2.5, 0.06),
                               62 * MiB,
                               {{"tokens_per_s", 400.0, "tok/s", Better::higher},
                                {"max_abs_error", 3.1e-6, "", Better::lower},
                                {"perplexity", 10.4, "", Better::lower},
                                {"bytes_per_token", 1005.0, "B", Better::lower},
                                {"log_likelihood", -1.0, "nat", Better::higher}});

  const auto base512 = measured(result("kv_caching", "recompute", true, "cpu", p512), timing_around(3, 41.0, 0.05),
                                180 * MiB, {{"tokens_per_s", 24.4, "tok/s", Better::higher}});
  auto failed512 = result("kv_caching", "kv_cache", false, "cpu", p512);
  failed512.status = Status::failed;
  failed512.message = failure_message;

  auto skipped = result("kv_caching", "recompute", true, "cuda:0", p128);
  skipped.status = Status::skipped;
  skipped.message = "no CUDA device: this build has no CUDA";

  const ojson q{{"dtype", "int8"}, {"hidden", 1024}};
  const auto fp32 = measured(result("quantization", "fp32", true, "cpu", q), timing_around(4, 1.0, 0.03), 64 * MiB,
                             {{"nmse", std::numeric_limits<double>::quiet_NaN(), "", Better::lower}});
  const auto int8 = measured(result("quantization", "int8_dequant", false, "cpu", q), timing_around(5, 2.1, 0.03),
                             128 * MiB, {{"nmse", 2.5e-5, "", Better::lower}});

  report.results = {base, cached, base512, failed512, skipped, fp32, int8};
  report.comparisons = compare_to_baselines(report.results);
  return report;
}

// Streams results [first, last) of `report` to the JSONL file at `path`: a new stream under
// `context`, or, when `resume`, appended to the stream there (whose header stays).
void stream_results(const std::string& path, const ojson& context, bool resume, const Report& report,
                    std::size_t first, std::size_t last) {
  JsonlWriter writer(path, context, resume);
  for (std::size_t i = first; i < last; ++i) writer.write(report.results[i]);
}

// A sweep interrupted after its first three results: sample_report streamed to sweep.jsonl.
struct InterruptedSweep {
  const TempDir dir;
  const Report report = sample_report();
  const std::string path = dir.file("sweep.jsonl");

  InterruptedSweep() { stream_results(path, report.context, false, report, 0, 3); }

  // Resumes the sweep, appending the other results with `context` (the stream keeps its own
  // header), and checks that the whole report loads back with no warning added to `warnings`.
  void resume_and_check(const ojson& context, std::vector<std::string>& warnings) const {
    stream_results(path, context, true, report, 3, report.results.size());
    const auto resumed = load_report(path, warnings);
    CHECK(warnings.empty());
    CHECK(to_json(resumed) == to_json(report));
  }
};

// ---- schema validation

// Validates `doc` against the report schema, or against one of its definitions.
bool valid(const nlohmann::json& doc, const std::string& definition = "") {
  const auto errors = test::schema_errors(doc, definition);
  for (const auto& e : errors) UNSCOPED_INFO("schema: " << e);
  return errors.empty();
}

// ---- CSV reading by RFC 4180, to check what the printer wrote

std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (quoted) {
      if (ch == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        field += ch;
      }
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      row.push_back(field);
      field.clear();
    } else if (ch == '\n') {
      row.push_back(field);
      field.clear();
      rows.push_back(row);
      row.clear();
    } else {
      field += ch;
    }
  }
  REQUIRE_FALSE(quoted);
  REQUIRE(field.empty());
  return rows;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Every time of `report` scaled by `factor`, as if the machine had become that much slower.
Report slowed(Report report, double factor) {
  for (auto& r : report.results)
    if (r.timing) {
      auto& t = *r.timing;
      for (double* v : {&t.median, &t.mean, &t.min, &t.max, &t.stddev, &t.iqr}) *v *= factor;
      for (auto& s : t.samples) s *= factor;
    }
  return report;
}

}  // namespace

TEST_CASE("a metric moves by its direction once past the allowance relative to its base", "[report]") {
  CHECK(movement(100, 101, Better::higher, 0.01) == Movement::same);
  CHECK(movement(100, 102, Better::higher, 0.01) == Movement::better);
  CHECK(movement(100, 102, Better::lower, 0.01) == Movement::worse);
  CHECK(movement(100, 90, Better::lower, 0.05) == Movement::better);
  // Relative to |base|: -1 -> -3 fell, which is worse where higher is better.
  CHECK(movement(-1, -3, Better::higher, 0.05) == Movement::worse);
  CHECK(movement(-1, -1.01, Better::lower, 0.05) == Movement::same);
  // A base of 0 has no relative change: any other value moved.
  CHECK(movement(0, 0, Better::lower, 0.05) == Movement::same);
  CHECK(movement(0, 1e-9, Better::lower, 0.05) == Movement::worse);
  CHECK(movement(0, -1e-9, Better::lower, 0.05) == Movement::better);
}

TEST_CASE("comparisons: ratios and words against hand-computed values", "[report]") {
  const auto report = sample_report();
  const auto& cs = report.comparisons;
  // Only the ok variants with an ok baseline: kv_cache at prompt_len 128, and int8_dequant.
  REQUIRE(cs.size() == 2);

  const auto& kv = cs[0];
  CHECK(kv.technique == "kv_caching");
  CHECK(kv.baseline == "recompute");
  CHECK(kv.variant == "kv_cache");
  CHECK(kv.params == report.results[1].params);
  REQUIRE(kv.speedup);
  CHECK(*kv.speedup == Approx(10.0 / 2.5).epsilon(1e-12));
  REQUIRE(kv.memory_ratio);
  CHECK(*kv.memory_ratio == Approx(0.62).epsilon(1e-12));
  // max_abs_error has a zero baseline: no ratio, but an absolute difference among the costs.
  REQUIRE(kv.metrics.size() == 4);
  CHECK(kv.metrics[0].name == "tokens_per_s");
  CHECK(kv.metrics[0].ratio == Approx(4.0).epsilon(1e-12));
  CHECK(kv.metrics[0].verdict == "gain");
  CHECK(kv.metrics[1].name == "perplexity");
  CHECK(kv.metrics[1].ratio == Approx(1.04).epsilon(1e-12));
  CHECK(kv.metrics[1].verdict == "cost");
  CHECK(kv.metrics[2].name == "bytes_per_token");  // +0.5%: within 1%
  CHECK(kv.metrics[2].verdict == "same");
  CHECK(kv.metrics[3].name == "log_likelihood");  // -2 -> -1 is higher, so better
  CHECK(kv.metrics[3].ratio == Approx(0.5).epsilon(1e-12));
  CHECK(kv.metrics[3].verdict == "gain");
  CHECK(kv.gains == std::vector<std::string>{"4.0x faster", "-38% memory (-38 MiB)",
                                             "4.0x tokens_per_s", "+50% log_likelihood"});
  CHECK(kv.costs == std::vector<std::string>{"+3.1e-06 max_abs_error", "+4.0% perplexity"});

  const auto& q = cs[1];
  CHECK(q.variant == "int8_dequant");
  REQUIRE(q.speedup);
  CHECK(*q.speedup == Approx(1.0 / 2.1).epsilon(1e-12));
  CHECK(*q.memory_ratio == Approx(2.0).epsilon(1e-12));
  CHECK(q.metrics.empty());  // the baseline's nmse is NaN: nothing to compare
  CHECK(q.gains.empty());
  CHECK(q.costs == std::vector<std::string>{"2.1x slower", "2.0x memory (+64 MiB)"});
}

TEST_CASE("comparisons word a negative metric's change as a percentage, never a multiple",
          "[report]") {
  auto base = result("t", "base", true, "cpu", ojson{{"n", 1}});
  auto var = result("t", "var", false, "cpu", ojson{{"n", 1}});
  base.metrics = {{"log_likelihood", -1.0, "nat", Better::higher}};
  var.metrics = {{"log_likelihood", -3.0, "nat", Better::higher}};
  const auto cs = compare_to_baselines({base, var});
  REQUIRE(cs.size() == 1);
  REQUIRE(cs[0].metrics.size() == 1);
  CHECK(cs[0].metrics[0].ratio == Approx(3.0).epsilon(1e-12));
  CHECK(cs[0].metrics[0].verdict == "cost");
  CHECK(cs[0].gains.empty());
  CHECK(cs[0].costs == std::vector<std::string>{"-200% log_likelihood"});
}

TEST_CASE("comparisons leave out metrics marked not compared, and JSON keeps the mark", "[report]") {
  auto base = result("t", "base", true, "cpu", ojson{{"n", 1}});
  auto var = result("t", "var", false, "cpu", ojson{{"n", 1}});
  base.metrics = {{"bytes_moved", 300.0, "B", Better::lower},
                  {"achieved_bandwidth", 40.0, "GB/s", Better::higher, false}};
  var.metrics = {{"bytes_moved", 100.0, "B", Better::lower},
                 {"achieved_bandwidth", 30.0, "GB/s", Better::higher, false}};
  const auto cs = compare_to_baselines({base, var});
  REQUIRE(cs.size() == 1);
  REQUIRE(cs[0].metrics.size() == 1);
  CHECK(cs[0].metrics[0].name == "bytes_moved");
  for (const auto& phrase : cs[0].costs) CHECK(phrase.find("achieved_bandwidth") == std::string::npos);

  const ojson j = to_json(var);
  CHECK(j["metrics"]["achieved_bandwidth"]["compared"] == false);
  CHECK_FALSE(j["metrics"]["bytes_moved"].contains("compared"));
  CHECK(test::schema_errors(nlohmann::json::parse(j.dump()), "result").empty());
  const Result back = result_from_json(j, "memory");
  CHECK_FALSE(back.metric("achieved_bandwidth")->compared);
  CHECK(back.metric("bytes_moved")->compared);
}

TEST_CASE("series are written, valid against the schema, read back, and left out of comparisons", "[report]") {
  auto base = result("t", "base", true, "cpu", ojson{{"n", 1}});
  auto var = result("t", "var", false, "cpu", ojson{{"n", 1}});
  var.series = {{"train_loss", "step", "nats", {1, 2, 3}, {5.5, 4.25, NAN}},
                {"lr", "step", "", {0, 1}, {1e-3, 5e-4}}};
  const ojson j = to_json(var);
  REQUIRE(j.contains("series"));
  CHECK(j["series"]["train_loss"]["y"][2].is_null());
  CHECK(test::schema_errors(nlohmann::json::parse(j.dump()), "result").empty());
  const Result back = result_from_json(j, "memory");
  REQUIRE(back.series.size() == 2);
  CHECK(back.series[0].name == "train_loss");
  CHECK(back.series[0].x == std::vector<double>{1, 2, 3});
  CHECK(back.series[0].y[1] == 4.25);
  CHECK(std::isnan(back.series[0].y[2]));
  CHECK(back.series[1].unit.empty());
  CHECK_FALSE(to_json(base).contains("series"));
  const auto cs = compare_to_baselines({base, var});
  REQUIRE(cs.size() == 1);
  for (const auto& phrase : cs[0].gains) CHECK(phrase.find("loss") == std::string::npos);

  ojson broken = j;
  broken["series"]["lr"]["x"] = ojson::array({0});
  CHECK_THROWS_AS(result_from_json(broken, "memory"), InputError);
}

TEST_CASE("comparisons need an ok baseline of the same case", "[report]") {
  auto report = sample_report();
  // Without its baseline, kv_cache at prompt_len 128 has nothing to compare against.
  report.results[0].status = Status::failed;
  const auto cs = compare_to_baselines(report.results);
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].technique == "quantization");
  // A variant on another device does not borrow the CPU baseline.
  auto cuda = report.results[1];
  cuda.device = "cuda:0";
  report.results[0].status = Status::ok;
  report.results.push_back(cuda);
  CHECK(compare_to_baselines(report.results).size() == 2);
}

TEST_CASE("JSON round trip: JSON -> Report -> JSON is identical", "[report]") {
  const auto report = sample_report();
  const auto text = to_json(report).dump(2);
  const auto back = report_from_json(ojson::parse(text), "memory");
  CHECK(to_json(back).dump(2) == text);
  REQUIRE(back.results.size() == report.results.size());
  CHECK(back.results[1].timing->samples == report.results[1].timing->samples);
  CHECK(std::isnan(back.results[5].metrics[0].value));
  CHECK(back.results[3].message == failure_message);
  // Field order of a result is part of the format.
  std::vector<std::string> keys;
  const auto cached = to_json(report.results[1]);
  for (const auto& [k, v] : cached.items()) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"technique", "variant", "baseline", "device", "params",
                                         "seed", "status", "message", "timing", "memory",
                                         "metrics", "repro"});
  CHECK_FALSE(to_json(report.results[3]).contains("timing"));
  CHECK_FALSE(to_json(report.results[3]).contains("memory"));
}

TEST_CASE("a CUDA run's reserved peak is written valid and read back", "[report]") {
  auto r = sample_report().results[1];
  CHECK_FALSE(to_json(r)["memory"].contains("reserved_peak_bytes"));  // a host run holds none
  r.memory->reserved_peak_bytes = 5 * MiB;
  const auto j = to_json(r);
  CHECK(j["memory"]["reserved_peak_bytes"] == 5 * MiB);
  CHECK(valid(nlohmann::json::parse(j.dump()), "result"));
  CHECK(result_from_json(j, "memory").memory->reserved_peak_bytes == 5 * MiB);
}

TEST_CASE("non-finite times are written as null, valid, and read back as NaN", "[report]") {
  auto r = sample_report().results[1];
  r.timing->median = std::numeric_limits<double>::quiet_NaN();
  r.timing->samples[2] = std::numeric_limits<double>::infinity();
  const auto j = to_json(r);
  CHECK(j["timing"]["median"].is_null());
  CHECK(j["timing"]["samples"][2].is_null());
  CHECK(valid(nlohmann::json::parse(j.dump()), "result"));
  const auto back = result_from_json(j, "memory");
  CHECK(std::isnan(back.timing->median));
  CHECK(std::isnan(back.timing->samples[2]));
  CHECK(back.timing->samples[1] == r.timing->samples[1]);

  // compare gives such a pair no timing verdict, rather than calling NaN SLOWER.
  Report base, now;
  base.results = {sample_report().results[1]};
  now.results = {back};
  const auto reg = compare_reports(base, now);
  REQUIRE(reg.verdicts.size() == 1);
  CHECK(reg.verdicts[0].timing.empty());
  CHECK_FALSE(reg.verdicts[0].regressed());
}

TEST_CASE("the schema accepts our JSON and each JSONL line, and rejects broken ones", "[report]") {
  const auto report = sample_report();
  const auto doc = nlohmann::json::parse(render(report, Format::json));
  CHECK(valid(doc));
  const auto lines = lines_of(render(report, Format::jsonl));
  REQUIRE(lines.size() == report.results.size() + 1);
  CHECK(valid(nlohmann::json::parse(lines[0]), "jsonl_header"));
  for (std::size_t i = 1; i < lines.size(); ++i)
    CHECK(valid(nlohmann::json::parse(lines[i]), "result"));

  auto bad_status = doc;
  bad_status["results"][0]["status"] = "done";
  CHECK_FALSE(valid(bad_status));
  auto bad_better = doc;
  bad_better["results"][0]["metrics"]["tokens_per_s"]["better"] = "more";
  CHECK_FALSE(valid(bad_better));
  auto no_variant = nlohmann::json::parse(lines[1]);
  no_variant.erase("variant");
  CHECK_FALSE(valid(no_variant, "result"));
  auto wrong_schema = doc;
  wrong_schema["schema"] = "aiopt-report/2";
  CHECK_FALSE(valid(wrong_schema));
  CHECK_FALSE(valid(nlohmann::json::parse(lines[1]), "jsonl_header"));
}

TEST_CASE("json and jsonl printers parse back to the report", "[report]") {
  const auto report = sample_report();
  CHECK(ojson::parse(render(report, Format::json)) == to_json(report));
  const auto lines = lines_of(render(report, Format::jsonl));
  CHECK(ojson::parse(lines[0]) == jsonl_header(report.context));
  for (std::size_t i = 0; i < report.results.size(); ++i)
    CHECK(ojson::parse(lines[i + 1]) == to_json(report.results[i]));
}

TEST_CASE("table: aligned columns, gains and costs, messages, context", "[report]") {
  const auto report = sample_report();
  const auto text = render(report, Format::table);
  INFO(text);
  const auto lines = lines_of(text);
  for (const auto& line : lines) CHECK(line.size() <= 120);
  const auto gains_col = lines[0].find("gains");
  const auto costs_col = lines[0].find("costs");
  const auto median_col = lines[0].find("median");
  REQUIRE(gains_col != std::string::npos);
  auto row_of = [&](const std::string& needle) {
    for (const auto& line : lines)
      if (line.find(needle) != std::string::npos) return line;
    FAIL("no line holds " << needle);
    return std::string();
  };
  CHECK(row_of("4.0x faster").find("4.0x faster") == gains_col);
  CHECK(row_of("+3.1e-06 max_abs_error").find("+3.1e-06 max_abs_error") == costs_col);
  CHECK(row_of("2.1x slower").find("2.1x slower") == costs_col);
  CHECK(row_of("recompute *").find("10.0 ms") == median_col);
  CHECK(row_of("kv_cache  ").find("2.50 ms") == median_col);
  CHECK(row_of("max_abs_error 0.5 exceeds").find("max_abs_error 0.5 exceeds") == gains_col);
  // A row's second line holds the noise ("±" is two bytes but one column) beside the next gain
  // and cost: they must still line up with their columns.
  auto column_of = [&](const std::string& needle) {
    const auto line = row_of(needle);
    const auto bytes = line.find(needle);
    std::size_t column = 0;
    for (std::size_t i = 0; i < bytes; ++i) column += (static_cast<unsigned char>(line[i]) & 0xC0) != 0x80;
    return column;
  };
  REQUIRE(row_of("-38% memory").find("±") != std::string::npos);
  CHECK(column_of("-38% memory (-38 MiB)") == gains_col);
  CHECK(column_of("+4.0% perplexity") == costs_col);
  CHECK(text.find("no CUDA device") != std::string::npos);
  CHECK(text.find("second line") != std::string::npos);
  CHECK(lines.back() ==
        "cpu: AMD EPYC 9B45, 2 cores, 2 threads, BLAS Haswell; gpu: none; aiopt 0.1.0 "
        "(290bf93abcde)");
}

TEST_CASE("a table row must have one cell per header column", "[report]") {
  TextTable table({"a", "b"});
  CHECK_THROWS_AS(table.add({{"x"}}), std::logic_error);
  table.add({{"x"}, {"y"}});
  CHECK(table.str() == "a  b\n----\nx  y\n");
}

TEST_CASE("md: a well-formed Markdown table, peak memory and working set, and the context", "[report]") {
  const auto report = sample_report();
  const auto lines = lines_of(render(report, Format::md));
  auto pipes = [](const std::string& line) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < line.size(); ++i) n += line[i] == '|' && (i == 0 || line[i - 1] != '\\');
    return n;
  };
  REQUIRE(lines.size() > report.results.size() + 2);
  for (std::size_t i = 0; i < report.results.size() + 2; ++i) CHECK(pipes(lines[i]) == 11);
  CHECK(lines[2].find("recompute (baseline)") != std::string::npos);
  CHECK(lines[2].find("| 100 MiB |") != std::string::npos);
  CHECK(lines[3].find("4.0x faster, -38% memory (-38 MiB)") != std::string::npos);
  CHECK(lines[5].find("failed: max_abs_error 0.5 exceeds tolerance 1e-3") != std::string::npos);
  CHECK(std::find(lines.begin(), lines.end(), "| threads | 2 |") != lines.end());
  CHECK(std::find(lines.begin(), lines.end(), "| aiopt_version | 0.1.0 |") != lines.end());
}

TEST_CASE("md: the context as a key/value table, nested keys dotted, lists joined, sizes in binary units",
          "[report]") {
  Report report = sample_report();
  report.context = ojson{
      {"aiopt_version", "0.1.0"},
      {"cpu", {{"model", "AMD EPYC 9B45"},
               {"isa", {"avx2", "fma", "avx512f"}},
               {"caches", {{"l1d_bytes", 48 * 1024}, {"l3_bytes", 260 * 1024 * 1024}}}}},
      // Fields another part of aiopt may add later appear as they are.
      {"blas", {{"core", "Cooperlake"}, {"best_core", nullptr}, {"warnings", {"slow kernels", "check failed"}},
                {"measured_peak_gflops", 1234.5678}}},
      {"peaks", {{"host_triad_gbs", 48.123456789}}},
      {"load_average", {0.5, 1.25, 2.0}},
      {"devices", {{{"name", "NVIDIA H200"}, {"memory_bytes", 150ull << 30}}, {{"name", "a|b"}}}},
      {"argv", ojson::array()},
      {"sampling", {{"min_samples", 5}, {"flush_cache", false}}}};
  const std::string md = render(report, Format::md);
  INFO(md);
  const auto lines = lines_of(md);
  const auto context = std::find(lines.begin(), lines.end(), "Context:");
  REQUIRE(context != lines.end());
  const std::vector<std::string> table(context + 2, lines.end());
  const std::vector<std::string> expected{
      "| key | value |",
      "|---|---|",
      "| aiopt_version | 0.1.0 |",
      "| cpu.model | AMD EPYC 9B45 |",
      "| cpu.isa | avx2 fma avx512f |",
      "| cpu.caches.l1d_bytes | 48 KiB |",
      "| cpu.caches.l3_bytes | 260 MiB |",
      "| blas.core | Cooperlake |",
      "| blas.best_core | - |",
      "| blas.warnings | slow kernels; check failed |",
      "| blas.measured_peak_gflops | 1235 |",
      "| peaks.host_triad_gbs | 48.12 |",
      "| load_average | 0.5 1.25 2 |",
      "| devices.0.name | NVIDIA H200 |",
      "| devices.0.memory_bytes | 150 GiB |",
      "| devices.1.name | a\\|b |",
      "| argv | - |",
      "| sampling.min_samples | 5 |",
      "| sampling.flush_cache | false |"};
  CHECK(table == expected);
  CHECK(md.find("{\"") == std::string::npos);  // no JSON left in it
}

TEST_CASE("byte counts print in binary units with three significant digits at most", "[report]") {
  CHECK(byte_text(0) == "0 B");
  CHECK(byte_text(512) == "512 B");
  CHECK(byte_text(999) == "999 B");
  CHECK(byte_text(1000) == "0.98 KiB");  // never four digits
  CHECK(byte_text(1024) == "1 KiB");
  CHECK(byte_text(1536) == "1.5 KiB");
  CHECK(byte_text(70.7 * MiB) == "70.7 MiB");
  CHECK(byte_text(4096.0 * 14336) == "56 MiB");
  CHECK(byte_text(260 * MiB) == "260 MiB");
  CHECK(byte_text(1.5 * 1024 * MiB) == "1.5 GiB");
  CHECK(byte_text(1023.9 * MiB) == "1 GiB");
  CHECK(byte_text(64 * MiB, true) == "+64 MiB");
  CHECK(byte_text(-38 * MiB, true) == "-38 MiB");
  CHECK(byte_text(80, true) == "+80 B");
  CHECK(byte_text(std::numeric_limits<double>::quiet_NaN()) == "?");
}

TEST_CASE("a size from a zero baseline is worded in binary units, other metrics as a number", "[report]") {
  auto base = result("t", "base", true, "cpu", ojson{{"n", 1}});
  auto var = result("t", "var", false, "cpu", ojson{{"n", 1}});
  base.metrics = {{"cache_bytes", 0.0, "B", Better::lower}, {"max_abs_error", 0.0, "", Better::lower}};
  var.metrics = {{"cache_bytes", 64 * MiB, "B", Better::lower}, {"max_abs_error", 2e-6, "", Better::lower}};
  const auto cs = compare_to_baselines({base, var});
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].costs == std::vector<std::string>{"+64 MiB cache_bytes", "+2e-06 max_abs_error"});
}

TEST_CASE("Markdown and CSV: peak memory in binary units for people, raw bytes for scripts", "[report]") {
  const auto report = sample_report();
  const auto md = lines_of(render(report, Format::md));
  CHECK(md[2].find("| 10.0 ms ±1.3% | 100 MiB |") != std::string::npos);
  CHECK(md[8].find("| 128 MiB |") != std::string::npos);
  const auto csv = parse_csv(render(report, Format::csv));
  const auto peak = std::find(csv[0].begin(), csv[0].end(), "peak_bytes") - csv[0].begin();
  CHECK(csv[1][static_cast<std::size_t>(peak)] == std::to_string(static_cast<std::size_t>(100 * MiB)));
}

TEST_CASE("csv: RFC 4180 quoting and every field as a column", "[report]") {
  CHECK(csv_field("plain") == "plain");
  CHECK(csv_field("a,b") == "\"a,b\"");
  CHECK(csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
  CHECK(csv_field("two\nlines") == "\"two\nlines\"");
  CHECK(csv_field("cr\r") == "\"cr\r\"");
  CHECK(csv_field("") == "");

  const auto report = sample_report();
  const auto rows = parse_csv(render(report, Format::csv));
  REQUIRE(rows.size() == report.results.size() + 1);
  const std::vector<std::string> header{
      "technique", "variant", "baseline", "device", "status", "message", "param.gen_tokens",
      "param.prompt_len", "param.dtype", "param.hidden", "median_ms", "mean_ms", "min_ms",
      "max_ms", "stddev_ms", "iqr_ms", "count", "warmup", "peak_bytes", "host_peak_bytes",
      "peak_rss_bytes", "working_set_bytes", "working_set_fits", "metric.tokens_per_s", "metric.max_abs_error", "metric.perplexity",
      "metric.bytes_per_token", "metric.log_likelihood", "metric.nmse", "repro"};
  CHECK(rows[0] == header);
  for (const auto& row : rows) CHECK(row.size() == header.size());
  auto col = [&](const std::string& name) {
    return static_cast<std::size_t>(std::find(header.begin(), header.end(), name) - header.begin());
  };
  const auto& cached = report.results[1];
  CHECK(rows[2][col("variant")] == "kv_cache");
  CHECK(rows[2][col("baseline")] == "false");
  CHECK(rows[2][col("param.prompt_len")] == "128");
  CHECK(rows[2][col("param.dtype")] == "");
  CHECK(std::stod(rows[2][col("median_ms")]) == cached.timing->median);
  CHECK(std::stod(rows[2][col("stddev_ms")]) == cached.timing->stddev);
  CHECK(rows[2][col("count")] == "15");
  CHECK(rows[2][col("peak_bytes")] == std::to_string(cached.memory->peak_bytes));
  CHECK(std::stod(rows[2][col("metric.max_abs_error")]) == 3.1e-6);
  CHECK(rows[4][col("message")] == failure_message);
  CHECK(rows[4][col("median_ms")] == "");
  CHECK(rows[6][col("param.dtype")] == "int8");
  CHECK(rows[6][col("metric.nmse")] == "");  // NaN
  CHECK(rows[7][col("repro")] == report.results[6].repro);
}

TEST_CASE("formats by name and by file extension", "[report]") {
  CHECK(format_from_name("table") == Format::table);
  CHECK(format_from_name("jsonl") == Format::jsonl);
  CHECK(format_from_path("out/results.json") == Format::json);
  CHECK(format_from_path("results.jsonl") == Format::jsonl);
  CHECK(format_from_path("r.csv") == Format::csv);
  CHECK(format_from_path("r.md") == Format::md);
  CHECK(format_from_path("summary.txt") == Format::table);
  CHECK(format_from_name("gbench") == Format::gbench);
  CHECK(format_from_path("out/results.gbench.json") == Format::gbench);
  CHECK(format_from_path("gbench.json") == Format::json);  // the suffix, not a name ending in it
  CHECK_THROWS_WITH(format_from_name("markdown"),
                    Catch::Contains("'markdown'") && Catch::Contains("table, md, csv, json, jsonl, gbench"));
  CHECK_THROWS_WITH(format_from_name("jsnol"), Catch::Contains("did you mean 'jsonl'?"));
  CHECK_THROWS_AS(format_from_path("r.xlsx"), InputError);
  CHECK_THROWS_WITH(format_from_path("dir.v2/report"), Catch::Contains(".json, .jsonl, .csv, .md, .gbench.json") && Catch::Contains(".txt"));
}

TEST_CASE("load_report reads what the printers and the JSONL writer wrote", "[report]") {
  const TempDir dir;
  const auto report = sample_report();
  std::vector<std::string> warnings;

  write_text(dir.file("r.json"), render(report, Format::json));
  CHECK(to_json(load_report(dir.file("r.json"), warnings)) == to_json(report));

  stream_results(dir.file("r.jsonl"), report.context, false, report, 0, report.results.size());
  CHECK(read_text(dir.file("r.jsonl")) == render(report, Format::jsonl));
  const auto streamed = load_report(dir.file("r.jsonl"), warnings);
  CHECK(to_json(streamed) == to_json(report));  // comparisons recomputed from the results
  CHECK(warnings.empty());
}

TEST_CASE_METHOD(InterruptedSweep, "an interrupted JSONL stream loads without its cut-off line, with a warning",
                 "[report]") {
  const auto cut = to_json(report.results[3]).dump();
  std::ofstream(path, std::ios::app | std::ios::binary) << cut.substr(0, cut.size() / 2);

  std::vector<std::string> warnings;
  const auto loaded = load_report(path, warnings);
  CHECK(loaded.results.size() == 3);
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Catch::Contains("sweep.jsonl:5") && Catch::Contains("incomplete"));

  // A resumed sweep appends after cutting the fragment off, under the original header.
  warnings.clear();
  resume_and_check(ojson{{"other", "context"}}, warnings);
}

TEST_CASE_METHOD(InterruptedSweep, "resuming a stream whose last line lacks only its newline keeps that result",
                 "[report]") {
  auto text = read_text(path);
  text.pop_back();  // interrupted between the result and its newline
  write_text(path, text);
  std::vector<std::string> warnings;
  REQUIRE(load_report(path, warnings).results.size() == 3);  // what --resume skips
  resume_and_check(report.context, warnings);
}

TEST_CASE("bad report files are InputErrors naming file, line, key, value and what is allowed",
          "[report]") {
  const TempDir dir;
  const auto report = sample_report();
  std::vector<std::string> warnings;
  auto lines = lines_of(render(report, Format::jsonl));

  auto bad_status = ojson::parse(lines[2]);
  bad_status["status"] = "done";
  auto text = lines[0] + "\n" + lines[1] + "\n" + bad_status.dump() + "\n";
  write_text(dir.file("status.jsonl"), text);
  CHECK_THROWS_WITH(load_report(dir.file("status.jsonl"), warnings),
                    Catch::Contains("status.jsonl:3") && Catch::Contains("'status'") &&
                        Catch::Contains("\"done\"") && Catch::Contains("ok, skipped, failed"));

  // A broken line that is not the last, complete one is an error, not a warning.
  text = lines[0] + "\n" + lines[1].substr(0, 20) + "\n" + lines[2] + "\n";
  write_text(dir.file("middle.jsonl"), text);
  CHECK_THROWS_WITH(load_report(dir.file("middle.jsonl"), warnings),
                    Catch::Contains("middle.jsonl:2") && Catch::Contains("not valid JSON"));

  write_text(dir.file("headless.jsonl"), lines[1] + "\n");
  CHECK_THROWS_WITH(load_report(dir.file("headless.jsonl"), warnings),
                    Catch::Contains("headless.jsonl:1") && Catch::Contains("header"));

  auto doc = to_json(report);
  doc["schema"] = "aiopt-report/2";
  write_text(dir.file("v2.json"), doc.dump());
  CHECK_THROWS_WITH(load_report(dir.file("v2.json"), warnings),
                    Catch::Contains("v2.json") && Catch::Contains("aiopt-report/2") &&
                        Catch::Contains("aiopt-report/1"));

  doc = to_json(report);
  doc["results"][1]["timing"]["median"] = "fast";
  write_text(dir.file("median.json"), doc.dump());
  CHECK_THROWS_WITH(load_report(dir.file("median.json"), warnings),
                    Catch::Contains("results[1]") && Catch::Contains("timing.median") &&
                        Catch::Contains("\"fast\"") && Catch::Contains("a number"));

  doc = to_json(report);
  doc["results"][2]["device"] = "gpu";
  write_text(dir.file("device.json"), doc.dump());
  CHECK_THROWS_WITH(load_report(dir.file("device.json"), warnings),
                    Catch::Contains("results[2]") && Catch::Contains("'device'") &&
                        Catch::Contains("\"gpu\"") && Catch::Contains("cpu, cuda, cuda:N"));

  write_text(dir.file("broken.json"), "{\n  \"schema\": \"aiopt-report/1\",\n  \"context\": {\n}");
  CHECK_THROWS_WITH(load_report(dir.file("broken.json"), warnings),
                    Catch::Contains("broken.json:4:"));

  CHECK_THROWS_WITH(load_report(dir.file("r.csv"), warnings),
                    Catch::Contains(".json (a full report), .jsonl"));
  CHECK_THROWS_WITH(load_report(dir.file("missing.json"), warnings),
                    Catch::Contains("missing.json") && Catch::Contains("cannot open"));
  CHECK(warnings.empty());
}

TEST_CASE("merge_reports: first context, later results replace earlier ones in place", "[report]") {
  const auto full = sample_report();
  Report a, b;
  a.context = full.context;
  b.context = ojson{{"aiopt_version", "other"}};
  a.results = {full.results[0], full.results[1], full.results[2]};
  auto rerun = full.results[1];
  rerun.timing = timing_around(9, 5.0, 0.05);
  b.results = {rerun, full.results[5], full.results[6]};
  const auto merged = merge_reports({a, b});
  CHECK(merged.context == full.context);
  REQUIRE(merged.results.size() == 5);
  CHECK(merged.results[1].timing->median == 5.0);
  CHECK(merged.results[4].variant == "int8_dequant");
  REQUIRE(merged.comparisons.size() == 2);
  CHECK(*merged.comparisons[0].speedup == Approx(10.0 / 5.0).epsilon(1e-12));
  CHECK(merge_reports({}).results.empty());
}

TEST_CASE("compare: a report against itself is all SAME and no regression", "[report][compare]") {
  const auto report = sample_report();
  const auto reg = compare_reports(report, report);
  REQUIRE(reg.verdicts.size() == report.results.size());
  std::size_t timed = 0;
  for (const auto& v : reg.verdicts) {
    if (v.base_status == Status::ok) {
      CHECK(v.timing == "SAME");
      CHECK(v.change == 0.0);
      ++timed;
    }
    for (const auto& m : v.metrics) CHECK(m.verdict == "same");
    CHECK_FALSE(v.regressed());
  }
  CHECK(timed == 5);
  CHECK_FALSE(any_regression(reg));
  CHECK(reg.only_in_base.empty());
  CHECK(reg.only_in_new.empty());
  CHECK_THAT(render_regressions(reg), Catch::Contains("5 same") && Catch::Contains("no regression"));
}

TEST_CASE("compare: slower beyond threshold and noise is a regression", "[report][compare]") {
  const auto report = sample_report();

  const auto slow = compare_reports(report, slowed(report, 1.5));
  for (const auto& v : slow.verdicts)
    if (v.base_status == Status::ok) {
      CHECK(v.timing == "SLOWER");
      CHECK(v.change == Approx(0.5).epsilon(1e-12));
      CHECK(v.regressed());
    }
  CHECK(any_regression(slow));
  const auto text = render_regressions(slow);
  CHECK_THAT(text, Catch::Contains("SLOWER") && Catch::Contains("+50.0%") &&
                       Catch::Contains("REGRESSION"));

  const auto fast = compare_reports(report, slowed(report, 0.5));
  for (const auto& v : fast.verdicts)
    if (v.base_status == Status::ok) CHECK(v.timing == "FASTER");
  CHECK_FALSE(any_regression(fast));

  // 3% is within the 5% threshold; with a 2% threshold it is a change.
  CHECK_FALSE(any_regression(compare_reports(report, slowed(report, 1.03))));
  CHECK(any_regression(compare_reports(report, slowed(report, 1.03), 0.02)));
}

TEST_CASE("compare: a difference within the measured noise is SAME", "[report][compare]") {
  Report base;
  auto r = result("tensor_fusion", "fused", false, "cpu", ojson{{"rows", 4096}});
  r.timing = timing_around(11, 3.0, 0.8, 41);  // samples spread ±40%
  base.results = {r};
  const double noise = r.timing->iqr / r.timing->median;
  REQUIRE(noise > 0.15);
  const auto within = compare_reports(base, slowed(base, 1 + noise * 0.9));
  CHECK(within.verdicts[0].noise == Approx(noise).epsilon(1e-9));
  CHECK(within.verdicts[0].timing == "SAME");
  CHECK(compare_reports(base, slowed(base, 1 + noise * 1.1)).verdicts[0].timing == "SLOWER");
}

TEST_CASE("compare: worse metrics, new failures and unmatched results", "[report][compare]") {
  const auto report = sample_report();
  auto now = report;
  now.results[1].metrics[2].value = 11.0;      // perplexity 10.4 -> 11: worse (lower is better)
  now.results[1].metrics[0].value = 800.0;     // tokens_per_s 400 -> 800: better
  now.results[2].status = Status::failed;      // the prompt_len 512 baseline now fails
  now.results[2].message = "out of memory";
  now.results[4].status = Status::skipped;     // skipped before and after: not a regression
  now.results.erase(now.results.begin() + 6);  // int8_dequant missing in NEW
  auto extra = report.results[6];
  extra.device = "cuda:0";
  now.results.push_back(extra);

  const auto reg = compare_reports(report, now);
  REQUIRE(reg.verdicts.size() == 6);
  const auto& cached = reg.verdicts[1];
  REQUIRE(cached.metrics.size() == 5);
  CHECK(cached.metrics[0].verdict == "better");
  CHECK(cached.metrics[1].verdict == "same");  // max_abs_error unchanged
  CHECK(cached.metrics[2].verdict == "worse");
  CHECK(cached.timing == "SAME");
  CHECK(cached.regressed());
  CHECK(reg.verdicts[2].regressed());
  CHECK(reg.verdicts[2].timing.empty());
  CHECK_FALSE(reg.verdicts[4].regressed());
  CHECK(reg.only_in_base == std::vector<std::string>{"quantization int8_dequant cpu dtype=int8 hidden=1024"});
  CHECK(reg.only_in_new == std::vector<std::string>{"quantization int8_dequant cuda:0 dtype=int8 hidden=1024"});
  const auto text = render_regressions(reg);
  INFO(text);
  CHECK_THAT(text, Catch::Contains("perplexity worse (10.4 -> 11)") &&
                       Catch::Contains("failed in NEW: out of memory") &&
                       Catch::Contains("only in BASE: quantization int8_dequant cpu") &&
                       Catch::Contains("only in NEW: quantization int8_dequant cuda:0") &&
                       Catch::Contains("REGRESSION"));
  CHECK(any_regression(reg));
}

// ---- working sets and roofline notes

namespace {

// Decode GEMVs of a 4096 × 14336 weight matrix on a host with a 260 MiB L3: fp32 (224 MiB)
// streams from DRAM, int8 (56 MiB) stays in L3 and beats the triad peak 3.2 times.
Report gemv_report() {
  const ojson p{{"k", 4096}, {"n", 14336}};
  auto fp32 = result("quantization", "fp32", true, "cpu", p);
  fp32.timing = timing_around(6, 20.0, 0.02);
  fp32.memory = memory(224 * MiB);
  fp32.working_set = WorkingSet{static_cast<std::size_t>(224 * MiB), "DRAM", 32ull << 30, false};
  fp32.metrics = {{"bandwidth_fraction", 0.9, "", Better::higher, false}};
  auto int8 = result("quantization", "int8_dynamic", false, "cpu", p);
  int8.timing = timing_around(7, 1.5, 0.02);
  int8.memory = memory(56 * MiB);
  int8.working_set = WorkingSet{static_cast<std::size_t>(56 * MiB), "L3", 260u << 20, false};
  int8.metrics = {{"bandwidth_fraction", 3.2, "", Better::higher, false},
                  {"compute_fraction", 1.6, "", Better::higher, false}};
  auto flushed = int8;
  flushed.variant = "int4_weight_only";
  flushed.working_set = WorkingSet{static_cast<std::size_t>(28 * MiB), "L3", 260u << 20, true};
  flushed.metrics = {{"bandwidth_fraction", 1.4, "", Better::higher, false}};
  auto undeclared = int8;
  undeclared.variant = "bf16";
  undeclared.working_set.reset();
  undeclared.metrics = {{"bandwidth_fraction", 2.0, "", Better::higher, false}};
  auto failed = int8;
  failed.variant = "int8_static";
  failed.status = Status::failed;
  failed.message = "check failed";
  Report report;
  report.context = sample_report().context;
  report.results = {fp32, int8, flushed, undeclared, failed};
  report.comparisons = compare_to_baselines(report.results);
  return report;
}

}  // namespace

TEST_CASE("a roofline fraction above 1 gets a note: the level the working set fits, and the remedy",
          "[report]") {
  const auto notes = roofline_notes(gemv_report());
  // fp32 (0.9) and the failed case get none.
  REQUIRE(notes.size() == 3);
  CHECK(notes[0] ==
        "quantization/int8_dynamic (cpu): bandwidth_fraction 3.2 > 1: the working set (56 MiB) fits L3 "
        "(260 MiB), while the peak is DRAM's (the triad probe); rerun with --flush-cache to measure from "
        "memory; compute_fraction 1.6 > 1: the peak is the host's fp32 SGEMM; products in narrower types "
        "(int8, fp16, bf16) do more operations per cycle, and the probe's one 1024^3 product, measured "
        "once per process, can read below a run's own larger fp32 products");
  // Flushed already: no advice to flush, but why it still fits.
  CHECK(notes[1].find("int4_weight_only (cpu): bandwidth_fraction 1.4 > 1: the caches were flushed") !=
        std::string::npos);
  CHECK(notes[1].find("fits L3 (260 MiB)") != std::string::npos);
  CHECK(notes[1].find("rerun") == std::string::npos);
  // Without a declared working set the note still names the peak and the remedy.
  CHECK(notes[2].find("bf16 (cpu): bandwidth_fraction 2 > 1: the peak is DRAM's") != std::string::npos);
  CHECK(notes[2].find("--flush-cache") != std::string::npos);

  // Results that differ in a parameter are told apart by it, and only by it.
  Report two = gemv_report();
  two.results[3].params["n"] = 4096;
  const auto named = roofline_notes(two);
  REQUIRE(named.size() == 3);
  CHECK(named[0].find("quantization/int8_dynamic (cpu; n=14336): ") == 0);
  CHECK(named[2].find("quantization/bf16 (cpu; n=4096): ") == 0);
}

TEST_CASE("the table and Markdown print the roofline notes and the working set's level", "[report]") {
  const auto report = gemv_report();
  const std::string table = render(report, Format::table);
  INFO(table);
  for (const auto& line : lines_of(table)) CHECK(line.size() <= 120);
  CHECK(table.find("note: quantization/int8_dynamic (cpu): bandwidth_fraction 3.2 > 1: the working set (56 MiB)") !=
        std::string::npos);
  CHECK(table.find("note: quantization/fp32") == std::string::npos);
  const std::string md = render(report, Format::md);
  INFO(md);
  CHECK(md.find("| 56 MiB in L3 |") != std::string::npos);
  CHECK(md.find("| 28 MiB in L3, flushed |") != std::string::npos);
  CHECK(md.find("| 224 MiB in DRAM |") != std::string::npos);
  CHECK(md.find("\nNotes:\n\n- quantization/int8_dynamic (cpu): bandwidth_fraction 3.2 > 1") != std::string::npos);
  const auto rows = parse_csv(render(report, Format::csv));
  const auto fits = std::find(rows[0].begin(), rows[0].end(), "working_set_fits") - rows[0].begin();
  CHECK(rows[2][static_cast<std::size_t>(fits)] == "L3");
  CHECK(rows[2][static_cast<std::size_t>(fits) - 1] == std::to_string(static_cast<std::size_t>(56 * MiB)));
}

TEST_CASE("a working set is written after memory, valid against the schema, and read back", "[report]") {
  const auto report = gemv_report();
  const ojson j = to_json(report.results[2]);
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"technique", "variant", "baseline", "device", "params", "seed", "status",
                                         "message", "timing", "memory", "working_set", "metrics", "repro"});
  CHECK(j["working_set"] == ojson{{"bytes", 28 * 1024 * 1024}, {"fits", "L3"}, {"level_bytes", 260 * 1024 * 1024},
                                  {"cache_flushed", true}});
  CHECK(valid(nlohmann::json::parse(render(report, Format::json))));
  const Result back = result_from_json(j, "memory");
  REQUIRE(back.working_set);
  CHECK(back.working_set->bytes == report.results[2].working_set->bytes);
  CHECK(back.working_set->fits == "L3");
  CHECK(back.working_set->level_bytes == 260u << 20);
  CHECK(back.working_set->cache_flushed);

  ojson bad = j;
  bad["working_set"]["fits"] = "L4";
  CHECK_FALSE(valid(nlohmann::json::parse(bad.dump()), "result"));
  CHECK_THROWS_WITH(result_from_json(bad, "r.json"),
                    Catch::Contains("working_set.fits") && Catch::Contains("L1d, L2, L3, DRAM"));
}

TEST_CASE("steps per sample and the canary speed are written and read back and older reports read as 1 and none",
          "[report]") {
  auto report = sample_report();
  Result& r = report.results[1];
  r.timing->steps_per_sample = 37;
  r.timing->noise_known = false;
  r.canary_gflops = 98.5;
  const ojson j = to_json(r);
  CHECK(j["timing"]["steps_per_sample"] == 37);
  CHECK(j["canary_gflops"] == 98.5);
  CHECK(valid(nlohmann::json::parse(render(report, Format::json))));
  const Result back = result_from_json(j, "memory");
  CHECK(back.timing->steps_per_sample == 37);
  CHECK(j["timing"]["noise_known"] == false);
  CHECK_FALSE(back.timing->noise_known);
  REQUIRE(back.canary_gflops);
  CHECK(*back.canary_gflops == 98.5);

  ojson older = j;
  older["timing"].erase("steps_per_sample");
  older["timing"].erase("noise_known");
  older.erase("canary_gflops");
  const Result old = result_from_json(older, "old.json");
  CHECK(old.timing->steps_per_sample == 1);
  CHECK(old.timing->noise_known);
  CHECK_FALSE(old.canary_gflops);

  ojson bad = j;
  bad["timing"]["steps_per_sample"] = 0;
  CHECK_FALSE(valid(nlohmann::json::parse(bad.dump()), "result"));
  CHECK_THROWS_WITH(result_from_json(bad, "r.json"), Catch::Contains("steps_per_sample"));
}
