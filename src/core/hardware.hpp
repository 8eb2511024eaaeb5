#pragma once
// What this host is: CPU model, cores, the vector ISA extensions the CPU *and* the OS enable,
// caches, memory. A number in a report means little without these (an AVX-512 GEMM and an AVX2
// GEMM differ by 2x on the same CPU); core/blas_core.hpp says which kernels OpenBLAS runs.
#include <array>
#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aiopt::hardware {

struct CpuInfo {
  std::string model;   // "AMD EPYC 9B45", from /proc/cpuinfo or the cpuid brand string
  std::string vendor;  // "AuthenticAMD", "GenuineIntel"; empty off x86
  int logical_cores = 0;
  int physical_cores = 0;  // distinct (package, core) pairs in /proc/cpuinfo; best effort
  // Present extensions only, in the order of known_isa_flags(), named as Linux's
  // /proc/cpuinfo names them ("avx512_vnni", "avx_vnni", "amx_tile"), "sse4.2" spelled so.
  std::vector<std::string> isa;
  std::size_t l1d_bytes = 0, l2_bytes = 0, l3_bytes = 0;  // 0 where the OS does not say
  std::size_t memory_bytes = 0;                           // physical memory
};

// Read once per process (cpuid, /proc/cpuinfo, sysconf).
const CpuInfo& cpu();

// Every flag name has() and CpuInfo::isa know, in their order.
std::span<const std::string_view> known_isa_flags();

// Whether the CPU has the extension and the OS saves its registers. An unknown name is an
// InputError that suggests the closest known one (so a typo never reads as "absent").
bool has(std::string_view isa_flag);

// The system's run-queue load averaged over 1, 5 and 15 minutes (getloadavg). It lags by about
// a minute (a build that just finished still shows), so busy_cores() is what a warning uses.
// Empty where the OS does not say.
std::optional<std::array<double, 3>> load_average();

// How many cores other processes keep busy now: the non-idle share of all CPU time in /proc/stat
// over `window`, which this thread sleeps through, less this process's own time, times the
// logical cores. Steal time (another virtual machine on the same host) counts as busy. Empty
// where there is no /proc/stat.
std::optional<double> busy_cores(std::chrono::milliseconds window = std::chrono::milliseconds(100));

// A warning when `threads` of ours would not fit beside `busy` busy cores of `cores` (busy >= 0.5
// and busy + threads > cores), empty otherwise. On a busy machine times are noisy, and an OpenMP
// thread waiting behind another process stalls every barrier its peers reach: a 2-thread
// training step of tiny ran 55x slower beside one other such process.
std::optional<std::string> busy_machine_warning(double busy, int cores, int threads);

}  // namespace aiopt::hardware
