#pragma once
// Elementwise ops on CUDA, mirroring kernels/cpu/elementwise.hpp, plus the stream. Device pointers,
// `stream` a cudaStream_t (nullptr: the default stream); every launch is checked. Activations are
// stored as T = float or std::uint16_t (bf16 bits, as kernels/cpu/bf16.hpp; __nv_bfloat16 on the
// device) and computed in fp32, rounded to nearest even once per stored bf16; parameter vectors are
// float. Where the row width (for the flat ops: n) % 4 == 0 and every pointer is aligned to 4 of
// its elements the kernels move vectors of 4; otherwise single elements.
#include <cstddef>

#include "kernels/cpu/elementwise.hpp"

namespace aiopt::kernels::cuda {

// y = x + b. x, y: (rows, hidden); b: (hidden).
template <class T>
void bias_add(const T* x, const float* b, T* y, std::size_t rows, std::size_t hidden, void* stream);
// db += column sums of dy, in a fixed order (the bias's gradient). dy: (rows, n); db: (n); fp32.
void bias_backward(const float* dy, float* db, std::size_t rows, std::size_t n, void* stream);
// Inverted dropout with cpu::Dropout's counter-based mask: element i is kept iff
// rng::uniform(seed, i) >= p, scaled by 1/(1-p). x, y: (n).
template <class T>
void dropout(const T* x, T* y, std::size_t n, const cpu::Dropout& mask, void* stream);
// y = a + b. a, b, y: (n).
template <class T>
void residual_add(const T* a, const T* b, T* y, std::size_t n, void* stream);
// y = s·x. x, y: (n).
template <class T>
void scale(const T* x, T* y, std::size_t n, float s, void* stream);

}  // namespace aiopt::kernels::cuda
