#include "kernels/cpu/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace aiopt::kernels::cpu {

namespace {

// sum_of_squares reduces chunks of this many elements, each in one fixed order, then adds the
// chunk sums in index order: the result depends on n alone, never on how chunks meet threads.
constexpr std::size_t kNormChunk = 8192;
// Independent partial sums inside a chunk: a fixed lane count, so the order is fixed too, and
// the loop vectorizes (8 doubles: one AVX-512 register).
constexpr std::size_t kNormLanes = 8;

double chunk_sum_of_squares(const float* x, std::size_t n) {
  double lanes[kNormLanes] = {};
  const std::size_t full = n - n % kNormLanes;
  for (std::size_t i = 0; i < full; i += kNormLanes) {
#pragma omp simd
    for (std::size_t l = 0; l < kNormLanes; ++l) {
      const double xi = x[i + l];
      lanes[l] += xi * xi;
    }
  }
  for (std::size_t i = full; i < n; ++i) {
    const double xi = x[i];
    lanes[i - full] += xi * xi;
  }
  double s = 0.0;
  for (double lane : lanes) s += lane;
  return s;
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, std::size_t n, const AdamW& h,
                  float grad_scale) {
  // The bias corrections as multipliers, once per call: m̂ = m·c1, v̂ = v·c2.
  const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(h.beta1), h.step)));
  const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(h.beta2), h.step)));
  const float b1 = h.beta1, b2 = h.beta2, one_b1 = 1.0f - h.beta1, one_b2 = 1.0f - h.beta2;
  const float lr = h.lr, eps = h.eps, decay = h.lr * h.weight_decay;
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    const float gi = grad_scale * g[i];
    const float mi = b1 * m[i] + one_b1 * gi;
    const float vi = b2 * v[i] + one_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= lr * (mi * c1) / (std::sqrt(vi * c2) + eps) + decay * p[i];
  }
}

void adamw_update_reference(float* p, const float* g, float* m, float* v, std::size_t n, const AdamW& h,
                            float grad_scale) {
  const double b1 = h.beta1, b2 = h.beta2;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(h.step));
  for (std::size_t i = 0; i < n; ++i) {
    const double gi = static_cast<double>(grad_scale) * g[i];
    const double mi = b1 * m[i] + (1.0 - b1) * gi;
    const double vi = b2 * v[i] + (1.0 - b2) * gi * gi;
    const double pi = p[i];
    const double m_hat = mi / bc1;
    const double v_hat = vi / bc2;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    p[i] = static_cast<float>(pi - static_cast<double>(h.lr) *
                                       (m_hat / (std::sqrt(v_hat) + h.eps) + static_cast<double>(h.weight_decay) * pi));
  }
}

void sgd_update(float* p, const float* g, float* buf, std::size_t n, float lr, float momentum,
                float weight_decay, float grad_scale) {
  const float decay = lr * weight_decay;
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    const float b = momentum * buf[i] + grad_scale * g[i];
    buf[i] = b;
    p[i] -= lr * b + decay * p[i];
  }
}

double sum_of_squares(const float* x, std::size_t n) {
  const std::size_t chunks = (n + kNormChunk - 1) / kNormChunk;
  std::vector<double> partial(chunks);
#pragma omp parallel for schedule(static)
  for (std::size_t c = 0; c < chunks; ++c) {
    const std::size_t begin = c * kNormChunk;
    partial[c] = chunk_sum_of_squares(x + begin, std::min(kNormChunk, n - begin));
  }
  double s = 0.0;
  for (double part : partial) s += part;
  return s;
}

}  // namespace aiopt::kernels::cpu
