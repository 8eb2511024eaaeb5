// Machine context: ISA detection, the one thread knob, the measured peaks and the report's
// context block.
#include <catch2/catch.hpp>

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/blas_core.hpp"
#include "core/context.hpp"
#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/hardware.hpp"
#include "core/peaks.hpp"
#include "core/threads.hpp"
#include "support/spinning_process.hpp"

using namespace aiopt;
using Catch::Matchers::Contains;

namespace {

// Restores the thread count a test found, so test order does not matter.
struct ThreadsRestored {
  int saved = threads();
  ~ThreadsRestored() { set_threads(saved); }
};

bool finite_positive(double v) { return std::isfinite(v) && v > 0; }

}  // namespace

TEST_CASE("ISA flags agree with the compiler's __builtin_cpu_supports", "[hardware]") {
  // Our name, and the compiler's own detection (which also checks the OS's XCR0 state).
  const std::vector<std::pair<std::string, bool>> compiler = {
      {"sse4.2", __builtin_cpu_supports("sse4.2")},
      {"avx", __builtin_cpu_supports("avx")},
      {"fma", __builtin_cpu_supports("fma")},
      {"f16c", __builtin_cpu_supports("f16c")},
      {"avx2", __builtin_cpu_supports("avx2")},
      {"avx_vnni", __builtin_cpu_supports("avxvnni")},
      {"avx512f", __builtin_cpu_supports("avx512f")},
      {"avx512dq", __builtin_cpu_supports("avx512dq")},
      {"avx512ifma", __builtin_cpu_supports("avx512ifma")},
      {"avx512cd", __builtin_cpu_supports("avx512cd")},
      {"avx512bw", __builtin_cpu_supports("avx512bw")},
      {"avx512vl", __builtin_cpu_supports("avx512vl")},
      {"avx512vbmi", __builtin_cpu_supports("avx512vbmi")},
      {"avx512_vbmi2", __builtin_cpu_supports("avx512vbmi2")},
      {"avx512_vnni", __builtin_cpu_supports("avx512vnni")},
      {"avx512_bitalg", __builtin_cpu_supports("avx512bitalg")},
      {"avx512_vpopcntdq", __builtin_cpu_supports("avx512vpopcntdq")},
      {"avx512_vp2intersect", __builtin_cpu_supports("avx512vp2intersect")},
      {"avx512_fp16", __builtin_cpu_supports("avx512fp16")},
      {"avx512_bf16", __builtin_cpu_supports("avx512bf16")},
      {"amx_bf16", __builtin_cpu_supports("amx-bf16")},
      {"amx_tile", __builtin_cpu_supports("amx-tile")},
      {"amx_int8", __builtin_cpu_supports("amx-int8")},
  };
  REQUIRE(compiler.size() == hardware::known_isa_flags().size());
  for (const auto& [name, supported] : compiler) {
    INFO("flag " << name);
    CHECK(hardware::has(name) == supported);
  }
  // isa lists exactly the present flags, in the table's order.
  std::vector<std::string> present;
  for (std::string_view name : hardware::known_isa_flags())
    if (hardware::has(name)) present.emplace_back(name);
  CHECK(hardware::cpu().isa == present);
}

TEST_CASE("an unknown ISA flag is an input error naming the closest known one", "[hardware]") {
  CHECK_THROWS_AS(hardware::has("avx512vnni"), InputError);
  CHECK_THROWS_WITH(hardware::has("avx512vnni"),
                    Contains("'avx512vnni'") && Contains("did you mean 'avx512_vnni'"));
  CHECK_THROWS_WITH(hardware::has("amx-tile"),
                    Contains("did you mean 'amx_tile'") && Contains("sse4.2, avx,"));
}

TEST_CASE("cpu info is read and plausible", "[hardware]") {
  const hardware::CpuInfo& cpu = hardware::cpu();
  CHECK(&cpu == &hardware::cpu());
  CHECK_FALSE(cpu.model.empty());
  CHECK(cpu.logical_cores >= 1);
  CHECK(cpu.physical_cores >= 1);
  CHECK(cpu.physical_cores <= cpu.logical_cores);
  CHECK(cpu.memory_bytes > (std::size_t{64} << 20));
  CHECK_FALSE(blas::loaded_core().empty());
  CHECK_THAT(blas::config(), Contains("OpenBLAS"));
}

