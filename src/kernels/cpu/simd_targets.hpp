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
