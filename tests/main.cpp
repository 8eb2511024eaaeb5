// The test runner. GPU tests (tag [gpu]) need a CUDA device: asked to run them without one,
// the runner prints why and exits 77, which ctest reports as skipped. Two cases fail instead
// (exit 1), so that a GPU check cannot pass by running nothing: a GPU whose driver is older than
// this build's static CUDA runtime needs, and any missing device when AIOPT_REQUIRE_GPU=1
// (scripts/gpu_check.sh sets it). Like aiopt, the runner first chooses OpenBLAS's kernels for
// this CPU, so the tests check the kernels aiopt runs.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "core/blas_core.hpp"
#include "core/cuda_runtime.hpp"

namespace {

bool gpu_required() {
  const char* value = std::getenv("AIOPT_REQUIRE_GPU");
  return value && std::string_view(value) == "1";
}

// Whether the arguments ask for the GPU cases; "~[gpu]" excludes them (ctest's discovery
// passes it), and no device is needed then.
bool asks_for_gpu(int argc, char* argv[]) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    const auto gpu = arg.find("[gpu]");
    if (gpu != std::string_view::npos && !(gpu > 0 && arg[gpu - 1] == '~')) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char* argv[]) {
  aiopt::blas::select_core(argv);
  if (asks_for_gpu(argc, argv)) {
    std::printf("GPU tests: %s\n", aiopt::cuda::versions().c_str());
    if (const auto why = aiopt::cuda::unavailable_reason(); !why.empty()) {
      if (aiopt::cuda::driver_too_old() || gpu_required()) {
        std::printf("FAIL: GPU tests cannot run: %s\n", why.c_str());
        return 1;
      }
      std::printf("SKIP: GPU tests not run: %s\n", why.c_str());
      return 77;
    }
  }
  return Catch::Session().run(argc, argv);
}
