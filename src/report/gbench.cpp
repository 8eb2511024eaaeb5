#include "report/gbench.hpp"

#include <cmath>
#include <set>

#include "report/json_path.hpp"

namespace aiopt {

namespace {

// What Google Benchmark writes itself, or reads back: a metric of the same name would hide it.
const std::set<std::string> gbench_fields{"name",           "family_index", "per_family_instance_index",
                                          "run_name",       "run_type",     "repetitions",
                                          "repetition_index", "threads",    "iterations",
                                          "real_time",      "cpu_time",     "time_unit",
                                          "aggregate_name", "aggregate_unit", "label",
                                          "error_occurred", "error_message"};

// "kv_caching/kv_cache/cpu/batch:1/preset:tiny": Google Benchmark's named-argument form.
std::string benchmark_name(const Result& r) {
  std::string name = r.technique + "/" + r.variant + "/" + r.device;
  for (const auto& [key, value] : r.params.items())
    name += "/" + key + ":" + (value.is_string() ? value.get<std::string>() : value.dump());
  return name;
}

ojson gbench_context(const ojson& context) {
  ojson caches = ojson::array();
  const ojson sizes = at_path(context, {"cpu", "caches"});
  int level = 1;
  for (const char* key : {"l1d_bytes", "l2_bytes", "l3_bytes"}) {
    const ojson size = at_path(sizes, {key});
    if (size.is_number() && size.get<double>() > 0)
      caches.push_back({{"type", level == 1 ? "Data" : "Unified"}, {"level", level}, {"size", size}, {"num_sharing", 0}});
    ++level;
  }
  return {{"date", at_path(context, {"start_time"})},
          {"host_name", at_path(context, {"hostname"})},
          {"executable", "aiopt"},
          {"num_cpus", at_path(context, {"cpu", "cores", "logical"})},
          {"mhz_per_cpu", 0},  // not measured
          {"cpu_scaling_enabled", false},
          {"caches", caches},
          {"load_avg", at_path(context, {"load_average"})},
          {"library_build_type", context.value("build_type", "") == "Debug" ? "debug" : "release"},
          {"aiopt", context}};
}

}  // namespace

std::string render_gbench(const Report& report) {
  ojson benchmarks = ojson::array();
  int family = 0;
  for (const auto& r : report.results) {
    if (r.status != Status::ok || !r.timing) continue;
    const Timing& t = *r.timing;
    ojson b = {{"name", benchmark_name(r)},
               {"family_index", family},
               {"per_family_instance_index", 0},
               {"run_name", benchmark_name(r)},
               {"run_type", "iteration"},
               {"repetitions", 1},
               {"repetition_index", 0},
               {"threads", 1},
               {"iterations", t.count * t.steps_per_sample},
               {"real_time", t.median},
               // aiopt times the wall clock only; cpu_time repeats it so tools that read both compare
               // like with like (compare.py prints a column for each).
               {"cpu_time", t.median},
               {"time_unit", "ms"},
               {"samples", t.count},
               {"min_time_ms", t.min},
               {"iqr_ms", t.iqr}};
    if (r.memory) b["peak_bytes"] = r.memory->peak_bytes;
    for (const auto& m : r.metrics)
      if (std::isfinite(m.value) && !gbench_fields.count(m.name) && !b.contains(m.name)) b[m.name] = m.value;
    benchmarks.push_back(std::move(b));
    ++family;
  }
  return ojson{{"context", gbench_context(report.context)}, {"benchmarks", benchmarks}}.dump(2) + "\n";
}

}  // namespace aiopt
