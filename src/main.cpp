// aiopt: choose the BLAS kernels, build the command-line app and dispatch (the subcommands live
// in src/cli/).
#include "cli/app.hpp"
#include "core/blas_core.hpp"

int main(int argc, char** argv) {
  // First: it may start the process again with OpenBLAS's fastest kernels for this CPU.
  aiopt::blas::select_core(argv);
  return aiopt::cli::run(argc, argv);
}