TEST_CASE("set_threads sets OpenMP's thread count and keeps OpenBLAS on one thread per call", "[hardware]") {
  ThreadsRestored restore;
  set_threads(1);
  CHECK(threads() == 1);
  CHECK(blas_threads() == 1);
  set_threads(3);
  CHECK(threads() == 3);
  CHECK(openblas_get_num_threads() == 1);
  CHECK(blas_threads() == 1);
  CHECK_THROWS_AS(set_threads(0), InputError);
  CHECK_THROWS_WITH(set_threads(-2), Contains("-2") && Contains(">= 1"));
  CHECK(threads() == 3);  // a refused count changes nothing
}

TEST_CASE("the load average is three non-negative numbers where the OS keeps one", "[hardware]") {
  const auto load = hardware::load_average();
#ifdef __linux__
  REQUIRE(load.has_value());
#endif
  if (load)
    for (double l : *load) CHECK((std::isfinite(l) && l >= 0.0));
}

TEST_CASE("busy_cores sees another process spin through its window", "[hardware]") {
  const int cores = hardware::cpu().logical_cores;
  const auto idle = hardware::busy_cores();
#ifdef __linux__
  REQUIRE(idle.has_value());
#endif
  if (!idle) return;

  // The spinning process keeps about one core busy; more when other processes run too.
  std::optional<double> other;
  {
    const aiopt::test::SpinningProcess spinning;
    other = hardware::busy_cores(std::chrono::milliseconds(200));
  }
  REQUIRE(other.has_value());
  INFO("busy cores: before " << *idle << ", beside a spinning process " << *other << ", of " << cores);
  CHECK(*other >= 0.5);
}

TEST_CASE("busy_cores leaves out this process's own threads", "[hardware]") {
  // One spinning thread of ours per core: counted, they would read as every core busy. Left out,
  // what remains is other processes' share, which our threads hold down to well under all cores
  // (with one other process busy beside them on 2 cores: about 0.7).
  const int cores = hardware::cpu().logical_cores;
  // Other processes' load first: where they already hold all but half a core, ours beside them
  // cannot show whether they are left out.
  const auto before = hardware::busy_cores(std::chrono::milliseconds(200));
  std::atomic<bool> stop{false};
  std::vector<std::thread> spinners;
  for (int i = 0; i < cores; ++i)
    spinners.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
      }
    });
  const auto busy = hardware::busy_cores(std::chrono::milliseconds(200));
  stop = true;
  for (auto& t : spinners) t.join();
#ifdef __linux__
  REQUIRE(busy.has_value());
#endif
  if (!busy || !before) return;
  INFO("busy cores beside " << cores << " spinning threads of ours: " << *busy << ", before them: " << *before);
  if (*before > cores - 0.5) {
    WARN("not judged: other processes already held " << *before << " of " << cores << " cores");
    return;
  }
  CHECK(*busy <= cores - 0.5);
}

TEST_CASE("a run is warned of when its threads do not fit beside the busy cores", "[hardware]") {
  using hardware::busy_machine_warning;
  // Fits: under half a busy core, or enough free cores for every thread.
  CHECK_FALSE(busy_machine_warning(0.4, 2, 2).has_value());
  CHECK_FALSE(busy_machine_warning(1.0, 2, 1).has_value());
  CHECK_FALSE(busy_machine_warning(3.0, 16, 2).has_value());
  CHECK_FALSE(busy_machine_warning(std::nan(""), 2, 2).has_value());
  // Does not fit.
  const auto two = busy_machine_warning(0.5, 2, 2);
  REQUIRE(two.has_value());
  CHECK_THAT(*two, Contains("keep 0.5 of its 2 cores busy") && Contains("uses 2 threads") && Contains("--threads"));
  const auto one = busy_machine_warning(1.6, 2, 1);
  REQUIRE(one.has_value());
  CHECK_THAT(*one, Contains("keep 1.6 of its 2 cores busy") && Contains("uses 1 thread."));
}

TEST_CASE("host probes return positive finite peaks, cached per thread count", "[hardware]") {
  const peaks::Bandwidth first = peaks::host_bandwidth();
  CHECK(finite_positive(first.copy_gbs));
  CHECK(finite_positive(first.triad_gbs));
  const peaks::Bandwidth again = peaks::host_bandwidth();
  CHECK(again.copy_gbs == first.copy_gbs);
  CHECK(again.triad_gbs == first.triad_gbs);

  const double gflops = peaks::host_sgemm_gflops();
  CHECK(finite_positive(gflops));
  CHECK(peaks::host_sgemm_gflops() == gflops);
}

