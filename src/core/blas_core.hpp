#pragma once
// Which OpenBLAS kernel set (its "core") runs our fp32 GEMMs, how it was chosen, and a check
// that it computes right.
//
// Debian's OpenBLAS is built with DYNAMIC_ARCH: it carries kernels for many CPUs and picks one
// when the library loads, before main(), from the CPU model, or from OPENBLAS_CORETYPE when that
// is set. A model it does not know gets its oldest kernels: 0.3.21 runs Prescott (SSE3) on a Xeon
// family 6 model 207 with AVX-512, sgemm 40 GFLOP/s where SkylakeX gives 298. So aiopt picks the
// core from the instruction set the CPU and the OS enable (best_core) and, when the loaded one is
// below it, starts itself again with OPENBLAS_CORETYPE set (select_core). A user's own
// OPENBLAS_CORETYPE is kept, with a warning when it is below what the CPU supports.
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace aiopt::blas {

enum class CoreSource {
  detected,  // OpenBLAS's own choice at load time (it was already the best, or aiopt's failed)
  chosen,    // aiopt set OPENBLAS_CORETYPE to best_core() and started itself again
  user,      // OPENBLAS_CORETYPE came from the user's environment
};
std::string to_string(CoreSource source);  // "detected", "chosen by aiopt", "set by the user"

// The fastest OpenBLAS 0.3.21 core for an x86-64 CPU with these ISA flags (CpuInfo::isa names):
// Cooperlake (AVX-512 F/CD/BW/DQ/VL and BF16), SkylakeX (AVX-512 F/CD/BW/DQ/VL), Zen on AMD or
// Haswell elsewhere (AVX2 and FMA), Sandybridge (AVX); empty when none applies (another
// architecture, or an x86 older than AVX): OpenBLAS's own choice stands.
std::string best_core(const std::vector<std::string>& isa, std::string_view vendor);

// The widest instruction set a core's kernels use: 1 SSE2/SSE3, 2 SSE4, 3 AVX, 4 AVX2, 5 AVX-512,
// 6 AVX-512 with BF16; 0 for a name this table does not know.
int core_level(std::string_view core);

// The environment variables select_core reads and sets.
inline constexpr const char* coretype_variable = "OPENBLAS_CORETYPE";
// What aiopt set OPENBLAS_CORETYPE to, so that the process it starts knows the value is its own;
// "failed:CORE: WHY" when that core failed its check and OpenBLAS's own choice runs instead.
inline constexpr const char* choice_variable = "AIOPT_OPENBLAS_CORETYPE";

// Where the loaded core came from, given OPENBLAS_CORETYPE (`set`) and aiopt's mark (`mark`),
// each empty when unset.
CoreSource source_of(std::string_view set, std::string_view mark);

// Whether to start again with OPENBLAS_CORETYPE=best: nothing set, no chosen core failed before,
// and the loaded core is below best.
bool should_choose(std::string_view set, std::string_view mark, std::string_view loaded, std::string_view best);

struct CoreChoice {
  std::string core;  // the loaded core, openblas_get_corename()
  CoreSource source = CoreSource::detected;
  std::string best;   // best_core() for this CPU; empty when none applies
  std::string check;  // "passed", or what check_sgemm found wrong
  // Why the numbers may be slower or wrong: a core below best, a chosen core that failed its
  // check. bench, sweep, train, generate and info print each as a warning.
  std::vector<std::string> warnings;
};

// Call first in main(), before any thread starts. When nothing is set and the loaded core is
// below best_core(), it sets OPENBLAS_CORETYPE and replaces this process with a fresh start of
// the same executable and arguments (execv of /proc/self/exe), so OpenBLAS loads that core; when
// a core aiopt chose fails check_sgemm, it starts again without it. Otherwise it returns, and
// core_choice() says what runs (checking any other core on its first call). Never throws; a
// failed exec is a warning.
void select_core(char** argv);

// What runs in this process, how it was chosen, and its check, made on the first call unless
// select_core made it already.
const CoreChoice& core_choice();

// C (m, n) = A (m, k) · B, row-major, B (k, n) or, with b_transposed, (n, k).
using Sgemm = std::function<void(bool b_transposed, int m, int n, int k, const float* a,
                                 const float* b, float* c)>;
// The loaded OpenBLAS as kernels/cpu/gemm.cpp calls it: cblas_sgemm, and cblas_sgemv for one row.
Sgemm openblas_sgemm();

// Products of odd shapes (edge tiles in every dimension), B plain and transposed and one row,
// on seeded random inputs, against a double-precision reference within the bound any fp32
// summation order meets (Higham §3.1: k·u·Σ|a||b|). Empty when all agree, else what is wrong.
std::string check_sgemm(const Sgemm& gemm);

std::string loaded_core();  // openblas_get_corename(), e.g. "Haswell", "SkylakeX", "Zen"
std::string config();       // openblas_get_config(), e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ..."

}  // namespace aiopt::blas
