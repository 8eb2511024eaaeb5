#pragma once
// Optimizer updates and the clipping norm on CUDA, mirroring kernels/cpu/optimizer.hpp.
#include <cstddef>

#include "kernels/cpu/optimizer.hpp"

namespace aiopt::kernels::cuda {

void adamw_update(float* p, const float* g, float* m, float* v, std::size_t n, const cpu::AdamW& h,
                  float grad_scale, void* stream);
void sgd_update(float* p, const float* g, float* buf, std::size_t n, float lr, float momentum,
                float weight_decay, float grad_scale, void* stream);
// Σ x² in double, reduced in a fixed order; returns to the host (synchronizes the stream).
double sum_of_squares(const float* x, std::size_t n, void* stream);

}  // namespace aiopt::kernels::cuda
