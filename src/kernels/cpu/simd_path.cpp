#include "kernels/cpu/simd_path.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/hardware.hpp"

namespace aiopt::kernels::cpu {

const char* simd_path_name(SimdPath path) {
  switch (path) {
    case SimdPath::automatic: return "automatic";
    case SimdPath::scalar: return "scalar";
    case SimdPath::avx2: return "avx2";
    case SimdPath::avx512: return "avx512";
  }
  return "unknown";
}

std::vector<SimdPath> simd_paths() {
  std::vector<SimdPath> paths{SimdPath::scalar};
  if (hardware::has("avx2") && hardware::has("fma") && hardware::has("f16c")) paths.push_back(SimdPath::avx2);
  if (hardware::has("avx512f") && hardware::has("avx512bw") && hardware::has("avx512vl") &&
      hardware::has("f16c") && hardware::has("fma"))
    paths.push_back(SimdPath::avx512);
  return paths;
}

SimdPath resolve_simd_path(SimdPath path, const char* what) {
  const std::vector<SimdPath> supported = simd_paths();
  if (path == SimdPath::automatic) return supported.back();
  if (std::find(supported.begin(), supported.end(), path) == supported.end())
    throw std::invalid_argument(std::string(what) + ": kernel " + simd_path_name(path) +
                                " is not supported by this CPU");
  return path;
}

}  // namespace aiopt::kernels::cpu
