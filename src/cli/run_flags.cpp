#include "cli/run_flags.hpp"

#include <spdlog/spdlog.h>

#include "cli/number_checks.hpp"
#include "report/printers.hpp"

namespace aiopt::cli {

void RunFlags::add_to(CLI::App& cmd) {
  cmd.add_flag("--dry-run", dry_run, "Print the cases that would run, and stop");
  cmd.add_flag("--quick", quick, "Small sizes and short sampling: shows each trade-off in seconds");
  cmd.add_option("--warmup", warmup, "Runs before sampling (default 1)")->check(non_negative_number());
  cmd.add_option("--min-samples", min_samples, "Fewest samples per case (default 5; quick 3)")
      ->check(positive_number());
  cmd.add_option("--min-time", min_time_s, "Least total measured seconds per case (default 0.5; quick 0.05)")
      ->check(non_negative_number());
  cmd.add_option("--max-noise", max_noise,
                 "Stop when the relative standard error of the mean is below this (default 0.03; quick 0.1)")
      ->check(non_negative_number());
  cmd.add_option("--timeout", timeout_s, "Stop sampling a case after this many seconds (default 10; quick 2)")
      ->check(positive_number());
  cmd.add_flag("--flush-cache", flush_cache, "Evict caches before every sample (cold measurement)");
  cmd.add_option("--max-case-time", max_case_s,
                 "Skip a case whose least possible time, from its declared work and the measured peaks, "
                 "exceeds this many seconds (default 600)")
      ->check(positive_number());
  cmd.add_flag("--force", force, "Run cases estimated past --max-case-time anyway");
  cmd.add_option("--threads", threads, "CPU threads for OpenMP and OpenBLAS (default: all cores)")
      ->check(positive_number());
  cmd.add_option("--seed", seed, "Seed for inputs and weights (default 1)");
  cmd.add_option("-f,--format", format, "Format on stdout: table, md, csv, json, jsonl, gbench (default table)")
      ->check(CLI::IsMember(format_names()))
      ->take_last();
  cmd.add_option("-o,--output", outputs,
                 "Also write the report to FILE; the format follows the extension "
                 "(.json .jsonl .csv .md .gbench.json .txt); may repeat. A .jsonl file is written as each case finishes");
  cmd.add_option("--progress", progress, "Progress on stderr: auto (live bar on a terminal), always, never")
      ->check(CLI::IsMember({"auto", "always", "never"}))
      ->take_last();
  cmd.add_flag("-v,--verbose", verbose, "More log detail on stderr");
  cmd.add_flag("-q,--quiet", quiet, "Only warnings and errors on stderr");
}

bool RunFlags::effective_quick(const SettingsOverride& file) const {
  return quick || file.quick.value_or(false);
}

Sampling RunFlags::sampling(const SettingsOverride& file) const {
  Sampling s = effective_quick(file) ? Sampling::quick() : Sampling{};
  if (file.warmup) s.warmup = static_cast<int>(*file.warmup);
  if (file.min_samples) s.min_samples = static_cast<int>(*file.min_samples);
  if (file.min_time_s) s.min_time_s = *file.min_time_s;
  if (file.max_noise) s.max_noise = *file.max_noise;
  if (file.timeout_s) s.timeout_s = *file.timeout_s;
  if (warmup) s.warmup = *warmup;
  if (min_samples) s.min_samples = *min_samples;
  if (min_time_s) s.min_time_s = *min_time_s;
  if (max_noise) s.max_noise = *max_noise;
  if (timeout_s) s.timeout_s = *timeout_s;
  s.flush_cache = flush_cache;
  if (max_case_s) s.max_case_s = *max_case_s;
  s.force = force;
  return s;
}

std::uint64_t RunFlags::effective_seed(const SettingsOverride& file) const {
  if (seed) return *seed;
  return file.seed.value_or(1);
}

ProgressMode RunFlags::progress_mode() const {
  if (quiet || progress == "never") return ProgressMode::never;
  if (progress == "always") return ProgressMode::always;
  return ProgressMode::automatic;
}

void RunFlags::apply_verbosity() const {
  if (verbose) spdlog::set_level(spdlog::level::debug);
  else if (quiet) spdlog::set_level(spdlog::level::warn);
  else spdlog::set_level(spdlog::level::info);
}

}  // namespace aiopt::cli
