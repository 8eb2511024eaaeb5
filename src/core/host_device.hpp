#pragma once
// AIOPT_HD marks a small function that both the host and CUDA kernels call: __host__ __device__
// and always inlined under nvcc, a plain inline function for the C++ compiler.
#if defined(__CUDACC__)
#define AIOPT_HD __host__ __device__ __forceinline__
#else
#define AIOPT_HD inline
#endif
