#pragma once
// The model's ops on its device: each picks the CPU kernel or the CUDA launcher, so the forward
// (nn/gpt.cpp) and the training pass (nn/training.cpp) are written once. Pointers live on
// `device`. Internal to nn.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/attention_backward.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/elementwise.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/heads.hpp"
#include "kernels/cpu/kv_int8.hpp"
#include "kernels/cpu/layernorm.hpp"
#include "kernels/cpu/precision.hpp"
#if AIOPT_HAVE_CUDA
#include "kernels/cuda/activation.hpp"
#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/attention_backward.hpp"
#include "kernels/cuda/cross_entropy.hpp"
#include "kernels/cuda/elementwise.hpp"
#include "kernels/cuda/embedding.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/heads.hpp"
#include "kernels/cuda/kv_int8.hpp"
#include "kernels/cuda/layernorm.hpp"
#include "kernels/cuda/precision.hpp"
#endif

namespace aiopt::nn {

using kernels::AttentionShape;

struct DeviceOps {
  const Device& device;
  void* stream;
  // The storage format of a mixed-precision training pass: on CUDA, f16 or bf16 runs the linear
  // layers' products on tensor cores (their operands already hold values of that format). The
  // CPU has no 16-bit GEMM here (this OpenBLAS build exports no sbgemm), so it stays fp32.
  DType products = DType::f32;

  // Keeps a CUDA call inside its `#if`: without CUDA a CUDA tensor cannot exist (Tensor::empty
  // throws DeviceUnavailable), so this is never reached.
  [[noreturn]] static void no_cuda() { throw std::logic_error("Gpt: a CUDA op in a build without CUDA"); }

  void embedding(const std::int32_t* tokens, const float* wte, const float* wpe, float* y, std::size_t batch,
                 std::size_t len, std::size_t pos0, std::size_t vocab, std::size_t positions,
                 std::size_t channels) const {
    if (device.is_cpu()) return kernels::cpu::embedding(tokens, wte, wpe, y, batch, len, pos0, vocab, positions, channels);
#if AIOPT_HAVE_CUDA
    kernels::cuda::embedding(tokens, wte, wpe, y, batch, len, pos0, vocab, positions, channels, stream);
#else
    no_cuda();
#endif
  }

  void layernorm(const float* x, const float* gamma, const float* beta, float* y, std::size_t rows,
                 std::size_t hidden, float eps) const {
    if (device.is_cpu()) return kernels::cpu::layernorm(x, gamma, beta, y, rows, hidden, eps);
#if AIOPT_HAVE_CUDA
    kernels::cuda::layernorm(x, gamma, beta, y, rows, hidden, eps, stream);
#else
    no_cuda();
#endif
  }

  // y = x·Wᵀ (+ b). x: (m, k); w: (n, k); y: (m, n).
  void linear(const float* x, const float* w, const float* b, float* y, std::size_t m, std::size_t k,
              std::size_t n) const {
    if (device.is_cpu()) return kernels::cpu::linear(x, w, b, y, m, k, n);
#if AIOPT_HAVE_CUDA
    if (products != DType::f32) return kernels::cuda::linear_half(x, w, b, y, m, k, n, products, stream);
    kernels::cuda::linear(x, w, b, y, m, k, n, stream);
#else
    no_cuda();
#endif
  }

  // y = x·Wᵀ for m rows of x that lie `ldx` floats apart. x: (m, ldx) read (m, k); w: (n, k).
  void linear_strided(const float* x, std::size_t ldx, const float* w, float* y, std::size_t m, std::size_t k,
                      std::size_t n) const {
    if (device.is_cpu()) return kernels::cpu::sgemm(false, true, m, n, k, 1.0f, x, ldx, w, k, 0.0f, y, n);
#if AIOPT_HAVE_CUDA
    kernels::cuda::gemm(false, true, m, n, k, 1.0f, x, ldx, w, k, 0.0f, y, n, DType::f32, stream);
#else
    no_cuda();
#endif
  }

  void split_qkv(const float* qkv, float* q, float* k, float* v, std::size_t batch, std::size_t len,
                 std::size_t heads, std::size_t head_dim, std::size_t capacity, std::size_t pos0) const {
    if (device.is_cpu()) return kernels::cpu::split_qkv(qkv, q, k, v, batch, len, heads, head_dim, capacity, pos0);
#if AIOPT_HAVE_CUDA
    kernels::cuda::split_qkv(qkv, q, k, v, batch, len, heads, head_dim, capacity, pos0, stream);
#else
    no_cuda();
#endif
  }

