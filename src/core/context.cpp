#include "core/context.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <utility>

#include "core/blas_core.hpp"
#include "core/build_info.hpp"
#include "core/git_commit.hpp"
#include "core/cuda_runtime.hpp"
#include "core/hardware.hpp"
#include "core/peaks.hpp"
#include "core/threads.hpp"

namespace aiopt {

namespace {

using json = nlohmann::ordered_json;

json string_or_null(std::string_view s) {
  const auto first = s.find_first_not_of(' ');
  if (first == std::string_view::npos) return nullptr;
  return std::string(s.substr(first, s.find_last_not_of(' ') - first + 1));
}

json environment(const char* name) {
  const char* value = std::getenv(name);
  return value ? json(value) : json(nullptr);
}

// CMake's list "80;90" (or "native", or empty without CUDA) as ["80", "90"].
json architectures(std::string_view list) {
  json out = json::array();
  while (!list.empty()) {
    const auto semicolon = list.find(';');
    if (semicolon != 0) out.push_back(std::string(list.substr(0, semicolon)));
    if (semicolon == std::string_view::npos) break;
    list.remove_prefix(semicolon + 1);
  }
  return out;
}

json cpu_block() {
  const hardware::CpuInfo& cpu = hardware::cpu();
  return {{"model", cpu.model},
          {"vendor", cpu.vendor},
          {"cores", {{"logical", cpu.logical_cores}, {"physical", cpu.physical_cores}}},
          {"isa", cpu.isa},
          {"caches",
           {{"l1d_bytes", cpu.l1d_bytes}, {"l2_bytes", cpu.l2_bytes}, {"l3_bytes", cpu.l3_bytes}}},
          {"memory_bytes", cpu.memory_bytes}};
}

json blas_block() {
  const blas::CoreChoice& choice = blas::core_choice();
  return {{"name", "OpenBLAS"},
          {"core", choice.core},
          {"core_source", blas::to_string(choice.source)},
          {"best_core", string_or_null(choice.best)},
          {"check", choice.check},
          {"warnings", choice.warnings},
          {"config", blas::config()},
          {"threads", blas_threads()},
          {"env",
           {{"OPENBLAS_CORETYPE", environment("OPENBLAS_CORETYPE")},
            {"OPENBLAS_L2_SIZE", environment("OPENBLAS_L2_SIZE")},
            {"OMP_NUM_THREADS", environment("OMP_NUM_THREADS")}}}};
}

json peaks_block() {
  const peaks::Bandwidth bandwidth = peaks::host_bandwidth();
  return {{"host_copy_gbs", bandwidth.copy_gbs},
          {"host_triad_gbs", bandwidth.triad_gbs},
          {"host_sgemm_gflops", peaks::host_sgemm_gflops()},
          {"host_bandwidth_array_bytes", peaks::host_bandwidth_array_bytes()},
          {"host_sgemm_size", peaks::host_sgemm_size}};
}

json cuda_block() {
  const std::string why = cuda::unavailable_reason();
  return {{"built", cuda::built_with_cuda()},
          {"runtime_version", cuda::runtime_version()},
          {"driver_version", cuda::driver_version()},
          {"unavailable_reason", why.empty() ? json(nullptr) : json(why)}};
}

json devices_block(bool with_probes) {
  json out = json::array();
  for (const cuda::DeviceInfo& d : cuda::devices()) {
    json device = {{"index", d.index},
                   {"name", d.name},
                   {"sm", std::to_string(d.sm_major) + "." + std::to_string(d.sm_minor)},
                   {"multiprocessors", d.multiprocessors},
                   {"memory_bytes", d.memory_bytes},
                   {"l2_bytes", d.l2_bytes},
                   {"peak_bandwidth_gbs", d.peak_bandwidth_gbs}};
    if (with_probes) {
      // One device failing its probe (out of memory, a check) must not cost the whole report.
      try {
        device["measured_copy_gbs"] = peaks::cuda_copy_gbs(d.index);
      } catch (const std::exception& e) {
        device["measured_copy_gbs"] = nullptr;
        device["probe_error"] = e.what();
      }
    }
    out.push_back(std::move(device));
  }
  return out;
}

std::string hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return {};
  return name;
}

std::string operating_system() {
  utsname u{};
  if (uname(&u) != 0) return {};
  return std::string(u.sysname) + " " + u.release + " " + u.machine;
}

}  // namespace

nlohmann::ordered_json machine_context(bool with_probes) {
  // Read first, before the probes add load of our own.
  const auto load = hardware::load_average();
  const auto busy = hardware::busy_cores();
  json context = {{"aiopt_version", build::version},
                  {"git_commit", build::git_commit},
                  {"build_type", build::build_type},
                  {"compiler", build::cxx_compiler},
                  {"cuda_compiler", string_or_null(build::cuda_compiler)},
                  {"cuda_architectures", architectures(build::cuda_architectures)},
                  {"sanitizers", build::sanitizers},
                  {"cpu", cpu_block()},
                  {"blas", blas_block()},
                  {"threads", threads()},
                  {"load_average", load ? json(*load) : json(nullptr)},
                  {"busy_cores", busy ? json(*busy) : json(nullptr)}};
  if (with_probes) context["peaks"] = peaks_block();
  context["cuda"] = cuda_block();
  context["devices"] = devices_block(with_probes);
  context["hostname"] = hostname();
  context["os"] = operating_system();
  return context;
}

}  // namespace aiopt
