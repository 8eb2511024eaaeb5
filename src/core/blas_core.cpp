#include "core/blas_core.hpp"

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/hardware.hpp"
#include "core/rng.hpp"

namespace aiopt::blas {

namespace {

bool has_all(const std::vector<std::string>& isa, std::initializer_list<std::string_view> flags) {
  return std::all_of(flags.begin(), flags.end(), [&](std::string_view f) {
    return std::find(isa.begin(), isa.end(), f) != isa.end();
  });
}

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

constexpr std::string_view failed_prefix = "failed:";

// Replaces this process with a fresh start of the same executable and arguments, so OpenBLAS
// loads again and reads OPENBLAS_CORETYPE. Returns only when that fails, with the reason.
std::string restart(char** argv) {
  std::fflush(nullptr);
  execv("/proc/self/exe", argv);
  return std::string("cannot start /proc/self/exe again: ") + std::strerror(errno);
}

CoreChoice examine() {
  CoreChoice c;
  c.core = loaded_core();
  c.best = best_core(hardware::cpu().isa, hardware::cpu().vendor);
  const std::string set = environment(coretype_variable);
  const std::string mark = environment(choice_variable);
  c.source = source_of(set, mark);
  if (set.empty() && mark.starts_with(failed_prefix))
    c.warnings.push_back("the BLAS kernel aiopt chose, " + mark.substr(failed_prefix.size()) +
                         "; OpenBLAS's own choice, " + c.core + ", runs instead");

  const std::string wrong = check_sgemm(openblas_sgemm());
  c.check = wrong.empty() ? "passed" : wrong;
  if (!wrong.empty() && c.source != CoreSource::chosen)
    c.warnings.push_back("OpenBLAS's " + c.core + " kernels fail a check: " + wrong +
                         "; fp32 products will be wrong and the variants' checks will fail");

  if (core_level(c.core) < core_level(c.best)) {
    const std::string below = "below the " + c.best + " kernels this CPU supports, so every fp32 product " +
                              "runs slower than it can and speedups over fp32 baselines read too high";
    switch (c.source) {
      case CoreSource::user:
        c.warnings.push_back(std::string(coretype_variable) + "=" + set + " runs OpenBLAS's " + c.core +
                             " kernels, " + below + "; unset it to let aiopt choose");
        break;
      case CoreSource::chosen:
        c.warnings.push_back("OpenBLAS loaded its " + c.core + " kernels for " + coretype_variable + "=" +
                             set + ", " + below);
        break;
      case CoreSource::detected:
        c.warnings.push_back("OpenBLAS runs its " + c.core + " kernels, " + below);
        break;
    }
  }
  return c;
}

CoreChoice& state() {
  static CoreChoice choice = examine();
  return choice;
}

double reference(bool b_transposed, int n, int k, const float* a_row, const float* b, int j,
                 double& magnitude) {
  double sum = 0;
  magnitude = 0;
  for (int p = 0; p < k; ++p) {
    const double bv = b_transposed ? b[static_cast<std::size_t>(j) * k + p] : b[static_cast<std::size_t>(p) * n + j];
    const double product = double{a_row[p]} * bv;
    sum += product;
    magnitude += std::abs(product);
  }
  return sum;
}

}  // namespace

std::string to_string(CoreSource source) {
  switch (source) {
    case CoreSource::detected: return "detected";
    case CoreSource::chosen: return "chosen by aiopt";
    case CoreSource::user: return "set by the user";
  }
  return "?";
}

std::string best_core(const std::vector<std::string>& isa, std::string_view vendor) {
  const bool avx512 = has_all(isa, {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"});
  if (avx512 && has_all(isa, {"avx512_bf16"})) return "Cooperlake";
  if (avx512) return "SkylakeX";
  if (has_all(isa, {"avx2", "fma"})) return vendor == "AuthenticAMD" ? "Zen" : "Haswell";
  if (has_all(isa, {"avx"})) return "Sandybridge";
  return {};
}

int core_level(std::string_view core) {
  struct Level {
    std::string_view core;
    int level;
  };
  // OpenBLAS 0.3.21's x86-64 DYNAMIC_ARCH cores (openblas_get_corename spellings).
  static constexpr Level levels[] = {
      {"Prescott", 1},  {"Core2", 1},       {"Penryn", 2},     {"Dunnington", 2}, {"Atom", 1},
      {"Nano", 1},      {"Opteron", 1},     {"Barcelona", 1},  {"Bobcat", 1},     {"Nehalem", 2},
      {"Sandybridge", 3}, {"Bulldozer", 3}, {"Piledriver", 3}, {"Steamroller", 3}, {"Excavator", 3},
      {"Haswell", 4},   {"Zen", 4},         {"SkylakeX", 5},   {"Cooperlake", 6},
  };
  for (const Level& l : levels)
    if (l.core == core) return l.level;
  return 0;
}

CoreSource source_of(std::string_view set, std::string_view mark) {
  if (set.empty()) return CoreSource::detected;
  return set == mark ? CoreSource::chosen : CoreSource::user;
}

bool should_choose(std::string_view set, std::string_view mark, std::string_view loaded, std::string_view best) {
  return set.empty() && !mark.starts_with(failed_prefix) && core_level(best) > core_level(loaded);
}

void select_core(char** argv) {
  const std::string set = environment(coretype_variable);
  const std::string mark = environment(choice_variable);
  std::string failure;
  if (set.empty() && !mark.starts_with(failed_prefix)) {
    const std::string best = best_core(hardware::cpu().isa, hardware::cpu().vendor);
    if (should_choose(set, mark, loaded_core(), best)) {
      setenv(coretype_variable, best.c_str(), 1);
      setenv(choice_variable, best.c_str(), 1);
      failure = restart(argv);
      unsetenv(coretype_variable);
      unsetenv(choice_variable);
    }
  }
  // A core OpenBLAS or the user chose is checked on first use (core_choice()); one aiopt chose is
  // checked now, while starting again without it is still possible.
  if (source_of(set, mark) != CoreSource::chosen && failure.empty()) return;
  CoreChoice& c = state();
  if (c.source == CoreSource::chosen && c.check != "passed") {
    const std::string why = c.core + " failed its check (" + c.check + ")";
    setenv(choice_variable, (std::string(failed_prefix) + why).c_str(), 1);
    unsetenv(coretype_variable);
    failure = restart(argv);
    c.warnings.push_back("the BLAS kernel aiopt chose, " + why + ", and " + failure);
  } else if (!failure.empty()) {
    c.warnings.push_back("could not switch OpenBLAS to the " + c.best + " kernels (" + failure +
                         "); set " + coretype_variable + "=" + c.best + " to use them");
  }
}

const CoreChoice& core_choice() { return state(); }

Sgemm openblas_sgemm() {
  return [](bool b_transposed, int m, int n, int k, const float* a, const float* b, float* c) {
    if (m == 1) {
      if (b_transposed)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, b, k, a, 1, 0.0f, c, 1);
      else
        cblas_sgemv(CblasRowMajor, CblasTrans, k, n, 1.0f, b, n, a, 1, 0.0f, c, 1);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, k,
                b, b_transposed ? k : n, 0.0f, c, n);
  };
}

std::string check_sgemm(const Sgemm& gemm) {
  struct Shape {
    int m, n, k;
    bool b_transposed;
  };
  // Odd sizes leave partial tiles in every dimension of every kernel's blocking.
  constexpr Shape shapes[] = {{37, 53, 131, false}, {37, 53, 131, true}, {1, 300, 257, true}, {1, 77, 129, false}};
  constexpr double u = 1.0 / (1 << 24);
  rng::Stream random(0x5eed'b1a5'0003ULL);
  for (const Shape& s : shapes) {
    std::vector<float> a(static_cast<std::size_t>(s.m) * s.k), b(static_cast<std::size_t>(s.k) * s.n);
    std::vector<float> c(static_cast<std::size_t>(s.m) * s.n, std::nanf(""));
    for (float& v : a) v = random.uniform(-1.0f, 1.0f);
    for (float& v : b) v = random.uniform(-1.0f, 1.0f);
    gemm(s.b_transposed, s.m, s.n, s.k, a.data(), b.data(), c.data());
    for (int i = 0; i < s.m; ++i)
      for (int j = 0; j < s.n; ++j) {
        double magnitude = 0;
        const double ref = reference(s.b_transposed, s.n, s.k, a.data() + static_cast<std::size_t>(i) * s.k,
                                     b.data(), j, magnitude);
        const float got = c[static_cast<std::size_t>(i) * s.n + j];
        if (!(std::abs(double{got} - ref) <= s.k * u * magnitude)) {
          char text[200];
          std::snprintf(text, sizeof text, "%dx%dx%d product%s: C[%d,%d] = %g, reference %g", s.m, s.n,
                        s.k, s.b_transposed ? " with B transposed" : "", i, j, static_cast<double>(got), ref);
          return text;
        }
      }
  }
  return {};
}

// OpenBLAS builds both from its table of core names and its build options, without padding.
std::string loaded_core() { return openblas_get_corename(); }

std::string config() { return openblas_get_config(); }

}  // namespace aiopt::blas
