#pragma once
// One knob for the host's parallelism, and one thread pool: our kernels run on OpenMP threads,
// and OpenBLAS runs single-threaded inside them (kernels/cpu/gemm.cpp splits each product among
// the OpenMP threads). Two pools — OpenMP's and OpenBLAS's own pthreads — each spin while the
// other works; on a 2-core machine that made a 2-thread decode step 6× slower than 1 thread.
namespace aiopt {

// n >= 1, else InputError. Sets omp_set_num_threads; OpenBLAS stays at one thread per call.
void set_threads(int n);
int threads();       // omp_get_max_threads()
int blas_threads();  // openblas_get_num_threads(): 1, since each BLAS call runs on one of our threads

}  // namespace aiopt
