#include "core/threads.hpp"

#include <cblas.h>
#include <omp.h>

#include <string>

#include "core/error.hpp"

namespace aiopt {

namespace {

// OpenBLAS starts with as many threads as cores (or OPENBLAS_NUM_THREADS); ours are the only
// pool, so it is set to one before any BLAS call. Every user of a BLAS call links this file.
const bool blas_single_threaded = [] {
  openblas_set_num_threads(1);
  return true;
}();

}  // namespace

void set_threads(int n) {
  if (n < 1)
    throw InputError("threads: " + std::to_string(n) + " is not allowed; use an integer >= 1");
  omp_set_num_threads(n);
  openblas_set_num_threads(1);
}

int threads() { return omp_get_max_threads(); }

int blas_threads() {
  (void)blas_single_threaded;
  return openblas_get_num_threads();
}

}  // namespace aiopt
