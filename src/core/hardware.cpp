#include "core/hardware.hpp"

#include <sys/times.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define AIOPT_X86 1
#endif

#include "core/error.hpp"
#include "core/spelling.hpp"

namespace aiopt::hardware {

namespace {

// ---- ISA table: where cpuid reports each extension, and which register state the OS must save
// (XCR0) before its instructions may run: the CPU may have AVX-512 while the kernel disables it.

enum class Reg { eax, ebx, ecx, edx };
enum class OsState { none, avx, avx512, amx };

struct IsaBit {
  std::string_view name;
  unsigned leaf, subleaf;
  Reg reg;
  unsigned bit;
  OsState state;
};

// Intel SDM vol. 2A, CPUID leaves 01H and 07H (sub-leaves 0 and 1).
constexpr std::array<IsaBit, 23> isa_bits{{
    {"sse4.2", 1, 0, Reg::ecx, 20, OsState::none},
    {"avx", 1, 0, Reg::ecx, 28, OsState::avx},
    {"fma", 1, 0, Reg::ecx, 12, OsState::avx},
    {"f16c", 1, 0, Reg::ecx, 29, OsState::avx},
    {"avx2", 7, 0, Reg::ebx, 5, OsState::avx},
    {"avx_vnni", 7, 1, Reg::eax, 4, OsState::avx},
    {"avx512f", 7, 0, Reg::ebx, 16, OsState::avx512},
    {"avx512dq", 7, 0, Reg::ebx, 17, OsState::avx512},
    {"avx512ifma", 7, 0, Reg::ebx, 21, OsState::avx512},
    {"avx512cd", 7, 0, Reg::ebx, 28, OsState::avx512},
    {"avx512bw", 7, 0, Reg::ebx, 30, OsState::avx512},
    {"avx512vl", 7, 0, Reg::ebx, 31, OsState::avx512},
    {"avx512vbmi", 7, 0, Reg::ecx, 1, OsState::avx512},
    {"avx512_vbmi2", 7, 0, Reg::ecx, 6, OsState::avx512},
    {"avx512_vnni", 7, 0, Reg::ecx, 11, OsState::avx512},
    {"avx512_bitalg", 7, 0, Reg::ecx, 12, OsState::avx512},
    {"avx512_vpopcntdq", 7, 0, Reg::ecx, 14, OsState::avx512},
    {"avx512_vp2intersect", 7, 0, Reg::edx, 8, OsState::avx512},
    {"avx512_fp16", 7, 0, Reg::edx, 23, OsState::avx512},
    {"avx512_bf16", 7, 1, Reg::eax, 5, OsState::avx512},
    {"amx_bf16", 7, 0, Reg::edx, 22, OsState::amx},
    {"amx_tile", 7, 0, Reg::edx, 24, OsState::amx},
    {"amx_int8", 7, 0, Reg::edx, 25, OsState::amx},
}};

constexpr std::array<std::string_view, isa_bits.size()> isa_names = [] {
  std::array<std::string_view, isa_bits.size()> names{};
  for (std::size_t i = 0; i < isa_bits.size(); ++i) names[i] = isa_bits[i].name;
  return names;
}();

#ifdef AIOPT_X86

struct Regs {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  unsigned get(Reg r) const {
    switch (r) {
      case Reg::eax: return eax;
      case Reg::ebx: return ebx;
      case Reg::ecx: return ecx;
      case Reg::edx: return edx;
    }
    return 0;
  }
};

// All zero when the leaf is beyond the CPU's maximum.
Regs cpuid(unsigned leaf, unsigned subleaf) {
  Regs r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) return {};
  return r;
}

// XCR0: which register files the OS saves on a context switch. Readable only with OSXSAVE.
std::uint64_t xcr0() {
  if (!(cpuid(1, 0).ecx & (1u << 27))) return 0;
  unsigned lo = 0, hi = 0;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (std::uint64_t{hi} << 32) | lo;
}

bool os_saves(OsState state, std::uint64_t xcr) {
  constexpr std::uint64_t sse_avx = 0x6;               // XMM, YMM
  constexpr std::uint64_t avx512 = sse_avx | 0xE0;     // + opmask, ZMM_Hi256, Hi16_ZMM
  constexpr std::uint64_t amx = (1ull << 17) | (1ull << 18);  // XTILECFG, XTILEDATA
  switch (state) {
    case OsState::none: return true;
    case OsState::avx: return (xcr & sse_avx) == sse_avx;
    case OsState::avx512: return (xcr & avx512) == avx512;
    case OsState::amx: return (xcr & amx) == amx;
  }
  return false;
}

std::vector<std::string> detect_isa() {
  const std::uint64_t xcr = xcr0();
  std::vector<std::string> present;
  for (const IsaBit& b : isa_bits)
    if ((cpuid(b.leaf, b.subleaf).get(b.reg) >> b.bit & 1u) && os_saves(b.state, xcr))
      present.emplace_back(b.name);
  return present;
}

std::string detect_vendor() {
  const Regs r = cpuid(0, 0);
  std::string v(12, '\0');
  for (int i = 0; i < 4; ++i) {
    v[i] = static_cast<char>(r.ebx >> (8 * i));
    v[4 + i] = static_cast<char>(r.edx >> (8 * i));
    v[8 + i] = static_cast<char>(r.ecx >> (8 * i));
  }
  return v;
}

// The brand string of leaves 0x80000002..4, for hosts without /proc/cpuinfo.
std::string brand_string() {
  if (cpuid(0x80000000u, 0).eax < 0x80000004u) return {};
  std::string s;
  for (unsigned leaf = 0x80000002u; leaf <= 0x80000004u; ++leaf) {
    const Regs r = cpuid(leaf, 0);
    for (unsigned word : {r.eax, r.ebx, r.ecx, r.edx})
      for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(word >> (8 * i)));
  }
  return s.substr(0, s.find('\0'));
}

