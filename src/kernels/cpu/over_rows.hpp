#pragma once
// Output rows handed out to the OpenMP threads R at a time, for GEMV kernels that share each
// load of x among R rows; the last n % R rows go one at a time.
#include <cstddef>

namespace aiopt::kernels::cpu {

// full(r) computes rows [r, r + R); one(r) computes row r.
template <int R, class Full, class One>
void over_rows(std::size_t n, Full full, One one) {
#pragma omp parallel
  {
#pragma omp for schedule(static) nowait
    for (std::size_t i = 0; i < n / R; ++i) full(i * R);
#pragma omp for schedule(static)
    for (std::size_t r = n / R * R; r < n; ++r) one(r);
  }
}

}  // namespace aiopt::kernels::cpu