TEST_CASE("the CUDA copy probe refuses a device that is not there", "[hardware]") {
  // The index one past the last device never exists, with or without a GPU.
  CHECK_THROWS_AS(peaks::cuda_copy_gbs(cuda::device_count()), DeviceUnavailable);
  CHECK_THROWS_AS(peaks::cuda_copy_gbs(-1), DeviceUnavailable);
  if (cuda::device_count() == 0) {
    CHECK_THROWS_AS(peaks::cuda_copy_gbs(0), DeviceUnavailable);
    CHECK_THROWS_WITH(peaks::cuda_copy_gbs(0), Contains(cuda::unavailable_reason()));
  } else {
    WARN("a CUDA device is present: its probe is tested by the [gpu] case");
  }
}

// The GPU check's first line and its verdict on a GPU it cannot use (tests/main.cpp).
TEST_CASE("the CUDA versions line names the runtime and the driver", "[hardware]") {
  const std::string v = cuda::versions();
  CHECK_THAT(v, Catch::Matchers::StartsWith("CUDA runtime "));
  CHECK_THAT(v, Catch::Matchers::Contains(", driver "));
  CHECK((cuda::runtime_version() == 0) == (v.find("runtime none") != std::string::npos));
  CHECK((cuda::driver_version() == 0) == (v.find("driver none") != std::string::npos));
  if (cuda::driver_version() == 0) CHECK_FALSE(cuda::driver_too_old());
  if (cuda::driver_too_old()) CHECK_THAT(cuda::unavailable_reason(), Catch::Matchers::Contains(v));
  if (cuda::unavailable_reason().empty()) CHECK_FALSE(cuda::driver_too_old());
}

TEST_CASE("the CUDA copy probe measures each device, cached", "[hardware][gpu]") {
  const auto devices = cuda::devices();
  REQUIRE_FALSE(devices.empty());
  for (const cuda::DeviceInfo& d : devices) {
    INFO("cuda:" << d.index << " " << d.name);
    const double gbs = peaks::cuda_copy_gbs(d.index);
    CHECK(finite_positive(gbs));
    CHECK(peaks::cuda_copy_gbs(d.index) == gbs);
    // Counting read + write bytes, a copy cannot beat the memory's peak; a byte-count error
    // (say, 4x) would.
    if (d.peak_bandwidth_gbs > 0) CHECK(gbs < 1.1 * d.peak_bandwidth_gbs);
  }
}

namespace {

void check_type(const nlohmann::ordered_json& j, const std::string& key,
                nlohmann::json::value_t type) {
  INFO("key " << key << " in " << j.dump());
  REQUIRE(j.contains(key));
  CHECK(j.at(key).type() == type);
}

void check_string_or_null(const nlohmann::ordered_json& j, const std::string& key) {
  INFO("key " << key << " in " << j.dump());
  REQUIRE(j.contains(key));
  CHECK((j.at(key).is_string() || j.at(key).is_null()));
}

// Counts and sizes: nlohmann stores int as signed and size_t as unsigned; both are integers.
void check_integer(const nlohmann::ordered_json& j, const std::string& key) {
  INFO("key " << key << " in " << j.dump());
  REQUIRE(j.contains(key));
  CHECK(j.at(key).is_number_integer());
  CHECK(j.at(key) >= 0);
}

void check_env(const nlohmann::ordered_json& env, const char* name) {
  INFO("environment variable " << name);
  const char* value = std::getenv(name);
  if (value)
    CHECK(env.at(name) == value);
  else
    CHECK(env.at(name).is_null());
}

}  // namespace

