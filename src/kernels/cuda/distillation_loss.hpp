#pragma once
// Knowledge-distillation loss on CUDA, mirroring kernels/cpu/distillation_loss.hpp (same
// definition, layouts and contract), plus the stream. Device pointers, `stream` a cudaStream_t
// (nullptr: the default stream); every launch is checked.
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/distillation_loss.hpp"

namespace aiopt::kernels::cuda {

using cpu::Distillation;

// losses[r] = alpha·T²·kl_r + (1 − alpha)·ce_r, and kl[r], ce[r] where not null (any of the three
// may be null). d is checked on the host (std::invalid_argument naming the value). targets: device
// (rows), each in [0, vocab) (the host cannot read them without a copy: a row whose target is
// outside gets NaN loss, kl, ce and gradient, and no read outside its row). Exponentials with the
// row maxima subtracted, sums in fp32. student, teacher: (rows, vocab); targets, losses, kl, ce: (rows).
void distillation_loss(const float* student, const float* teacher, const std::int32_t* targets, float* losses,
                       float* kl, float* ce, std::size_t rows, std::size_t vocab, const Distillation& d,
                       void* stream);

// The same forward, and dstudent = grad_scale·∂loss_r/∂student written (not null; may alias
// student, never teacher). dstudent: (rows, vocab).
void distillation_loss_backward(const float* student, const float* teacher, const std::int32_t* targets,
                                float* losses, float* kl, float* ce, float* dstudent, std::size_t rows,
                                std::size_t vocab, const Distillation& d, float grad_scale, void* stream);

}  // namespace aiopt::kernels::cuda