#else

std::vector<std::string> detect_isa() { return {}; }
std::string detect_vendor() { return {}; }
std::string brand_string() { return {}; }

#endif

std::string trim(std::string s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string::npos) return {};
  const auto last = s.find_last_not_of(" \t");
  return s.substr(first, last - first + 1);
}

struct ProcCpuinfo {
  std::string model;
  int physical_cores = 0;
};

ProcCpuinfo read_proc_cpuinfo() {
  ProcCpuinfo out;
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<std::string, std::string>> cores;  // (physical id, core id)
  std::string line, package;
  while (std::getline(in, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trim(line.substr(0, colon));
    const std::string value = trim(line.substr(colon + 1));
    if (key == "model name" && out.model.empty()) out.model = value;
    if (key == "physical id") package = value;
    if (key == "core id") cores.emplace(package, value);
  }
  out.physical_cores = static_cast<int>(cores.size());
  return out;
}

std::size_t sysconf_bytes(int name) {
  const long v = sysconf(name);
  return v > 0 ? static_cast<std::size_t>(v) : 0;
}

CpuInfo detect_cpu() {
  CpuInfo info;
  const ProcCpuinfo proc = read_proc_cpuinfo();
  info.model = proc.model.empty() ? trim(brand_string()) : proc.model;
  info.vendor = detect_vendor();
  info.logical_cores = static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  info.physical_cores = proc.physical_cores > 0 ? proc.physical_cores : info.logical_cores;
  info.isa = detect_isa();
  info.l1d_bytes = sysconf_bytes(_SC_LEVEL1_DCACHE_SIZE);
  info.l2_bytes = sysconf_bytes(_SC_LEVEL2_CACHE_SIZE);
  info.l3_bytes = sysconf_bytes(_SC_LEVEL3_CACHE_SIZE);
  info.memory_bytes = sysconf_bytes(_SC_PHYS_PAGES) * sysconf_bytes(_SC_PAGESIZE);
  return info;
}

}  // namespace

const CpuInfo& cpu() {
  static const CpuInfo info = detect_cpu();
  return info;
}

std::span<const std::string_view> known_isa_flags() { return isa_names; }

bool has(std::string_view isa_flag) {
  if (std::find(isa_names.begin(), isa_names.end(), isa_flag) == isa_names.end()) {
    const std::vector<std::string> known(isa_names.begin(), isa_names.end());
    throw InputError("ISA flag '" + std::string(isa_flag) + "' is unknown" + did_you_mean(isa_flag, known) +
                     " (known flags: " + join_names(known) + ")");
  }
  const auto& isa = cpu().isa;
  return std::find(isa.begin(), isa.end(), isa_flag) != isa.end();
}

std::optional<std::array<double, 3>> load_average() {
  std::array<double, 3> load{};
  if (getloadavg(load.data(), 3) != 3) return std::nullopt;
  return load;
}

namespace {

struct CpuTimes {
  unsigned long long busy = 0, total = 0;  // every core's, in clock ticks
  unsigned long long own = 0;              // this process's threads', in clock ticks
};

// The aggregate "cpu" line of /proc/stat (user nice system idle iowait irq softirq steal; guest
// time is already inside user and nice) and this process's own user and system time.
std::optional<CpuTimes> cpu_times() {
  std::ifstream in("/proc/stat");
  std::string label;
  unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
  if (!(in >> label >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal) || label != "cpu")
    return std::nullopt;
  tms own{};
  if (times(&own) == static_cast<clock_t>(-1)) return std::nullopt;
  const unsigned long long busy = user + nice + system + irq + softirq + steal;
  return CpuTimes{busy, busy + idle + iowait, static_cast<unsigned long long>(own.tms_utime + own.tms_stime)};
}

}  // namespace

std::optional<double> busy_cores(std::chrono::milliseconds window) {
  const auto before = cpu_times();
  if (!before) return std::nullopt;
  std::this_thread::sleep_for(window);
  const auto after = cpu_times();
  if (!after || after->total <= before->total) return std::nullopt;
  // Our own threads (OpenBLAS's spin for a while after it starts) are not "other processes".
  const auto busy = static_cast<double>(after->busy - before->busy);
  const auto own = static_cast<double>(after->own - before->own);
  const double share = std::max(0.0, busy - own) / static_cast<double>(after->total - before->total);
  return share * cpu().logical_cores;
}

std::optional<std::string> busy_machine_warning(double busy, int cores, int threads) {
  if (!(busy >= 0.5) || busy + threads <= cores) return std::nullopt;
  char text[400];
  std::snprintf(text, sizeof text,
                "this machine is busy: other processes keep %.1f of its %d cores busy and this run uses %d "
                "thread%s. Times will be noisy, and a thread waiting behind another process stalls its peers "
                "at every barrier; use fewer --threads or a quieter machine. The figure is the report "
                "context's busy_cores.",
                busy, cores, threads, threads == 1 ? "" : "s");
  return std::string(text);
}

}  // namespace aiopt::hardware