  void split_qkv_int8(const float* qkv, float* q, std::int8_t* k8, float* k_scale, std::int8_t* v8,
                      float* v_scale, std::size_t batch, std::size_t len, std::size_t heads,
                      std::size_t head_dim, std::size_t capacity, std::size_t pos0) const {
    if (device.is_cpu())
      return kernels::cpu::split_qkv_int8(qkv, q, k8, k_scale, v8, v_scale, batch, len, heads, head_dim, capacity,
                                          pos0);
#if AIOPT_HAVE_CUDA
    kernels::cuda::split_qkv_int8(qkv, q, k8, k_scale, v8, v_scale, batch, len, heads, head_dim, capacity, pos0,
                                  stream);
#else
    no_cuda();
#endif
  }

  void attention(const float* q, const float* k, const float* v, float* out, const AttentionShape& shape) const {
    if (device.is_cpu()) return kernels::cpu::attention_flash(q, k, v, out, shape);
#if AIOPT_HAVE_CUDA
    kernels::cuda::attention_flash(q, k, v, out, DType::f32, shape, stream);
#else
    no_cuda();
#endif
  }

  void attention_int8_kv(const float* q, const std::int8_t* k8, const float* k_scale, const std::int8_t* v8,
                         const float* v_scale, float* out, const AttentionShape& shape) const {
    if (device.is_cpu()) return kernels::cpu::attention_int8_kv(q, k8, k_scale, v8, v_scale, out, shape);
#if AIOPT_HAVE_CUDA
    kernels::cuda::attention_int8_kv(q, k8, k_scale, v8, v_scale, out, shape, stream);
#else
    no_cuda();
#endif
  }

  void merge_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                   std::size_t head_dim) const {
    if (device.is_cpu()) return kernels::cpu::merge_heads(x, y, batch, len, heads, head_dim);
#if AIOPT_HAVE_CUDA
    kernels::cuda::merge_heads(x, y, batch, len, heads, head_dim, stream);
#else
    no_cuda();
#endif
  }

  void gelu_tanh(const float* x, float* y, std::size_t n) const {
    if (device.is_cpu()) return kernels::cpu::gelu_tanh(x, y, n);
#if AIOPT_HAVE_CUDA
    kernels::cuda::gelu_tanh(x, y, n, stream);
#else
    no_cuda();
#endif
  }

  void residual_add(const float* a, const float* b, float* y, std::size_t n) const {
    if (device.is_cpu()) return kernels::cpu::residual_add(a, b, y, n);
#if AIOPT_HAVE_CUDA
    kernels::cuda::residual_add(a, b, y, n, stream);
#else
    no_cuda();
#endif
  }

  // ---- training: the forward's saved statistics and the backward of every op

  void layernorm_forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd,
                         std::size_t rows, std::size_t hidden, float eps) const {
    if (device.is_cpu()) return kernels::cpu::layernorm_forward(x, gamma, beta, y, mean, rstd, rows, hidden, eps);
#if AIOPT_HAVE_CUDA
    kernels::cuda::layernorm_forward(x, gamma, beta, y, mean, rstd, rows, hidden, eps, stream);
#else
    no_cuda();
#endif
  }

  void layernorm_backward(const float* dy, const float* x, const float* gamma, const float* mean,
                          const float* rstd, float* dx, float* dgamma, float* dbeta, std::size_t rows,
                          std::size_t hidden) const {
    if (device.is_cpu())
      return kernels::cpu::layernorm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, rows, hidden);
#if AIOPT_HAVE_CUDA
    kernels::cuda::layernorm_backward(dy, x, gamma, mean, rstd, dx, dgamma, dbeta, rows, hidden, stream);
#else
    no_cuda();
