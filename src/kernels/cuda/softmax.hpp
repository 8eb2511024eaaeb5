#pragma once
// Softmax and the causal mask on CUDA, mirroring kernels/cpu/softmax.hpp, plus the stream. Device
// pointers, `stream` a cudaStream_t (nullptr: the default stream); every launch is checked.
// Activations are stored as T = float or std::uint16_t (bf16 bits, as kernels/cpu/bf16.hpp;
// __nv_bfloat16 on the device) and computed in fp32, rounded to nearest even once per stored bf16;
// parameter vectors are float. Where the row width (for the flat ops: n) % 4 == 0 and every pointer
// is aligned to 4 of its elements the kernels move vectors of 4; otherwise single elements.
#include <cstddef>

namespace aiopt::kernels::cuda {

// Causal mask: row r is query q = r % hidden; keys j > q become −inf. x, y: (rows, hidden).
template <class T>
void causal_mask(const T* x, T* y, std::size_t rows, std::size_t hidden, void* stream);
// Softmax of each row, one block per row (rows <= 2^31 − 1, else std::invalid_argument); zero
// rows or zero width return without launching.
// x, y: (rows, hidden).
template <class T>
void softmax(const T* x, T* y, std::size_t rows, std::size_t hidden, void* stream);

}  // namespace aiopt::kernels::cuda
