#pragma once
// The commands that compute (bench, sweep, train, generate, info) say when OpenBLAS runs kernels
// below what the CPU supports or failed its check (core/blas_core.hpp), before any number.

namespace aiopt::cli {

// Each of blas::core_choice().warnings as a warning on stderr.
void warn_about_blas_kernels();

}  // namespace aiopt::cli
