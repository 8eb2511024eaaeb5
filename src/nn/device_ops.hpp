#pragma once
// The model's ops on its device, so the forward (nn/gpt.cpp) and the training pass
// (nn/training.cpp) are written once. Every op but the linear layers is a kernel with a twin of
// the same name and arguments in kernels/cpu and kernels/cuda (the CUDA one taking the stream
// last); AIOPT_DEVICE_OP writes its dispatch. Pointers live on `device`. Internal to nn.
#include <cstddef>
#include <stdexcept>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/attention_backward.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/distillation_loss.hpp"
#include "kernels/cpu/elementwise.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/heads.hpp"
#include "kernels/cpu/kv_int8.hpp"
#include "kernels/cpu/layernorm.hpp"
#include "kernels/cpu/lora.hpp"
#include "kernels/cpu/paged_attention.hpp"
#include "kernels/cpu/precision.hpp"
#if AIOPT_HAVE_CUDA
#include "kernels/cuda/activation.hpp"
#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/attention_backward.hpp"
#include "kernels/cuda/cross_entropy.hpp"
#include "kernels/cuda/distillation_loss.hpp"
#include "kernels/cuda/elementwise.hpp"
#include "kernels/cuda/embedding.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/heads.hpp"
#include "kernels/cuda/kv_int8.hpp"
#include "kernels/cuda/layernorm.hpp"
#include "kernels/cuda/lora.hpp"
#include "kernels/cuda/paged_attention.hpp"
#include "kernels/cuda/precision.hpp"
#endif

// A member op(args...) (or another name, with AIOPT_DEVICE_OP_AS) that calls
// kernels::cpu::op(args...) on the CPU and kernels::cuda::op(args..., stream) on CUDA; inline, so
// it costs one branch. Without CUDA in the build a CUDA tensor cannot exist (Tensor::empty throws
// DeviceUnavailable), so the CUDA branch is never reached.
#if AIOPT_HAVE_CUDA
#define AIOPT_CUDA_TWIN(op) kernels::cuda::op(args..., stream)
#else
#define AIOPT_CUDA_TWIN(op) no_cuda()
#endif
#define AIOPT_DEVICE_OP_AS(member, op)                       \
  template <class... Args>                                   \
  void member(const Args&... args) const {                   \
    if (device.is_cpu()) return kernels::cpu::op(args...);   \
    AIOPT_CUDA_TWIN(op);                                     \
  }
#define AIOPT_DEVICE_OP(op) AIOPT_DEVICE_OP_AS(op, op)

namespace aiopt::nn {

using kernels::AttentionShape;

struct DeviceOps {
  const Device& device;
  void* stream;
  // The storage format of a mixed-precision training pass: on CUDA, f16 or bf16 runs the linear
  // layers' products on tensor cores (their operands already hold values of that format). The
  // CPU has no 16-bit GEMM here (this OpenBLAS build exports no sbgemm), so it stays fp32.
  DType products = DType::f32;

  [[noreturn]] static void no_cuda() { throw std::logic_error("Gpt: a CUDA op in a build without CUDA"); }

  // ---- the forward (kernels/*/embedding, layernorm, gemm, heads, kv_int8, attention,
  // activation, elementwise)
  AIOPT_DEVICE_OP(embedding)
  AIOPT_DEVICE_OP(layernorm)
  AIOPT_DEVICE_OP(sgemm)
  AIOPT_DEVICE_OP(split_qkv)
  AIOPT_DEVICE_OP(split_qkv_int8)
  AIOPT_DEVICE_OP(attention_flash)
  AIOPT_DEVICE_OP(attention_naive)
  AIOPT_DEVICE_OP(attention_int8_kv)
  AIOPT_DEVICE_OP(merge_heads)
  AIOPT_DEVICE_OP(gelu_tanh)
  AIOPT_DEVICE_OP(residual_add)

  // ---- training: the forward's saved statistics and the backward of every op
  AIOPT_DEVICE_OP(layernorm_forward)
  AIOPT_DEVICE_OP(layernorm_backward)
  AIOPT_DEVICE_OP(gelu_tanh_backward)
  AIOPT_DEVICE_OP(embedding_backward)
  AIOPT_DEVICE_OP(merge_qkv)
  AIOPT_DEVICE_OP(split_heads)
  AIOPT_DEVICE_OP(softmax_cross_entropy)
  AIOPT_DEVICE_OP(distillation_loss)
  AIOPT_DEVICE_OP(distillation_loss_backward)
  AIOPT_DEVICE_OP(attention_flash_backward)
  AIOPT_DEVICE_OP(attention_naive_backward)
  AIOPT_DEVICE_OP(round_through)

  // ---- low-rank adapters (kernels/*/lora)
  AIOPT_DEVICE_OP(lora_adapter_forward)
  AIOPT_DEVICE_OP(lora_adapter_backward)
  AIOPT_DEVICE_OP(lora_merge)
  AIOPT_DEVICE_OP(lora_unmerge)
  AIOPT_DEVICE_OP(lora_init)

  // ---- ragged batches through a paged KV cache (kernels/*/paged_attention)
  AIOPT_DEVICE_OP(embedding_at)
  AIOPT_DEVICE_OP(paged_kv_write)
  AIOPT_DEVICE_OP(paged_attention)
  AIOPT_DEVICE_OP(gather_rows)

  // ---- the linear layers, whose CUDA products follow `products`

  // y = x·Wᵀ (+ b). x: (m, k); w: (n, k); y: (m, n).
  void linear(const float* x, const float* w, const float* b, float* y, std::size_t m, std::size_t k,
              std::size_t n) const {
#if AIOPT_HAVE_CUDA
    if (!device.is_cpu() && products != DType::f32)
      return kernels::cuda::linear_half(x, w, b, y, m, k, n, products, stream);
#endif
    linear_f32(x, w, b, y, m, k, n);
  }

  void linear_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                       std::size_t m, std::size_t k, std::size_t n) const {
#if AIOPT_HAVE_CUDA
    if (!device.is_cpu() && products != DType::f32)
      return kernels::cuda::linear_backward_half(x, w, dy, dx, dw, db, m, k, n, products, stream);
#endif
    linear_backward_f32(x, w, dy, dx, dw, db, m, k, n);
  }

  // y = x·Wᵀ for m rows of x that lie `ldx` floats apart. x: (m, ldx) read (m, k); w: (n, k).
  void linear_strided(const float* x, std::size_t ldx, const float* w, float* y, std::size_t m, std::size_t k,
                      std::size_t n) const {
    sgemm(false, true, m, n, k, 1.0f, x, ldx, w, k, 0.0f, y, n);
  }

 private:
  AIOPT_DEVICE_OP_AS(linear_f32, linear)
  AIOPT_DEVICE_OP_AS(linear_backward_f32, linear_backward)
};

}  // namespace aiopt::nn

#undef AIOPT_DEVICE_OP
#undef AIOPT_DEVICE_OP_AS
#undef AIOPT_CUDA_TWIN
