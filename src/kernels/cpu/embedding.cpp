#include "kernels/cpu/embedding.hpp"

#include <stdexcept>
#include <string>

#include "kernels/cpu/over_columns.hpp"

namespace aiopt::kernels::cpu {

void embedding(const std::int32_t* tokens, const float* wte, const float* wpe, float* y,
               std::size_t batch, std::size_t len, std::size_t pos0, std::size_t vocab,
               std::size_t positions, std::size_t channels) {
  if (pos0 + len > positions)
    throw std::out_of_range("embedding: positions [" + std::to_string(pos0) + ", " + std::to_string(pos0 + len) +
                            ") exceed the " + std::to_string(positions) + " learned positions");
  // Every token is checked before anything is written, so a bad one leaves y untouched.
  for (std::size_t i = 0; i < batch * len; ++i)
    if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= vocab)
      throw std::out_of_range("embedding: token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                              " is outside [0, " + std::to_string(vocab) + ")");
#pragma omp parallel for schedule(static)
  for (std::size_t row = 0; row < batch * len; ++row) {
    const float* te = wte + static_cast<std::size_t>(tokens[row]) * channels;  // (C)
    const float* pe = wpe + (pos0 + row % len) * channels;                      // (C)
    float* yr = y + row * channels;
#pragma omp simd
    for (std::size_t c = 0; c < channels; ++c) yr[c] = te[c] + pe[c];
  }
}

void embedding_backward(const std::int32_t* tokens, const float* dy, float* dwte, float* dwpe,
                        std::size_t batch, std::size_t len, std::size_t vocab, std::size_t channels) {
  for (std::size_t i = 0; i < batch * len; ++i)
    if (tokens[i] < 0 || static_cast<std::size_t>(tokens[i]) >= vocab)
      throw std::out_of_range("embedding_backward: token " + std::to_string(tokens[i]) + " at index " +
                              std::to_string(i) + " is outside [0, " + std::to_string(vocab) + ")");
  // A token may repeat, so rows of dwte collect from many positions: splitting by rows would
  // race; splitting by channels keeps each sum on one thread, added in token order.
  over_columns(channels, [&](std::size_t begin, std::size_t end) {
    for (std::size_t row = 0; row < batch * len; ++row) {
      const float* g = dy + row * channels;                                   // (C)
      float* te = dwte + static_cast<std::size_t>(tokens[row]) * channels;    // (C)
      float* pe = dwpe + (row % len) * channels;                              // (C)
#pragma omp simd
      for (std::size_t c = begin; c < end; ++c) {
        te[c] += g[c];
        pe[c] += g[c];
      }
    }
  });
}

}  // namespace aiopt::kernels::cpu
