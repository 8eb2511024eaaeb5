#pragma once
// The GPT's token + position embedding on CUDA, mirroring kernels/cpu/embedding.hpp (same
// functions, layouts and accumulate contract), plus the stream. Device pointers, `stream` a
// cudaStream_t (nullptr: the default stream); every launch is checked. Tokens live on the
// device, so the host cannot read them: it checks them before upload (nn does), and a token
// outside [0, vocab) is clamped to vocab − 1 on the device.
#include <cstddef>
#include <cstdint>

namespace aiopt::kernels::cuda {

// y[b, t] = wte[tokens[b, t]] + wpe[pos0 + t]; pos0 + len <= positions (else std::out_of_range).
// tokens: (batch, len); wte: (vocab, channels); wpe: (positions, channels); y: (batch, len, channels).
void embedding(const std::int32_t* tokens, const float* wte, const float* wpe, float* y, std::size_t batch,
               std::size_t len, std::size_t pos0, std::size_t vocab, std::size_t positions, std::size_t channels,
               void* stream);
// dwte[tokens[b, t]] += dy[b, t] and dwpe[t] += dy[b, t], accumulated in the CPU's order.
void embedding_backward(const std::int32_t* tokens, const float* dy, float* dwte, float* dwpe,
                        std::size_t batch, std::size_t len, std::size_t vocab, std::size_t channels,
                        void* stream);

}  // namespace aiopt::kernels::cuda
