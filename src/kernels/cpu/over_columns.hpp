#pragma once
// Columns of a (rows, n) matrix split into one contiguous block per OpenMP thread, for sums over
// rows (parameter gradients): each thread walks all rows in order over its own columns, so every
// sum is added in the same order whatever the thread count, and no two threads write the same
// cache line.
#include <omp.h>

#include <algorithm>
#include <cstddef>

#include "core/memory.hpp"

namespace aiopt::kernels::cpu {

// body(begin, end) handles columns [begin, end); blocks are whole cache lines of floats.
template <class Body>
void over_columns(std::size_t n, Body body) {
  constexpr std::size_t line = memory::host_alignment / sizeof(float);
#pragma omp parallel
  {
    const auto workers = static_cast<std::size_t>(omp_get_num_threads());
    const auto w = static_cast<std::size_t>(omp_get_thread_num());
    const std::size_t per = ((n + workers - 1) / workers + line - 1) / line * line;
    const std::size_t begin = std::min(n, w * per), end = std::min(n, begin + per);
    if (begin < end) body(begin, end);
  }
}

}  // namespace aiopt::kernels::cpu
