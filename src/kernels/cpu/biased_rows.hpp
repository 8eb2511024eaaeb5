#pragma once
// y = f(x + b), b broadcast over the rows of x, y: (rows, hidden): the one memory pass of the bias
// add and of the chains that start with it, computed in fp32 and rounded once per stored element.
#include <cstddef>

#include "kernels/cpu/bf16.hpp"

namespace aiopt::kernels::cpu {

// f: float -> float, inlined into the vectorized row loop.
template <class T, class F>
void map_biased_rows(const T* x, const float* b, T* y, std::size_t rows, std::size_t hidden, F f) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const T* xr = x + r * hidden;
    T* yr = y + r * hidden;
#pragma omp simd
    for (std::size_t j = 0; j < hidden; ++j) yr[j] = from_float<T>(f(to_float(xr[j]) + b[j]));
  }
}

}  // namespace aiopt::kernels::cpu
