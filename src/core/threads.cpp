#include "core/threads.hpp"

#include <cblas.h>
#include <omp.h>

#include <string>

#include "core/error.hpp"

namespace aiopt {

void set_threads(int n) {
  if (n < 1)
    throw InputError("threads: " + std::to_string(n) + " is not allowed; use an integer >= 1");
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int threads() { return omp_get_max_threads(); }

int blas_threads() { return openblas_get_num_threads(); }

}  // namespace aiopt
