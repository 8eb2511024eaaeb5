#pragma once
// Low-precision storage emulated in fp32 on CUDA, mirroring kernels/cpu/precision.hpp, plus the
// stream. Device pointers, `stream` a cudaStream_t (nullptr: the default stream); every launch is
// checked.
#include <cstddef>

#include "core/dtype.hpp"

namespace aiopt::kernels::cuda {

// x rounded in place to the nearest `dtype` value (f16 or bf16; f32 leaves it; others throw
// std::invalid_argument). x: (n).
void round_through(DType dtype, float* x, std::size_t n, void* stream);
// counts[0] += zeros, counts[1] += inf/NaN over x: (n); counts: device (2) uint64. The CPU
// returns its census; here the counts stay on the device until the caller reads them.
void value_census(const float* x, std::size_t n, unsigned long long* counts, void* stream);

}  // namespace aiopt::kernels::cuda
