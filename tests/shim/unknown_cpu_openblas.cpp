// Preloaded (LD_PRELOAD) into the aiopt binary by tests/test_blas_core.cpp, it makes the OpenBLAS
// there look like one that does not know this CPU: with OPENBLAS_CORETYPE unset, it reports its
// oldest kernels (Prescott), as 0.3.21 does on a Xeon family 6 model 207. With
// AIOPT_TEST_BREAK_CHOSEN_SGEMM set, products run while OPENBLAS_CORETYPE is set come out wrong in
// C[0,0]: a chosen core that computes wrong, for the fallback's fault-injection test.
#include <cblas.h>
#include <dlfcn.h>

#include <cstdlib>

namespace {

bool coretype_set() {
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  return set && *set;
}

template <class Function>
Function real(const char* name) {
  return reinterpret_cast<Function>(dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {

char* openblas_get_corename(void) {
  static char prescott[] = "Prescott";
  static const auto next = real<char* (*)(void)>("openblas_get_corename");
  return coretype_set() ? next() : prescott;
}

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE trans_a,
                 const enum CBLAS_TRANSPOSE trans_b, const blasint m, const blasint n, const blasint k,
                 const float alpha, const float* a, const blasint lda, const float* b, const blasint ldb,
                 const float beta, float* c, const blasint ldc) {
  using Sgemm = void (*)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const enum CBLAS_TRANSPOSE,
                         const blasint, const blasint, const blasint, const float, const float*, const blasint,
                         const float*, const blasint, const float, float*, const blasint);
  static const auto next = real<Sgemm>("cblas_sgemm");
  next(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  if (coretype_set() && std::getenv("AIOPT_TEST_BREAK_CHOSEN_SGEMM") && m > 0 && n > 0) c[0] += 1.0f;
}

}  // extern "C"
