#include "kernels/cpu/cross_entropy.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/activation.hpp"

namespace aiopt::kernels::cpu {

namespace {

// Every target checked before anything is written, so a bad one leaves the outputs untouched.
void check_targets(const std::int32_t* targets, std::size_t rows, std::size_t vocab, const char* who) {
  for (std::size_t r = 0; r < rows; ++r)
    if (targets[r] >= 0 && static_cast<std::size_t>(targets[r]) >= vocab)
      throw std::out_of_range(std::string(who) + ": target " + std::to_string(targets[r]) + " at row " +
                              std::to_string(r) + " is outside [0, " + std::to_string(vocab) + ")");
}

// A negative target marks a row to ignore: no loss and a zero gradient (g, when not null).
// Returns whether the row is one.
bool ignored_row(std::int32_t target, float* loss, float* g, std::size_t vocab) {
  if (target >= 0) return false;
  *loss = 0.0f;
  if (g != nullptr)
    for (std::size_t j = 0; j < vocab; ++j) g[j] = 0.0f;
  return true;
}

}  // namespace

void softmax_cross_entropy(const float* logits, const std::int32_t* targets, float* losses, float* dlogits,
                           std::size_t rows, std::size_t vocab, float grad_scale) {
  check_targets(targets, rows, vocab, "softmax_cross_entropy");
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;  // (V)
    float* g = dlogits != nullptr ? dlogits + r * vocab : nullptr;
    if (ignored_row(targets[r], losses + r, g, vocab)) continue;
    // Everything read from the row (max, sum, the target's logit) is read before the gradient
    // overwrites it when dlogits aliases logits.
    float max = x[0];
#pragma omp simd reduction(max : max)
    for (std::size_t j = 0; j < vocab; ++j) max = x[j] > max ? x[j] : max;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (std::size_t j = 0; j < vocab; ++j) sum += exp_poly(x[j] - max);
    const auto target = static_cast<std::size_t>(targets[r]);
    const float target_logit = x[target];
    losses[r] = static_cast<float>(std::log(sum) + static_cast<double>(max - target_logit));
    if (g == nullptr) continue;
    // The exponentials are recomputed rather than kept: the row is read once more from cache
    // instead of a second (V) buffer being written and read.
    const float scale = static_cast<float>(static_cast<double>(grad_scale) / sum);
#pragma omp simd
    for (std::size_t j = 0; j < vocab; ++j) g[j] = exp_poly(x[j] - max) * scale;
    g[target] -= grad_scale;
  }
}

void softmax_cross_entropy_reference(const float* logits, const std::int32_t* targets, float* losses,
                                     float* dlogits, std::size_t rows, std::size_t vocab, float grad_scale) {
  check_targets(targets, rows, vocab, "softmax_cross_entropy_reference");
  for (std::size_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;
    float* g = dlogits != nullptr ? dlogits + r * vocab : nullptr;
    if (ignored_row(targets[r], losses + r, g, vocab)) continue;
    double max = x[0];
    for (std::size_t j = 0; j < vocab; ++j) max = std::max<double>(max, x[j]);
    double sum = 0.0;
    for (std::size_t j = 0; j < vocab; ++j) sum += std::exp(x[j] - max);
    const auto target = static_cast<std::size_t>(targets[r]);
    const double target_logit = x[target];
    losses[r] = static_cast<float>(std::log(sum) + max - target_logit);
    if (g == nullptr) continue;
    for (std::size_t j = 0; j < vocab; ++j) {
      const double p = std::exp(x[j] - max) / sum;
      g[j] = static_cast<float>((p - (j == target ? 1.0 : 0.0)) * grad_scale);
    }
  }
}

}  // namespace aiopt::kernels::cpu
