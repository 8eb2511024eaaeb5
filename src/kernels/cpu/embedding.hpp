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

}  // namespace aiopt::kernels::cpu
