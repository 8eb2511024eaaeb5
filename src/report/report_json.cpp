#include "report/report_json.hpp"

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>

#include "core/device.hpp"
#include "core/error.hpp"
#include "report/comparison.hpp"

namespace aiopt {

namespace {

// ---- writing

// JSON has no NaN or infinity; a metric that could not be computed is written as null.
ojson number(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }

// ---- reading: each accessor names where the bad value sits and what was expected

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw InputError(where + ": " + what);
}

std::string shown(const ojson& v) {
  const auto text = v.dump();
  return text.size() > 60 ? text.substr(0, 57) + "..." : text;
}

std::string field_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

// A field of `obj` at `path` inside the object; missing fields are errors.
const ojson& field(const ojson& obj, const std::string& key, const std::string& where,
                   const std::string& path) {
  const auto it = obj.find(key);
  if (it == obj.end()) fail(where, "missing required key '" + field_path(path, key) + "'");
  return *it;
}

void expect(bool ok, const ojson& v, const std::string& where, const std::string& key_path,
            const std::string& allowed) {
  if (!ok) fail(where, "key '" + key_path + "' has value " + shown(v) + "; expected " + allowed);
}

std::string text_field(const ojson& obj, const std::string& key, const std::string& where,
                       const std::string& path) {
  const auto& v = field(obj, key, where, path);
  expect(v.is_string(), v, where, field_path(path, key), "a string");
  return v.get<std::string>();
}

// A number that may be null (written for NaN or infinity).
double value_field(const ojson& obj, const std::string& key, const std::string& where,
                   const std::string& path) {
  const auto& v = field(obj, key, where, path);
  if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  expect(v.is_number(), v, where, field_path(path, key), "a number or null");
  return v.get<double>();
}

std::uint64_t count_field(const ojson& obj, const std::string& key, const std::string& where,
                          const std::string& path) {
  const auto& v = field(obj, key, where, path);
  expect(v.is_number_unsigned() || (v.is_number_integer() && v.get<std::int64_t>() >= 0), v,
         where, field_path(path, key), "a non-negative integer");
  return v.get<std::uint64_t>();
}

bool flag_field(const ojson& obj, const std::string& key, const std::string& where,
                const std::string& path) {
  const auto& v = field(obj, key, where, path);
  expect(v.is_boolean(), v, where, field_path(path, key), "true or false");
  return v.get<bool>();
}

const ojson& object_field(const ojson& obj, const std::string& key, const std::string& where,
                          const std::string& path) {
  const auto& v = field(obj, key, where, path);
  expect(v.is_object(), v, where, field_path(path, key), "an object");
  return v;
}

const ojson& array_field(const ojson& obj, const std::string& key, const std::string& where,
                         const std::string& path) {
  const auto& v = field(obj, key, where, path);
  expect(v.is_array(), v, where, field_path(path, key), "an array");
  return v;
}

std::vector<std::string> texts_field(const ojson& obj, const std::string& key,
                                     const std::string& where) {
  std::vector<std::string> out;
  const auto& arr = array_field(obj, key, where, "");
  for (std::size_t i = 0; i < arr.size(); ++i) {
    expect(arr[i].is_string(), arr[i], where, key + "[" + std::to_string(i) + "]", "a string");
    out.push_back(arr[i].get<std::string>());
  }
  return out;
}

// Parameters are kept with their keys sorted, as Params::to_json writes them, so that key()
// matches however a file spelled its parameter order.
ojson params_field(const ojson& obj, const std::string& where) {
  const auto& raw = object_field(obj, "params", where, "");
  for (const auto& [name, v] : raw.items())
    expect(v.is_primitive() && !v.is_null(), v, where, "params." + name,
           "a number, string or boolean");
  return ojson::parse(nlohmann::json::parse(raw.dump()).dump());
}

Status status_from(const ojson& obj, const std::string& where) {
  const auto name = text_field(obj, "status", where, "");
  if (name == "ok") return Status::ok;
  if (name == "skipped") return Status::skipped;
  if (name == "failed") return Status::failed;
  if (name == "interrupted") return Status::interrupted;
  fail(where, "key 'status' has value \"" + name + "\"; allowed: ok, skipped, failed, interrupted");
}

Timing timing_from(const ojson& j, const std::string& where) {
  const std::string path = "timing";
  Timing t;
  t.unit = text_field(j, "unit", where, path);
  if (t.unit != "ns" && t.unit != "us" && t.unit != "ms" && t.unit != "s")
    fail(where, "key 'timing.unit' has value \"" + t.unit + "\"; allowed: ns, us, ms, s");
  // Every time may be null: to_json writes a non-finite one so.
  for (const auto& f : timing_times) t.*f.member = value_field(j, f.name, where, path);
  for (const auto& f : timing_counts) t.*f.member = count_field(j, f.name, where, path);
  if (j.contains("noise_known")) t.noise_known = flag_field(j, "noise_known", where, path);
  // Reports written before samples were batched timed one step per sample.
  if (j.contains("steps_per_sample")) {
    t.steps_per_sample = count_field(j, "steps_per_sample", where, path);
    if (t.steps_per_sample == 0) fail(where, "key 'timing.steps_per_sample' is 0; it must be at least 1");
  }
  const auto& samples = array_field(j, "samples", where, path);
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto& s = samples[i];
    expect(s.is_number() || s.is_null(), s, where, "timing.samples[" + std::to_string(i) + "]",
           "a number or null");
    t.samples.push_back(s.is_null() ? std::numeric_limits<double>::quiet_NaN() : s.get<double>());
  }
  return t;
}

