#pragma once
// GPT token + learned position embedding: y[b, t] = wte[tokens[b, t]] + wpe[pos0 + t].
#include <cstddef>
#include <cstdint>

namespace aiopt::kernels::cpu {

// tokens: (batch, len), each in [0, vocab) (else std::out_of_range, checked before writing);
// wte: (vocab, channels); wpe: (positions, channels) with pos0 + len <= positions (else
// std::out_of_range); y: (batch, len, channels).
void embedding(const std::int32_t* tokens, const float* wte, const float* wpe, float* y,
               std::size_t batch, std::size_t len, std::size_t pos0, std::size_t vocab,
               std::size_t positions, std::size_t channels);

// Backward of embedding with pos0 = 0: dwte[tokens[b, t]] += dy[b, t] and dwpe[t] += dy[b, t],
// accumulated. dy: (batch, len, channels); dwte: (vocab, channels); dwpe: (>= len, channels).
// Threads split the channels and each walks the tokens in order, so the sums are bit-identical
// for any thread count. Tokens are checked as in embedding.
void embedding_backward(const std::int32_t* tokens, const float* dy, float* dwte, float* dwpe,
                        std::size_t batch, std::size_t len, std::size_t vocab, std::size_t channels);

}  // namespace aiopt::kernels::cpu
