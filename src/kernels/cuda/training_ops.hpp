#pragma once
// The training forward's extra outputs and the backward of the GPT's ops on CUDA: device
// pointers, `stream` a cudaStream_t, every launch checked. Each mirrors the CPU function of the
// same name (kernels/cpu/layernorm.hpp, activation.hpp, embedding.hpp, heads.hpp,
// cross_entropy.hpp, precision.hpp, gemm.hpp) with the same layouts and accumulate/write
// contract, and is tested against it. Sums are reduced in a fixed order (no float atomics), so
// results are deterministic run to run.
#include <cstddef>
#include <cstdint>

#include "core/dtype.hpp"

namespace aiopt::kernels::cuda {

void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                       float* rstd, std::size_t rows, std::size_t hidden, float eps, void* stream);
void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                        const float* rstd, float* dx, float* dgamma, float* dbeta, std::size_t rows,
                        std::size_t hidden, void* stream);

void gelu_tanh_backward(const float* x, const float* dy, float* dx, std::size_t n, void* stream);

// tokens: device (batch, len), already checked by the host.
void embedding_backward(const std::int32_t* tokens, const float* dy, float* dwte, float* dwpe,
                        std::size_t batch, std::size_t len, std::size_t vocab, std::size_t channels,
                        void* stream);

void merge_qkv(const float* q, const float* k, const float* v, float* qkv, std::size_t batch,
               std::size_t len, std::size_t heads, std::size_t head_dim, void* stream);
void split_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                 std::size_t head_dim, void* stream);

// targets: device (rows), each < vocab (checked by the host), < 0 ignored.
void softmax_cross_entropy(const float* logits, const std::int32_t* targets, float* losses, float* dlogits,
                           std::size_t rows, std::size_t vocab, float grad_scale, void* stream);

// db += column sums of dy; dy: (rows, n); db: (n).
void bias_backward(const float* dy, float* db, std::size_t rows, std::size_t n, void* stream);

void round_through(DType dtype, float* x, std::size_t n, void* stream);
// counts[0] += zeros, counts[1] += inf/NaN over x: (n); counts: device (2) uint64.
void value_census(const float* x, std::size_t n, unsigned long long* counts, void* stream);

}  // namespace aiopt::kernels::cuda
