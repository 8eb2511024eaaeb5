// aiopt sweep: run an experiment file, streaming results, resumable and shardable.
#include "cli/app.hpp"
#include "cli/commands.hpp"
#include "cli/execution.hpp"
#include "cli/experiment_path.hpp"
#include "techniques/registry.hpp"

namespace aiopt::cli {

namespace {

struct SweepOptions {
  std::string file;
  std::string resume;
  std::string shard;
  RunFlags flags;
};

int run_sweep(const SweepOptions& o, const std::vector<std::string>& argv) {
  o.flags.apply_verbosity();
  ExperimentFile file = load_experiment_file(find_experiment_file(o.file), techniques());
  Execution ex = plan_execution(file.experiments, o.flags, file.settings);
  if (!o.shard.empty()) ex.shard = Shard::parse(o.shard);
  ex.resume_path = o.resume;
  return execute(ex, o.flags, argv);
}

}  // namespace

void add_sweep(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<SweepOptions>();
  auto* cmd = app.add_subcommand("sweep", "Run an experiment file (YAML or JSON): many techniques and parameter grids");
  std::string shipped;
  for (const auto& name : shipped_experiments()) shipped += (shipped.empty() ? "" : ", ") + name;
  cmd->add_option("file", o->file,
                  "Experiment file (see docs/configs.md), or the name of one that ships with aiopt: " + shipped)
      ->required();
  cmd->add_option("--resume", o->resume,
                  "JSONL file of an earlier run of this sweep: skip its finished cases, append new ones");
  cmd->add_option("--shard", o->shard, "Run only shard i of N (i/N, 0 <= i < N), e.g. a job array's index");
  o->flags.add_to(*cmd);
  cmd->callback([o, &exit_code] { exit_code = run_sweep(*o, command_line()); });
}

}  // namespace aiopt::cli
