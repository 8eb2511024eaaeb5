#include "cli/execution.hpp"

#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "cli/blas_warnings.hpp"
#include "cli/lookup.hpp"
#include "cli/output.hpp"
#include "core/context.hpp"
#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/hardware.hpp"
#include "core/threads.hpp"
#include "harness/interrupt.hpp"
#include "harness/progress.hpp"
#include "harness/runner.hpp"
#include "nn/pretrained.hpp"
#include "report/comparison.hpp"
#include "report/report_json.hpp"
#include "techniques/model_params.hpp"

namespace aiopt::cli {

Shard Shard::parse(const std::string& text) {
  const auto slash = text.find('/');
  Shard s;
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    std::size_t used = 0;
    s.index = std::stoi(text.substr(0, slash), &used);
    if (used != slash) throw std::invalid_argument("index");
    const std::string count = text.substr(slash + 1);
    s.count = std::stoi(count, &used);
    if (used != count.size()) throw std::invalid_argument("count");
  } catch (const std::exception&) {
    throw InputError("--shard '" + text + "': expected i/N with whole numbers, e.g. 0/4");
  }
  if (s.count < 1 || s.index < 0 || s.index >= s.count)
    throw InputError("--shard '" + text + "': need 0 <= i < N (shards are numbered from 0)");
  return s;
}

std::vector<DeviceKind> default_devices() {
  std::vector<DeviceKind> d{DeviceKind::cpu};
  if (cuda::device_count() > 0) d.push_back(DeviceKind::cuda);
  return d;
}

namespace {

// "technique/variant device k=v ...": a case as messages name it.
std::string case_label(const PlannedCase& pc) {
  std::string params;
  for (const auto& [k, v] : pc.c.params.values())
    params += (params.empty() ? "" : " ") + k + "=" + to_string(v);
  return pc.c.technique + "/" + pc.c.variant + " " + to_string(pc.device) + " " + params;
}

}  // namespace

Execution plan_execution(const std::vector<Experiment>& experiments, const RunFlags& flags,
                         const SettingsOverride& settings) {
  Execution ex;
  ex.quick = flags.effective_quick(settings);
  ex.sampling = flags.sampling(settings);
  const auto seed = flags.effective_seed(settings);
  const auto devices = default_devices();
  for (const auto& e : experiments) {
    const Technique& t = find_technique(e.technique);
    for (auto& pc : expand(e, t, ex.quick, seed, devices)) {
      // Bad parameter values stop the command before anything runs; a case that does not
      // apply is planned and recorded as skipped when it runs.
      try {
        t.validate(pc.c, pc.device);
      } catch (const InputError& error) {
        throw InputError(case_label(pc) + ": " + error.what());
      } catch (const NotApplicable&) {
      }
      ex.plan.push_back({&t, std::move(pc)});
    }
  }
  return ex;
}

namespace {

std::string group_key(const PlannedCase& pc) {
  return pc.c.technique + "|" + to_string(pc.device) + "|" + pc.c.params.to_json().dump();
}

std::string outcome_text(const Result& r) {
  if (r.status == Status::ok) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "ok, median %.4g ms", r.timing ? r.timing->median : 0.0);
    return buf;
  }
  return to_string(r.status) + ": " + r.message;
}

std::string now_iso8601() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// This shard's cases: whole parameter groups (a baseline with its variants), dealt round-robin
// in plan order.
std::vector<const PlanEntry*> shard_cases(const Execution& ex) {
  std::vector<const PlanEntry*> cases;
  std::map<std::string, std::size_t> group_index;
  for (const auto& e : ex.plan) {
    const auto [it, added] = group_index.try_emplace(group_key(e.planned), group_index.size());
    if (!ex.shard || static_cast<int>(it->second % ex.shard->count) == ex.shard->index) cases.push_back(&e);
  }
  return cases;
}

// The checkpoints the cases run (their `checkpoint` parameter), identified by their bytes, so that
// a report says which model it measured; one that cannot be read is recorded with the reason (its
// cases fail with it).
ojson checkpoints_context(const Execution& ex) {
  std::set<std::pair<std::string, std::int64_t>> seen;
  ojson out = ojson::array();
  for (const auto& e : ex.plan) {
    const Params& p = e.planned.c.params;
    const std::string path = model_params::checkpoint(p);
    const std::int64_t heads = p.has("heads") ? p.integer("heads") : 0;
    if (path.empty() || !seen.emplace(path, heads).second) continue;
    try {
      out.push_back(nn::inspect_checkpoint(path, heads > 0 ? std::optional(static_cast<std::size_t>(heads))
                                                           : std::nullopt).to_json());
    } catch (const InputError& err) {
      out.push_back({{"path", path}, {"error", err.what()}});
    }
  }
  return out;
}