MemoryRecord memory_from(const ojson& j, const std::string& where) {
  const std::string path = "memory";
  MemoryRecord m;
  m.peak_bytes = count_field(j, "peak_bytes", where, path);
  m.host_peak_bytes = j.contains("host_peak_bytes")
                          ? count_field(j, "host_peak_bytes", where, path)
                          : m.peak_bytes;
  if (j.contains("peak_rss_bytes")) m.peak_rss_bytes = count_field(j, "peak_rss_bytes", where, path);
  if (j.contains("reserved_peak_bytes")) m.reserved_peak_bytes = count_field(j, "reserved_peak_bytes", where, path);
  return m;
}

WorkingSet working_set_from(const ojson& j, const std::string& where) {
  const std::string path = "working_set";
  WorkingSet w;
  w.bytes = count_field(j, "bytes", where, path);
  w.fits = text_field(j, "fits", where, path);
  if (w.fits != "L1d" && w.fits != "L2" && w.fits != "L3" && w.fits != "DRAM")
    fail(where, "key 'working_set.fits' has value \"" + w.fits + "\"; allowed: L1d, L2, L3, DRAM");
  w.level_bytes = count_field(j, "level_bytes", where, path);
  w.cache_flushed = flag_field(j, "cache_flushed", where, path);
  return w;
}

Better better_from(const ojson& metric, const std::string& where, const std::string& path) {
  const auto name = text_field(metric, "better", where, path);
  if (name == "higher") return Better::higher;
  if (name == "lower") return Better::lower;
  fail(where, "key '" + path + ".better' has value \"" + name + "\"; allowed: higher, lower");
}

void check_schema(const ojson& j, const std::string& where) {
  const auto schema = text_field(j, "schema", where, "");
  if (schema != report_schema)
    fail(where, "key 'schema' has value \"" + schema + "\"; this aiopt reads \"" +
                    std::string(report_schema) + "\"");
}