TEST_CASE("the context block has every field with its JSON type", "[hardware]") {
  using t = nlohmann::json::value_t;
  const auto check_number = [](const nlohmann::ordered_json& j, const std::string& key) {
    INFO("key " << key << " in " << j.dump());
    REQUIRE(j.contains(key));
    CHECK(j.at(key).is_number());
  };
  const bool with_probes = GENERATE(false, true);
  INFO("with_probes " << with_probes);
  const nlohmann::ordered_json c = machine_context(with_probes);

  for (const char* key : {"aiopt_version", "git_commit", "build_type", "compiler", "hostname", "os"})
    check_type(c, key, t::string);
  check_string_or_null(c, "cuda_compiler");
  check_type(c, "cuda_architectures", t::array);
  for (const auto& arch : c.at("cuda_architectures")) CHECK(arch.is_string());
  check_type(c, "sanitizers", t::boolean);
  check_integer(c, "threads");
  CHECK(c.at("threads") == threads());
#ifdef __linux__
  check_type(c, "load_average", t::array);
  REQUIRE(c.at("load_average").size() == 3);
  for (const auto& load : c.at("load_average")) CHECK((load.is_number() && load.get<double>() >= 0.0));
  check_number(c, "busy_cores");
#else
  CHECK((c.at("load_average").is_array() || c.at("load_average").is_null()));
  CHECK((c.at("busy_cores").is_number() || c.at("busy_cores").is_null()));
#endif

  const auto& cpu = c.at("cpu");
  check_type(cpu, "model", t::string);
  check_type(cpu, "vendor", t::string);
  check_type(cpu, "cores", t::object);
  check_integer(cpu.at("cores"), "logical");
  check_integer(cpu.at("cores"), "physical");
  check_type(cpu, "isa", t::array);
  CHECK(cpu.at("isa").get<std::vector<std::string>>() == hardware::cpu().isa);
  check_type(cpu, "caches", t::object);
  for (const char* key : {"l1d_bytes", "l2_bytes", "l3_bytes"})
    check_integer(cpu.at("caches"), key);
  check_integer(cpu, "memory_bytes");
  CHECK(cpu.at("memory_bytes") == hardware::cpu().memory_bytes);

  const auto& blas = c.at("blas");
  CHECK(blas.at("name") == "OpenBLAS");
  check_type(blas, "core", t::string);
  CHECK(blas.at("core") == blas::loaded_core());
  CHECK(blas.at("core_source") == blas::to_string(blas::core_choice().source));
  CHECK(blas.at("check") == "passed");
  check_type(blas, "warnings", t::array);
  check_type(blas, "config", t::string);
  check_integer(blas, "threads");
  check_type(blas, "env", t::object);
  for (const char* name : {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS"})
    check_env(blas.at("env"), name);

  if (with_probes) {
    const auto& p = c.at("peaks");
    for (const char* key : {"host_copy_gbs", "host_triad_gbs", "host_sgemm_gflops"})
      check_number(p, key);
    CHECK(p.at("host_triad_gbs") == peaks::host_bandwidth().triad_gbs);
    CHECK(p.at("host_copy_gbs") == peaks::host_bandwidth().copy_gbs);
    CHECK(p.at("host_sgemm_gflops") == peaks::host_sgemm_gflops());
    check_integer(p, "host_bandwidth_array_bytes");
    check_integer(p, "host_sgemm_size");
  } else {
    CHECK_FALSE(c.contains("peaks"));
  }

  const auto& cuda = c.at("cuda");
  check_type(cuda, "built", t::boolean);
  CHECK(cuda.at("built") == cuda::built_with_cuda());
  check_number(cuda, "runtime_version");
  check_number(cuda, "driver_version");
  check_string_or_null(cuda, "unavailable_reason");
  CHECK(cuda.at("unavailable_reason").is_null() == cuda::unavailable_reason().empty());
  if (!cuda::built_with_cuda()) CHECK(c.at("cuda_compiler").is_null());

  check_type(c, "devices", t::array);
  CHECK(c.at("devices").size() == static_cast<std::size_t>(cuda::device_count()));
  for (const auto& d : c.at("devices")) {
    check_number(d, "index");
    check_type(d, "name", t::string);
    check_type(d, "sm", t::string);
    CHECK_THAT(d.at("sm").get<std::string>(), Contains("."));
    for (const char* key : {"multiprocessors", "memory_bytes", "l2_bytes", "peak_bandwidth_gbs"})
      check_number(d, key);
    if (with_probes) {
      REQUIRE(d.contains("measured_copy_gbs"));
      CHECK(d.at("measured_copy_gbs").is_number());
    } else {
      CHECK_FALSE(d.contains("measured_copy_gbs"));
    }
  }
}
