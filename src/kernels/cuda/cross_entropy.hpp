#pragma once
// Softmax cross-entropy on CUDA, mirroring kernels/cpu/cross_entropy.hpp (same layouts and
// contract), plus the stream. Device pointers, `stream` a cudaStream_t (nullptr: the default
// stream); every launch is checked.
#include <cstddef>
#include <cstdint>

namespace aiopt::kernels::cuda {

// losses[r] = −log softmax(logits[r])[targets[r]]; dlogits (when not null, may alias logits) =
// (softmax − onehot)·grad_scale, written. targets: device (rows), each < vocab (checked by the
// host), < 0 ignored (loss 0, gradient 0). logits, dlogits: (rows, vocab); losses: (rows).
void softmax_cross_entropy(const float* logits, const std::int32_t* targets, float* losses, float* dlogits,
                           std::size_t rows, std::size_t vocab, float grad_scale, void* stream);

}  // namespace aiopt::kernels::cuda
