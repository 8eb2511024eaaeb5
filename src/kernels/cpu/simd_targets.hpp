#pragma once
// The intrinsics header and the function target attributes of the CPU kernels that pick their
// SIMD path at run time: each kernel carries its own attribute, so that its file compiles
// without -march=native (the GPU bundle's build) and runs only where the CPU has the flags.
//
// GCC 12's AVX-512 headers pass a self-initialized _mm512_undefined_*() as the unused merge
// operand, which -Wuninitialized flags once inlined (GCC bug 105593). The warning is issued at
// the header's line, so it is silenced before the header is read, for the including file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#define AIOPT_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma")))
#define AIOPT_TARGET_AVX2 __attribute__((target("avx2,f16c,fma")))

// The sum of v's 8 lanes: AVX2's counterpart of AVX-512's _mm512_reduce_add_ps.
inline AIOPT_TARGET_AVX2 float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