// nlohmann reports a byte offset; people look for a line and column.
std::string line_and_column(const std::string& text, std::size_t byte) {
  std::size_t line = 1, column = 1;
  for (std::size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return std::to_string(line) + ":" + std::to_string(column);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open the report for reading");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Adds `r` to `results`, replacing an earlier result with the same key() in its place.
void put_result(std::vector<Result>& results, std::map<std::string, std::size_t>& index,
                Result r) {
  const auto key = r.key();
  const auto it = index.find(key);
  if (it != index.end()) {
    results[it->second] = std::move(r);
  } else {
    index.emplace(key, results.size());
    results.push_back(std::move(r));
  }
}

Report load_json(const std::string& path, const std::string& text) {
  ojson j;
  try {
    j = ojson::parse(text);
  } catch (const ojson::parse_error& e) {
    throw InputError(path + ":" + line_and_column(text, e.byte == 0 ? 0 : e.byte - 1) +
                     ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) fail(path, "expected a report object {\"schema\": ..., \"results\": [...]}");
  return report_from_json(j, path);
}

Report load_jsonl(const std::string& path, const std::string& text,
                  std::vector<std::string>& warnings) {
  Report report;
  std::map<std::string, std::size_t> index;
  bool have_header = false;
  std::size_t start = 0, line_no = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    const bool complete = end != std::string::npos;
    const auto line = text.substr(start, complete ? end - start : std::string::npos);
    start = complete ? end + 1 : text.size();
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    ojson j;
    try {
      j = ojson::parse(line);
    } catch (const ojson::parse_error& e) {
      // Only the last line can have been cut off by an interrupted write; it ends without a
      // newline because the writer ends every line it finishes with one.
      if (!complete && have_header) {
        warnings.push_back(where + ": skipped an incomplete last line (" +
                           std::to_string(line.size()) +
                           " bytes; the run writing it was interrupted)");
        break;
      }
      fail(where, std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) fail(where, "expected a JSON object, got " + shown(j));
    if (!have_header) {
      if (j.contains("technique"))
        fail(where, "the first line must be the header {\"schema\": \"" +
                        std::string(report_schema) + "\", \"context\": {...}}, not a result");
      check_schema(j, where);
      report.context = object_field(j, "context", where, "");
      have_header = true;
      continue;
    }
    put_result(report.results, index, result_from_json(j, where));
  }
  if (!have_header) fail(path, "empty report: no header line");
  report.comparisons = compare_to_baselines(report.results);
  return report;
}

}  // namespace

// ---- to JSON

ojson to_json(const Timing& t) {
  ojson samples = ojson::array();
  for (double s : t.samples) samples.push_back(number(s));
  ojson j{{"unit", t.unit}};
  for (const auto& f : timing_times) j[f.name] = number(t.*f.member);
  for (const auto& f : timing_counts) j[f.name] = t.*f.member;
  j["steps_per_sample"] = t.steps_per_sample;
  j["noise_known"] = t.noise_known;
  j["samples"] = samples;
  return j;
}

ojson to_json(const MemoryRecord& m) {
  ojson j{{"peak_bytes", m.peak_bytes}, {"host_peak_bytes", m.host_peak_bytes}};
  if (m.peak_rss_bytes) j["peak_rss_bytes"] = *m.peak_rss_bytes;
  if (m.reserved_peak_bytes) j["reserved_peak_bytes"] = *m.reserved_peak_bytes;
  return j;
}

ojson to_json(const WorkingSet& w) {
  return ojson{{"bytes", w.bytes},
               {"fits", w.fits},
               {"level_bytes", w.level_bytes},
               {"cache_flushed", w.cache_flushed}};
}

ojson to_json(const Result& r) {
  ojson j;
  j["technique"] = r.technique;
  j["variant"] = r.variant;
  j["baseline"] = r.baseline;
  j["device"] = r.device;
  j["params"] = r.params;
  j["seed"] = r.seed;
  j["status"] = to_string(r.status);
  j["message"] = r.message;
  if (r.timing) j["timing"] = to_json(*r.timing);
  if (r.memory) j["memory"] = to_json(*r.memory);
  if (r.working_set) j["working_set"] = to_json(*r.working_set);
  if (r.canary_gflops) j["canary_gflops"] = number(*r.canary_gflops);
  ojson metrics = ojson::object();
  for (const auto& m : r.metrics) {
    metrics[m.name] = ojson{{"value", number(m.value)}, {"unit", m.unit},
                            {"better", to_string(m.better)}};
    if (!m.compared) metrics[m.name]["compared"] = false;
    if (m.from_time) metrics[m.name]["from_time"] = true;
  }
  j["metrics"] = metrics;
  if (!r.series.empty()) {
    ojson series = ojson::object();
    for (const auto& s : r.series) {
      ojson x = ojson::array(), y = ojson::array();
      for (double v : s.x) x.push_back(number(v));
      for (double v : s.y) y.push_back(number(v));
      series[s.name] = ojson{{"x_unit", s.x_unit}, {"unit", s.unit}, {"x", x}, {"y", y}};
    }
    j["series"] = series;
  }
  j["repro"] = r.repro;
  return j;
}

ojson to_json(const Comparison& c) {
  ojson j;
  j["technique"] = c.technique;
  j["device"] = c.device;
  j["params"] = c.params;
  j["baseline"] = c.baseline;
  j["variant"] = c.variant;
  if (c.speedup) j["speedup"] = number(*c.speedup);
  if (c.memory_ratio) j["memory_ratio"] = number(*c.memory_ratio);
  ojson metrics = ojson::object();
  for (const auto& m : c.metrics)
    metrics[m.name] = ojson{{"ratio", number(m.ratio)}, {"verdict", m.verdict}};
  j["metrics"] = metrics;
  j["gains"] = c.gains;
  j["costs"] = c.costs;
  return j;
}

ojson to_json(const Report& report) {
  ojson results = ojson::array();
  for (const auto& r : report.results) results.push_back(to_json(r));
  ojson comparisons = ojson::array();
  for (const auto& c : report.comparisons) comparisons.push_back(to_json(c));
  return ojson{{"schema", report_schema},
               {"context", report.context},
               {"results", results},
               {"comparisons", comparisons}};
}

ojson jsonl_header(const ojson& context) {
  return ojson{{"schema", report_schema}, {"context", context}};
}

// ---- from JSON

Result result_from_json(const ojson& j, const std::string& where) {
  if (!j.is_object()) fail(where, "expected a result object, got " + shown(j));
  Result r;
  r.technique = text_field(j, "technique", where, "");
  r.variant = text_field(j, "variant", where, "");
  r.baseline = flag_field(j, "baseline", where, "");
  r.device = text_field(j, "device", where, "");
  if (!device_named(r.device))
    fail(where, "key 'device' has value \"" + r.device + "\"; allowed: cpu, cuda, cuda:N");
  r.params = params_field(j, where);
  r.seed = j.contains("seed") ? count_field(j, "seed", where, "") : 0;
  r.status = status_from(j, where);
  r.message = text_field(j, "message", where, "");
  if (j.contains("timing")) r.timing = timing_from(object_field(j, "timing", where, ""), where);
  if (j.contains("memory")) r.memory = memory_from(object_field(j, "memory", where, ""), where);
  if (j.contains("working_set"))
    r.working_set = working_set_from(object_field(j, "working_set", where, ""), where);
  if (j.contains("canary_gflops")) r.canary_gflops = value_field(j, "canary_gflops", where, "");
  for (const auto& [name, m] : object_field(j, "metrics", where, "").items()) {
    const std::string path = "metrics." + name;
    expect(m.is_object(), m, where, path, "an object {value, unit, better}");
    r.metrics.push_back(Metric{name, value_field(m, "value", where, path),
                               text_field(m, "unit", where, path), better_from(m, where, path),
                               m.contains("compared") ? flag_field(m, "compared", where, path) : true,
                               m.contains("from_time") && flag_field(m, "from_time", where, path)});
  }
  if (j.contains("series")) {
    for (const auto& [name, s] : object_field(j, "series", where, "").items()) {
      const std::string path = "series." + name;
      expect(s.is_object(), s, where, path, "an object {x_unit, unit, x, y}");
      Series out{name, text_field(s, "x_unit", where, path), text_field(s, "unit", where, path), {}, {}};
      for (const char* axis : {"x", "y"}) {
        const std::string axis_path = path + "." + axis;
        expect(s.contains(axis) && s[axis].is_array(), s.contains(axis) ? s[axis] : ojson(), where, axis_path,
               "an array of numbers");
        for (const auto& v : s[axis]) {
          expect(v.is_number() || v.is_null(), v, where, axis_path, "numbers or null");
          (axis[0] == 'x' ? out.x : out.y).push_back(v.is_null() ? NAN : v.get<double>());
        }
      }
      if (out.x.size() != out.y.size())
        fail(where, "key '" + path + "' has " + std::to_string(out.x.size()) + " x and " +
                        std::to_string(out.y.size()) + " y values");
      r.series.push_back(std::move(out));
    }
  }
  r.repro = j.contains("repro") ? text_field(j, "repro", where, "") : "";
  return r;
}

Comparison comparison_from_json(const ojson& j, const std::string& where) {
  if (!j.is_object()) fail(where, "expected a comparison object, got " + shown(j));
  Comparison c;
  c.technique = text_field(j, "technique", where, "");
  c.device = text_field(j, "device", where, "");
  c.params = params_field(j, where);
  c.baseline = text_field(j, "baseline", where, "");
  c.variant = text_field(j, "variant", where, "");
  if (j.contains("speedup")) c.speedup = value_field(j, "speedup", where, "");
  if (j.contains("memory_ratio")) c.memory_ratio = value_field(j, "memory_ratio", where, "");
  for (const auto& [name, m] : object_field(j, "metrics", where, "").items()) {
    const std::string path = "metrics." + name;
    expect(m.is_object(), m, where, path, "an object {ratio, verdict}");
    const auto verdict = text_field(m, "verdict", where, path);
    if (verdict != "gain" && verdict != "cost" && verdict != "same")
      fail(where, "key '" + path + ".verdict' has value \"" + verdict +
                      "\"; allowed: gain, cost, same");
    c.metrics.push_back(MetricRatio{name, value_field(m, "ratio", where, path), verdict});
  }
  c.gains = texts_field(j, "gains", where);
  c.costs = texts_field(j, "costs", where);
  return c;
}

Report report_from_json(const ojson& j, const std::string& where) {
  check_schema(j, where);
  Report report;
  report.context = object_field(j, "context", where, "");
  const auto& results = array_field(j, "results", where, "");
  for (std::size_t i = 0; i < results.size(); ++i)
    report.results.push_back(
        result_from_json(results[i], where + ": results[" + std::to_string(i) + "]"));
  if (j.contains("comparisons")) {
    const auto& comparisons = array_field(j, "comparisons", where, "");
    for (std::size_t i = 0; i < comparisons.size(); ++i)
      report.comparisons.push_back(comparison_from_json(
          comparisons[i], where + ": comparisons[" + std::to_string(i) + "]"));
  } else {
    report.comparisons = compare_to_baselines(report.results);
  }
  return report;
}

Report load_report(const std::string& path, std::vector<std::string>& warnings) {
  const bool jsonl = path.ends_with(".jsonl");
  if (!jsonl && !path.ends_with(".json"))
    throw InputError(path + ": cannot tell how to read this report from its name; allowed "
                            "extensions: .json (a full report), .jsonl (a streamed report)");
  const auto text = read_file(path);
  return jsonl ? load_jsonl(path, text, warnings) : load_json(path, text);
}

Report merge_reports(const std::vector<Report>& reports) {
  Report merged;
  if (reports.empty()) return merged;
  merged.context = reports.front().context;
  std::map<std::string, std::size_t> index;
  for (const auto& report : reports)
    for (const auto& r : report.results) put_result(merged.results, index, r);
  merged.comparisons = compare_to_baselines(merged.results);
  return merged;
}

// ---- streaming

JsonlWriter::JsonlWriter(const std::string& path, const ojson& context, bool append)
    : path_(path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool existing = append && fs::exists(path, ec) && fs::file_size(path, ec) > 0;
  const auto text = existing ? read_file(path) : std::string();
  const auto first_end = text.find('\n');
  // A file whose header line was never finished holds nothing worth keeping: start over.
  const bool continuing = existing && first_end != std::string::npos;
  if (continuing) {
    const auto header = ojson::parse(text.substr(0, first_end), nullptr, false);
    if (!header.is_object())
      fail(path + ":1", "cannot append: the first line is not an aiopt report header");
    check_schema(header, path + ":1");
    // A line cut off by an interrupted write would swallow the next result into one bad line;
    // cut the file back to its last complete line (the cut-off result was lost either way).
    // A last line that lacks only its newline is a whole result that load_report kept (and a
    // resumed sweep will skip): finish it instead of cutting it.
    const auto keep = text.rfind('\n') + 1;
    const bool tail_whole =
        keep < text.size() && ojson::parse(text.substr(keep), nullptr, false).is_object();
    if (keep < text.size() && !tail_whole) fs::resize_file(path, keep);
    out_.open(path, std::ios::binary | std::ios::app);
    if (tail_whole) out_ << '\n';
  } else {
    out_.open(path, std::ios::binary | std::ios::trunc);
  }
  if (!out_) throw InputError(path + ": cannot open the report for writing");
  if (!continuing) out_ << jsonl_header(context).dump() << '\n' << std::flush;
  if (!out_) throw std::runtime_error(path + ": writing the report header failed");
}

void JsonlWriter::write(const Result& result) {
  out_ << to_json(result).dump() << '\n' << std::flush;
  if (!out_) throw std::runtime_error(path_ + ": writing a result failed (disk full?)");
}

}  // namespace aiopt
