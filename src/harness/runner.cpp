#include "harness/runner.hpp"

#include <chrono>
#include <cmath>
#include <memory>
#include <new>
#include <optional>
#include <sstream>

#include "core/canary.hpp"
#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/memory.hpp"
#include "core/peaks.hpp"
#include "harness/case_estimate.hpp"
#include "harness/interrupt.hpp"
#include "harness/memory_level.hpp"
#include "harness/statistics.hpp"
#include "harness/step_timer.hpp"
#include "kernels/cache_flush.hpp"

namespace aiopt {

namespace {

std::string shell_quote(const std::string& s) {
  if (s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,=/:+") ==
      std::string::npos)
    return s;
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

// Achieved rates of the declared work at the median time, and their fraction of the device's
// measured peak (the roofline of README "What a result means").
void add_roofline(const Work& work, double median_s, const Device& device,
                  std::vector<Metric>& metrics) {
  if (median_s <= 0) return;
  if (work.bytes) {
    const double gbs = *work.bytes / median_s / 1e9;
    metrics.push_back({"achieved_bandwidth", gbs, "GB/s", Better::higher, false});
    const double peak = device.is_cpu() ? peaks::host_bandwidth().triad_gbs
                                        : peaks::cuda_copy_gbs(device.index);
    if (peak > 0) metrics.push_back({"bandwidth_fraction", gbs / peak, "", Better::higher, false});
  }
  if (work.flops) {
    const double gflops = *work.flops / median_s / 1e9;
    metrics.push_back({"achieved_gflops", gflops, "GFLOP/s", Better::higher, false});
    if (device.is_cpu()) {
      const double peak = peaks::host_sgemm_gflops();
      if (peak > 0) metrics.push_back({"compute_fraction", gflops / peak, "", Better::higher, false});
    }
  }
}

// The level a declared working set fits on `device`, and whether the caches were flushed.
WorkingSet working_set_of(double bytes, const Device& device, bool cache_flushed) {
  const MemoryLevel level = fitting_level(bytes, memory_levels(device));
  return {static_cast<std::size_t>(bytes), level.name, level.bytes, cache_flushed};
}

// A number as the shortest text that reads back to the same double: "0.05", "2".
std::string flag_number(double v) {
  std::string text = ojson(v).dump();
  if (text.size() > 2 && text.compare(text.size() - 2, 2, ".0") == 0) text.resize(text.size() - 2);
  return text;
}

// The sampling flags whose values differ from those the mode (--quick or not) picks by itself.
std::string sampling_flags(const Sampling& s, bool quick) {
  const Sampling d = quick ? Sampling::quick() : Sampling{};
  std::string flags;
  if (s.warmup != d.warmup) flags += " --warmup " + std::to_string(s.warmup);
  if (s.min_samples != d.min_samples) flags += " --min-samples " + std::to_string(s.min_samples);
  if (s.min_time_s != d.min_time_s) flags += " --min-time " + flag_number(s.min_time_s);
  if (s.max_noise != d.max_noise) flags += " --max-noise " + flag_number(s.max_noise);
  if (s.timeout_s != d.timeout_s) flags += " --timeout " + flag_number(s.timeout_s);
  if (s.flush_cache) flags += " --flush-cache";
  if (s.max_case_s != d.max_case_s) flags += " --max-case-time " + flag_number(s.max_case_s);
  if (s.force) flags += " --force";
  return flags;
}

}  // namespace

Timing make_timing(const std::vector<double>& seconds, int warmup, std::size_t steps_per_sample) {
  Timing t;
  t.unit = "ms";
  t.steps_per_sample = steps_per_sample;
  t.samples.reserve(seconds.size());
  for (double s : seconds) t.samples.push_back(s * 1e3 / static_cast<double>(steps_per_sample));
  static_cast<SampleSummary&>(t) = summarize(t.samples);
  t.warmup = static_cast<std::size_t>(warmup);
  return t;
}

std::size_t steps_per_sample(const std::function<double(std::size_t)>& time_steps, double min_sample_s) {
  constexpr std::size_t most = 10000;
  std::size_t n = 1;
  for (double t = time_steps(n); t < min_sample_s && n < most; t = time_steps(n)) {
    // Aim 10% past the minimum from the rate just measured; a clock that read 0 gets 10x.
    const double wanted = t > 0 ? std::ceil(1.1 * min_sample_s / t * static_cast<double>(n)) : 10.0 * static_cast<double>(n);
    n = std::min(most, std::max(n + 1, static_cast<std::size_t>(wanted)));
  }
  return n;
}

std::string repro_command(const PlannedCase& planned, const RunSettings& settings) {
  std::ostringstream os;
  os << "aiopt bench --technique " << planned.c.technique << " --variant " << planned.c.variant
     << " --device " << to_string(planned.device);
  for (const auto& [name, value] : planned.c.params.values())
    os << " --set " << shell_quote(name + "=" + to_string(value));
  os << " --seed " << planned.c.seed << " --threads " << settings.threads;
  if (settings.quick) os << " --quick";
  os << sampling_flags(settings.sampling, settings.quick);
  return os.str();
}

Result case_record(const PlannedCase& planned) {
  Result r;
  r.technique = planned.c.technique;
  r.variant = planned.c.variant;
  r.baseline = planned.baseline;
  r.device = to_string(planned.device == DeviceKind::cpu ? Device::cpu() : Device::cuda(0));
  r.params = ojson::parse(planned.c.params.to_json().dump());
  r.seed = planned.c.seed;
  return r;
}

namespace {

// Throws Interrupted when the user has asked the run to stop.
void stop_point(const char* when) {
  if (!stop_requested()) return;
  throw Interrupted("interrupted by " + stop_signal_name() + " " + when);
}

}  // namespace

Result run_case(const Technique& technique, const PlannedCase& planned, const RunSettings& settings) {
  const Device device = planned.device == DeviceKind::cpu ? Device::cpu() : Device::cuda(0);
  Result r = case_record(planned);
  r.repro = repro_command(planned, settings);

  if (device.is_cuda()) {
    const std::string why = cuda::unavailable_reason();
    if (!why.empty()) {
      r.status = Status::skipped;
      r.message = why;
      return r;
    }
  }

  try {
    // A CUDA case starts with no cached blocks, so that its reserved peak is its own.
    memory::release_cached(device);
    memory::Scope device_scope(device);
    std::optional<memory::Scope> host_scope;
    if (device.is_cuda()) host_scope.emplace(Device::cpu());

    stop_point("before the case started");
    const bool rss_from_here = memory::reset_peak_rss();
    std::unique_ptr<Run> run = technique.prepare(planned.c, device);
    stop_point("while the case was prepared");
    if (const std::string why = too_long_reason(estimate_case(run->work(), device, settings.sampling), settings.sampling);
        !why.empty()) {
      r.status = Status::skipped;
      r.message = why;
      return r;
    }
    StepTimer timer(device, run->stream());
    std::optional<kernels::CacheFlush> flush;
    if (settings.sampling.flush_cache) flush.emplace(device);

    if (device.is_cpu()) r.canary_gflops = canary::host_gflops();
    for (int i = 0; i < settings.sampling.warmup; ++i) run->step();
    timer.synchronize();
    // Timed batches of growing size set how many steps a sample times; a flushed sample times
    // one, since only the first step after a flush would start cold.
    const auto run_steps = [&](std::size_t n) {
      for (std::size_t i = 0; i < n; ++i) run->step();
    };
    const std::size_t steps =
        flush ? 1 : steps_per_sample([&](std::size_t n) { return timer.time([&] { run_steps(n); }); });
    const auto batch = [&] { run_steps(steps); };

    std::vector<double> samples;
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      if (flush) {
        flush->flush(run->stream());
        timer.synchronize();
      }
      samples.push_back(timer.time(batch));
      stop_point("while the case was sampled");
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (sampling_done(settings.sampling, samples, elapsed)) break;
    }

    // The memory of the work itself: read before finish(), whose checks may allocate a reference.
    MemoryRecord mem;
    mem.peak_bytes = device_scope.peak_bytes();
    mem.host_peak_bytes = host_scope ? host_scope->peak_bytes() : mem.peak_bytes;
    if (rss_from_here) mem.peak_rss_bytes = memory::peak_rss_bytes();
    if (device.is_cuda()) mem.reserved_peak_bytes = device_scope.reserved_peak_bytes();

    r.metrics = run->finish();
    r.series = run->series();
    r.timing = make_timing(samples, settings.sampling.warmup, steps);
    r.timing->noise_known = static_cast<int>(samples.size()) >= settings.sampling.min_samples;
    const Work work = run->work();
    add_roofline(work, r.timing->median * 1e-3, device, r.metrics);
    if (work.working_set_bytes)
      r.working_set = working_set_of(*work.working_set_bytes, device, settings.sampling.flush_cache);
    r.memory = mem;
    r.status = Status::ok;
  } catch (const DeviceUnavailable& e) {
    r.status = Status::skipped;
    r.message = e.what();
  } catch (const NotApplicable& e) {
    r.status = Status::skipped;
    r.message = std::string("not applicable: ") + e.what();
  } catch (const Interrupted& e) {
    r.status = Status::interrupted;
    r.message = e.what();
  } catch (const CheckFailed& e) {
    r.status = Status::failed;
    r.message = std::string("check failed: ") + e.what();
  } catch (const std::bad_alloc&) {
    r.status = Status::failed;
    r.message = "out of memory on " + to_string(device);
  } catch (const std::exception& e) {
    r.status = Status::failed;
    r.message = e.what();
  }
  if (r.status != Status::ok) {
    r.timing.reset();
    r.memory.reset();
    r.working_set.reset();
    r.canary_gflops.reset();
    r.metrics.clear();
    r.series.clear();
  }
  return r;
}

}  // namespace aiopt
