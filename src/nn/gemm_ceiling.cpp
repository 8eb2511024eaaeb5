#include "nn/gemm_ceiling.hpp"

#include <algorithm>
#include <chrono>
#include <vector>

#include "core/rng.hpp"
#include "kernels/cpu/gemm.hpp"

namespace aiopt::nn {

namespace {

struct Product {
  std::size_t k, n, count;  // y (rows, n) = x (rows, k) · Wᵀ, `count` times per step
};

std::vector<float> random_values(std::size_t n, std::uint64_t seed) {
  rng::Stream s(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = s.uniform(-1.0f, 1.0f);
  return v;
}

}  // namespace

double training_step_flops(const GptConfig& config, std::size_t tokens) {
  return 6.0 * static_cast<double>(config.parameter_count()) * static_cast<double>(tokens);
}

GemmCeiling gemm_ceiling(const GptConfig& config, std::size_t batch, std::size_t seq_len, int repeats) {
  const std::size_t C = config.channels, rows = batch * seq_len;
  const std::vector<Product> products = {
      {C, 3 * C, config.layers}, {C, C, config.layers}, {C, 4 * C, config.layers}, {4 * C, C, config.layers},
      {C, config.vocab, 1},  // the LM head
  };
  std::size_t widest = 0;
  for (const auto& p : products) widest = std::max({widest, p.k, p.n});
  const std::vector<float> x = random_values(rows * widest, 1), w = random_values(widest * widest, 2),
                           dy = random_values(rows * widest, 3);
  std::vector<float> y(rows * widest), dx(rows * widest), dw(widest * widest, 0.0f);

  GemmCeiling out;
  for (const auto& p : products)
    out.flops += 6.0 * static_cast<double>(rows * p.k * p.n) * static_cast<double>(p.count);
  out.seconds = 1e30;
  for (int r = 0; r < std::max(repeats, 1) + 1; ++r) {  // the first run warms up and is not kept
    const auto start = std::chrono::steady_clock::now();
    for (const auto& p : products)
      for (std::size_t i = 0; i < p.count; ++i) {
        kernels::cpu::linear(x.data(), w.data(), nullptr, y.data(), rows, p.k, p.n);
        kernels::cpu::linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), nullptr, rows, p.k, p.n);
      }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r > 0) out.seconds = std::min(out.seconds, s);
  }
  return out;
}

}  // namespace aiopt::nn
