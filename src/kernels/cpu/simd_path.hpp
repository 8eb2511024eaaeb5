#pragma once
// The instruction sets a run-time-dispatched CPU kernel can use (the int4 and 16-bit weight
// GEMVs): `automatic` is the widest the CPU supports; the others force one, for tests.
#include <vector>

namespace aiopt::kernels::cpu {

enum class SimdPath { automatic, scalar, avx2, avx512 };

const char* simd_path_name(SimdPath path);  // "automatic", "scalar", "avx2", "avx512"

// The paths this CPU runs (core/hardware.hpp), scalar first, the widest last: avx2 needs AVX2,
// FMA and F16C; avx512 needs AVX-512 F/BW/VL, FMA and F16C.
std::vector<SimdPath> simd_paths();

// `path`, or the widest for `automatic`; std::invalid_argument naming `what` when this CPU lacks it.
SimdPath resolve_simd_path(SimdPath path, const char* what);

}  // namespace aiopt::kernels::cpu
