#pragma once
// One knob for the host's parallelism: OpenMP (our kernels) and OpenBLAS (GEMM) always run with
// the same thread count, so a result's "threads" describes every part of its work.
namespace aiopt {

// n >= 1, else InputError. Sets omp_set_num_threads and openblas_set_num_threads.
void set_threads(int n);
int threads();       // omp_get_max_threads()
int blas_threads();  // openblas_get_num_threads(); equals threads() after set_threads

}  // namespace aiopt
