#pragma once
// Optimizer updates over flat fp32 parameter arrays, and the sum of squares behind global-norm
// gradient clipping. Every update reads the gradient as grad_scale·grad, so unscaling a
// mixed-precision loss scale and clipping fold into the one pass. p, g, m, v: (n).
#include <cstddef>
#include <cstdint>

namespace aiopt::kernels::cpu {

struct AdamW {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled (Loshchilov & Hutter 2019): p −= lr·wd·p
  std::int64_t step = 1;      // 1-based, for the bias corrections 1 − beta^step
};

// AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019): with g = grad_scale·grad,
// m = b1·m + (1−b1)·g; v = b2·v + (1−b2)·g²; p −= lr·(m/(1−b1^t) / (sqrt(v/(1−b2^t)) + eps) + wd·p).
void adamw_update(float* p, const float* g, float* m, float* v, std::size_t n, const AdamW& h,
                  float grad_scale);
void adamw_update_reference(float* p, const float* g, float* m, float* v, std::size_t n, const AdamW& h,
                            float grad_scale);

// SGD with momentum (heavy ball, PyTorch's form) and decoupled weight decay: with
// g = grad_scale·grad, buf = momentum·buf + g; p −= lr·(buf + wd·p).
void sgd_update(float* p, const float* g, float* buf, std::size_t n, float lr, float momentum,
                float weight_decay, float grad_scale);

// Σ x² in double, over fixed-size chunks summed in order: bit-identical for any thread count.
double sum_of_squares(const float* x, std::size_t n);

}  // namespace aiopt::kernels::cpu
