// aiopt bench: one technique (or the experiments of a config file), its default cases or the
// parameter grid given with --set, measured and summarized.
#include <algorithm>

#include "cli/app.hpp"
#include "cli/commands.hpp"
#include "cli/execution.hpp"
#include "cli/lookup.hpp"
#include "core/device.hpp"
#include "core/error.hpp"
#include "techniques/registry.hpp"

namespace aiopt::cli {

namespace {

struct BenchOptions {
  std::string technique;
  std::vector<std::string> variants;
  std::string device;
  std::vector<std::string> sets;
  std::string config;
  RunFlags flags;
};

std::vector<std::string> device_list(const std::string& text) {
  if (text.empty()) return {};
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const auto comma = text.find(',', start);
    const std::string item = text.substr(start, comma - start);
    if (item == "all") {
      out.clear();
      for (const DeviceKind kind : device_kinds) out.push_back(to_string(kind));
    } else if (device_kind_named(item)) {
      if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
    } else {
      throw InputError("--device '" + item + "' is unknown (allowed: cpu, cuda, all)");
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// --set replaces the axis of the same name; a parameter in a zip group cannot be overridden alone.
void apply_set(Experiment& e, const Technique& t, const std::string& assignment) {
  Axis axis = parse_set(t, assignment);
  for (const auto& group : e.zips)
    for (const auto& a : group)
      if (a.name == axis.name)
        throw InputError("--set " + assignment + ": '" + axis.name + "' advances in a zip group of " +
                         e.origin + "; change the file instead");
  auto it = std::find_if(e.axes.begin(), e.axes.end(), [&](const Axis& a) { return a.name == axis.name; });
  if (it != e.axes.end())
    *it = std::move(axis);
  else
    e.axes.push_back(std::move(axis));
}

int run_bench(const BenchOptions& o, const std::vector<std::string>& argv) {
  o.flags.apply_verbosity();
  if (o.technique.empty() && o.config.empty())
    throw InputError("bench needs --technique NAME or --config FILE (techniques: " + technique_names() + ")");
  SettingsOverride settings;
  std::vector<Experiment> experiments;
  if (!o.config.empty()) {
    ExperimentFile file = load_experiment_file(o.config, techniques());
    settings = file.settings;
    for (auto& e : file.experiments)
      if (o.technique.empty() || e.technique == o.technique) experiments.push_back(std::move(e));
    if (experiments.empty())
      throw InputError(o.config + ": no experiment names technique '" + o.technique + "'");
  } else {
    Experiment e;
    e.technique = find_technique(o.technique).name();
    e.origin = "command line";
    experiments.push_back(std::move(e));
  }
  const auto devices = device_list(o.device);
  for (auto& e : experiments) {
    const Technique& t = find_technique(e.technique);
    if (!o.variants.empty()) e.variants = o.variants;
    if (!devices.empty()) e.devices = devices;
    for (const auto& s : o.sets) apply_set(e, t, s);
  }
  return execute(plan_execution(experiments, o.flags, settings), o.flags, argv);
}

}  // namespace

void add_bench(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<BenchOptions>();
  auto* cmd = app.add_subcommand("bench", "Measure one technique: its baseline and variants, gains and costs");
  cmd->add_option("-t,--technique", o->technique, "Technique to run: " + technique_names());
  cmd->add_option("--variant", o->variants, "Only these variants (comma-separated); the baseline always runs")
      ->delimiter(',');
  cmd->add_option("--device", o->device, "cpu, cuda or all (default: cpu, plus cuda when a GPU is present)");
  cmd->add_option("--set", o->sets,
                  "Parameter values: key=v1,v2 (a list is an axis), key=16-1024*2 or key=0-100+25 (ranges); may repeat");
  cmd->add_option("--config", o->config, "Experiment file (YAML or JSON); --technique picks its experiments")
      ->check(CLI::ExistingFile);
  o->flags.add_to(*cmd);
  cmd->footer("Formats: table, md, csv, json, jsonl. Techniques: " + technique_names() + ".");
  cmd->callback([o, &exit_code] { exit_code = run_bench(*o, command_line()); });
}

}  // namespace aiopt::cli