#endif
  }

  void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                       std::size_t m, std::size_t k, std::size_t n) const {
    if (device.is_cpu()) return kernels::cpu::linear_backward(x, w, dy, dx, dw, db, m, k, n);
#if AIOPT_HAVE_CUDA
    if (products != DType::f32)
      return kernels::cuda::linear_backward_half(x, w, dy, dx, dw, db, m, k, n, products, stream);
    kernels::cuda::linear_backward(x, w, dy, dx, dw, db, m, k, n, stream);
#else
    no_cuda();
#endif
  }

  void gelu_tanh_backward(const float* x, const float* dy, float* dx, std::size_t n) const {
    if (device.is_cpu()) return kernels::cpu::gelu_tanh_backward(x, dy, dx, n);
#if AIOPT_HAVE_CUDA
    kernels::cuda::gelu_tanh_backward(x, dy, dx, n, stream);
#else
    no_cuda();
#endif
  }

  void embedding_backward(const std::int32_t* tokens, const float* dy, float* dwte, float* dwpe, std::size_t batch,
                          std::size_t len, std::size_t vocab, std::size_t channels) const {
    if (device.is_cpu()) return kernels::cpu::embedding_backward(tokens, dy, dwte, dwpe, batch, len, vocab, channels);
#if AIOPT_HAVE_CUDA
    kernels::cuda::embedding_backward(tokens, dy, dwte, dwpe, batch, len, vocab, channels, stream);
#else
    no_cuda();
#endif
  }

  void merge_qkv(const float* q, const float* k, const float* v, float* qkv, std::size_t batch, std::size_t len,
                 std::size_t heads, std::size_t head_dim) const {
    if (device.is_cpu()) return kernels::cpu::merge_qkv(q, k, v, qkv, batch, len, heads, head_dim);
#if AIOPT_HAVE_CUDA
    kernels::cuda::merge_qkv(q, k, v, qkv, batch, len, heads, head_dim, stream);
#else
    no_cuda();
#endif
  }

  void split_heads(const float* x, float* y, std::size_t batch, std::size_t len, std::size_t heads,
                   std::size_t head_dim) const {
    if (device.is_cpu()) return kernels::cpu::split_heads(x, y, batch, len, heads, head_dim);
#if AIOPT_HAVE_CUDA
    kernels::cuda::split_heads(x, y, batch, len, heads, head_dim, stream);
#else
    no_cuda();
#endif
  }

  void softmax_cross_entropy(const float* logits, const std::int32_t* targets, float* losses, float* dlogits,
                             std::size_t rows, std::size_t vocab, float grad_scale) const {
    if (device.is_cpu())
      return kernels::cpu::softmax_cross_entropy(logits, targets, losses, dlogits, rows, vocab, grad_scale);
#if AIOPT_HAVE_CUDA
    kernels::cuda::softmax_cross_entropy(logits, targets, losses, dlogits, rows, vocab, grad_scale, stream);
#else
    no_cuda();
#endif
  }

  void attention_flash_forward(const float* q, const float* k, const float* v, float* out, float* lse,
                               const AttentionShape& shape) const {
    if (device.is_cpu()) return kernels::cpu::attention_flash(q, k, v, out, lse, shape);
#if AIOPT_HAVE_CUDA
    kernels::cuda::attention_flash(q, k, v, out, lse, shape, stream);
#else
    no_cuda();
#endif
  }

  void attention_flash_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                                const float* lse, float* dq, float* dk, float* dv, const AttentionShape& shape) const {
    if (device.is_cpu()) return kernels::cpu::attention_flash_backward(q, k, v, out, dout, lse, dq, dk, dv, shape);
#if AIOPT_HAVE_CUDA
    kernels::cuda::attention_flash_backward(q, k, v, out, dout, lse, dq, dk, dv, shape, stream);
#else
    no_cuda();
#endif
  }

  void attention_naive(const float* q, const float* k, const float* v, float* out, float* scores,
                       const AttentionShape& shape) const {
    if (device.is_cpu()) return kernels::cpu::attention_naive(q, k, v, out, scores, shape);
#if AIOPT_HAVE_CUDA
    kernels::cuda::attention_naive(q, k, v, out, scores, DType::f32, shape, stream);
#else
    no_cuda();
#endif
  }

  void attention_naive_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                                float* dq, float* dk, float* dv, float* scores, const AttentionShape& shape) const {
    if (device.is_cpu())
      return kernels::cpu::attention_naive_backward(q, k, v, out, dout, dq, dk, dv, scores, shape);
#if AIOPT_HAVE_CUDA
    kernels::cuda::attention_naive_backward(q, k, v, out, dout, dq, dk, dv, scores, shape, stream);
#else
    no_cuda();
#endif
  }

  void round_through(DType dtype, float* x, std::size_t n) const {
    if (dtype == DType::f32) return;
    if (device.is_cpu()) return kernels::cpu::round_through(dtype, x, n);
#if AIOPT_HAVE_CUDA
    kernels::cuda::round_through(dtype, x, n, stream);
#else
    no_cuda();
#endif
  }
};

}  // namespace aiopt::nn
