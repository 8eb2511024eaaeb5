#pragma once
// Softmax cross-entropy over the vocabulary, fused with its gradient: the LM head's (rows, V)
// logits are turned into their own gradient in place, so training never holds a second
// (rows, V) buffer of probabilities.
#include <cstddef>
#include <cstdint>

namespace aiopt::kernels::cpu {

// For each row r with targets[r] >= 0: losses[r] = logsumexp(logits[r]) − logits[r][targets[r]]
// (natural log; computed with the row maximum subtracted, in fp32 with a double sum). When
// dlogits is not null, dlogits[r] = (softmax(logits[r]) − onehot(targets[r])) · grad_scale,
// written; dlogits may alias logits. A row with targets[r] < 0 is ignored: loss 0, gradient 0.
// A target >= vocab throws std::out_of_range before anything is written.
// logits, dlogits: (rows, vocab); targets, losses: (rows).
void softmax_cross_entropy(const float* logits, const std::int32_t* targets, float* losses, float* dlogits,
                           std::size_t rows, std::size_t vocab, float grad_scale);
// One row at a time in double; the tests' reference. Same contract.
void softmax_cross_entropy_reference(const float* logits, const std::int32_t* targets, float* losses,
                                     float* dlogits, std::size_t rows, std::size_t vocab, float grad_scale);

}  // namespace aiopt::kernels::cpu
