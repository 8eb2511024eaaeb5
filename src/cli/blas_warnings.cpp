#include "cli/blas_warnings.hpp"

#include <spdlog/spdlog.h>

#include "core/blas_core.hpp"

namespace aiopt::cli {

void warn_about_blas_kernels() {
  for (const auto& w : blas::core_choice().warnings) spdlog::warn("{}", w);
}

}  // namespace aiopt::cli
