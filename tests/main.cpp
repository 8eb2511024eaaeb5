// The test runner. GPU tests (tag [gpu]) need a CUDA device: asked to run them without one,
// the runner prints why and exits 77, which ctest reports as skipped. Like aiopt, it first
// chooses OpenBLAS's kernels for this CPU, so the tests check the kernels aiopt runs.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <string_view>

#include "core/blas_core.hpp"
#include "core/cuda_runtime.hpp"

int main(int argc, char* argv[]) {
  aiopt::blas::select_core(argv);
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    const auto gpu = arg.find("[gpu]");
    // "~[gpu]" excludes the GPU cases (ctest's discovery passes it): no device is needed then.
    if (gpu != std::string_view::npos && !(gpu > 0 && arg[gpu - 1] == '~')) {
      const auto why = aiopt::cuda::unavailable_reason();
      if (!why.empty()) {
        std::printf("SKIP: GPU tests not run: %s\n", why.c_str());
        return 77;
      }
    }
  }
  return Catch::Session().run(argc, argv);
}