// The report's context: the machine and build, and what this invocation chose.
ojson run_context(const Execution& ex, int threads, const std::vector<std::string>& argv) {
  ojson context = machine_context(true);
  context["argv"] = argv;
  context["seed"] = ex.plan.empty() ? 0 : ex.plan.front().planned.c.seed;
  context["start_time"] = now_iso8601();
  context["threads"] = threads;
  context["quick"] = ex.quick;
  context["sampling"] = {{"warmup", ex.sampling.warmup},
                         {"min_samples", ex.sampling.min_samples},
                         {"min_time_s", ex.sampling.min_time_s},
                         {"max_noise", ex.sampling.max_noise},
                         {"timeout_s", ex.sampling.timeout_s},
                         {"flush_cache", ex.sampling.flush_cache},
                         {"max_case_s", ex.sampling.max_case_s},
                         {"force", ex.sampling.force}};
  if (ex.shard) context["shard"] = std::to_string(ex.shard->index) + "/" + std::to_string(ex.shard->count);
  if (ojson checkpoints = checkpoints_context(ex); !checkpoints.empty()) context["checkpoints"] = std::move(checkpoints);
  return context;
}

}  // namespace

int execute(const Execution& ex, const RunFlags& flags, const std::vector<std::string>& argv) {
  const std::vector<const PlanEntry*> cases = shard_cases(ex);
  check_outputs(flags.outputs);
  if (flags.dry_run) {
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const auto& pc = cases[i]->planned;
      std::printf("%zu\t%s\t%s%s\t%s\t%s\n", i + 1, pc.c.technique.c_str(), pc.c.variant.c_str(),
                  pc.baseline ? " (baseline)" : "", to_string(pc.device).c_str(),
                  pc.c.params.to_json().dump().c_str());
    }
    std::printf("%zu cases\n", cases.size());
    return 0;
  }

  const int threads = flags.threads.value_or(aiopt::threads());
  set_threads(threads);

  // Earlier results to keep, and which cases they cover.
  std::vector<Result> results;
  std::set<std::string> done;
  if (!ex.resume_path.empty() && std::filesystem::exists(ex.resume_path)) {
    std::vector<std::string> warnings;
    Report earlier = load_report(ex.resume_path, warnings);
    for (const auto& w : warnings) spdlog::warn("{}", w);
    for (auto& r : earlier.results) {
      if (r.status != Status::interrupted) done.insert(r.key());  // an interrupted case runs again
      results.push_back(std::move(r));
    }
    spdlog::info("resuming from {}: {} cases already done", ex.resume_path, done.size());
  }

  const ojson context = run_context(ex, threads, argv);
  warn_about_blas_kernels();
  if (context.at("busy_cores").is_number())
    if (const auto busy = hardware::busy_machine_warning(context.at("busy_cores").get<double>(),
                                                          hardware::cpu().logical_cores, threads))
      spdlog::warn("{}", *busy);

  // Stream every .jsonl output (and the resume file) as cases finish.
  std::vector<std::unique_ptr<JsonlWriter>> streams;
  std::set<std::string> streamed;
  if (!ex.resume_path.empty()) {
    streams.push_back(std::make_unique<JsonlWriter>(ex.resume_path, context,
                                                    std::filesystem::exists(ex.resume_path)));
    streamed.insert(std::filesystem::weakly_canonical(ex.resume_path).string());
  }
  for (const auto& path : flags.outputs) {
    if (format_from_path(path) != Format::jsonl) continue;
    const auto canonical = std::filesystem::weakly_canonical(path).string();
    if (!streamed.insert(canonical).second) continue;
    streams.push_back(std::make_unique<JsonlWriter>(path, context, false));
  }

  RunSettings settings{ex.sampling, threads, ex.quick};
  std::vector<const PlanEntry*> todo;
  for (const auto* e : cases)
    if (!done.count(case_record(e->planned).key())) todo.push_back(e);
  if (todo.size() < cases.size())
    spdlog::info("{} of {} cases already in {}; running {}", cases.size() - todo.size(),
                 cases.size(), ex.resume_path, todo.size());

  Progress progress(todo.size(), flags.progress_mode());
  bool any_failed = false;
  const StopOnSignals stop_on_signals;
  std::size_t started = 0, interrupted = 0;
  for (std::size_t i = 0; i < todo.size() && !stop_requested(); ++i, ++started) {
    const auto& pc = todo[i]->planned;
    const std::string label = case_label(pc);
    progress.begin(i, label);
    Result r = run_case(*todo[i]->technique, pc, settings);
    progress.end(i, label, outcome_text(r));
    interrupted += r.status == Status::interrupted;
    if (r.status == Status::failed) {
      any_failed = true;
      spdlog::debug("{} failed: {}", label, r.message);
    }
    for (auto& s : streams) s->write(r);
    results.push_back(std::move(r));
  }
  progress.finish();

  Report report;
  report.context = context;
  const int signal = stop_signal();
  if (signal) {
    const std::string name = stop_signal_name();
    report.context["interrupted"] = {{"signal", name}, {"cases_not_run", todo.size() - started}};
    spdlog::warn("interrupted by {}: {} of {} cases finished, {} interrupted, {} not run; the reports hold what finished",
                 name, started - interrupted, todo.size(), interrupted, todo.size() - started);
  }
  report.results = std::move(results);
  report.comparisons = compare_to_baselines(report.results);
  emit(report, flags.format, flags.outputs, streamed);
  for (const auto& r : report.results)
    if (r.status == Status::failed) any_failed = true;
  if (signal) return 128 + signal;  // the shell's convention: 130 for SIGINT, 143 for SIGTERM
  return any_failed ? 1 : 0;
}

}  // namespace aiopt::cli
