#pragma once
// GELU (tanh approximation) on CUDA, mirroring kernels/cpu/activation.hpp, plus the stream. Device
// pointers, `stream` a cudaStream_t (nullptr: the default stream); every launch is checked.
// Activations are stored as T = float or std::uint16_t (bf16 bits, as kernels/cpu/bf16.hpp;
// __nv_bfloat16 on the device) and computed in fp32, rounded to nearest even once per stored bf16;
// parameter vectors are float. Where the row width (for the flat ops: n) % 4 == 0 and every pointer
// is aligned to 4 of its elements the kernels move vectors of 4; otherwise single elements.
#include <cstddef>

namespace aiopt::kernels::cuda {

// y = gelu_tanh(x). x, y: (n).
template <class T>
void gelu_tanh(const T* x, T* y, std::size_t n, void* stream);
// dx = gelu_tanh'(x)·dy, written; fp32. x, dy, dx: (n).
void gelu_tanh_backward(const float* x, const float* dy, float* dx, std::size_t n, void* stream);

}  // namespace aiopt::kernels::cuda
