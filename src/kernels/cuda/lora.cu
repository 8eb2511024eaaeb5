// The low-rank adapter of a linear layer on CUDA (kernels/cuda/lora.hpp): the products of
// kernels/cpu/lora.cpp, each through kernels/cuda/gemm.hpp's cuBLAS sgemm on the given stream.
#include "kernels/cuda/lora.hpp"

#include <cuda_runtime.h>

#include <algorithm>

#include "core/cuda_check.hpp"
#include "core/rng.hpp"
#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/gemm.hpp"

namespace aiopt::kernels::cuda {

namespace {

void add_product(float* w, const float* a, const float* b_adapter, float scale, const LoraShape& shape,
                 const char* who, void* stream) {
  cpu::check_lora_arguments(shape, {{"w", w}, {"a", a}, {"b_adapter", b_adapter}}, who);
  sgemm(false, false, shape.out, shape.in, shape.rank, scale, b_adapter, shape.rank, a, shape.in, 1.0f, w, shape.in,
        stream);
}

// A's element i = bound·(2·uniform(seed, i) − 1), as cpu::lora_init: 2u − 1 is exact, so the
// product is the one rounding on either device; B's elements are zeros.
__global__ void lora_init_kernel(float* a, std::size_t a_count, float* b_adapter, std::size_t b_count,
                                 std::uint64_t seed, float bound) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < a_count; i += stride)
    a[i] = __fmul_rn(bound, 2.0f * rng::uniform(seed, i) - 1.0f);
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < b_count; i += stride)
    b_adapter[i] = 0.0f;
}

}  // namespace

void lora_adapter_forward(const float* x, const float* a, const float* b_adapter, float scale, float* u, float* y,
                          std::size_t ldy, const LoraShape& shape, void* stream) {
  constexpr const char* who = "cuda lora_adapter_forward";
  cpu::check_lora_arguments(shape, {{"x", x}, {"a", a}, {"b_adapter", b_adapter}, {"y", y}}, who);
  cpu::check_lora_ldy(ldy, shape, who);
  const auto [m, in, out, r] = shape;
  if (m == 0) return;
  auto scratch = device_scratch(u == nullptr ? m * r : 0);
  float* const u_out = u != nullptr ? u : scratch.data();
  // u = x·Aᵀ: (m, in)·(in, r).
  sgemm(false, true, m, r, in, 1.0f, x, in, a, in, 0.0f, u_out, r, stream);
  // y += scale·u·Bᵀ: (m, r)·(r, out).
  sgemm(false, true, m, out, r, scale, u_out, r, b_adapter, r, 1.0f, y, ldy, stream);
}

void lora_adapter_backward(const float* x, const float* a, const float* b_adapter, const float* u, const float* dy,
                           std::size_t ldy, float scale, float* dx, float* da, float* db, const LoraShape& shape,
                           void* stream) {
  constexpr const char* who = "cuda lora_adapter_backward";
  cpu::check_lora_arguments(
      shape, {{"x", x}, {"a", a}, {"b_adapter", b_adapter}, {"dy", dy}, {"da", da}, {"db", db}}, who);
  cpu::check_lora_ldy(ldy, shape, who);
  const auto [m, in, out, r] = shape;
  if (m == 0) return;
  // v = dy·B (m, r), then u when the caller did not keep it.
  auto scratch = device_scratch(m * r * (u == nullptr ? 2 : 1));
  float* const v = scratch.data();
  sgemm(false, false, m, r, out, 1.0f, dy, ldy, b_adapter, r, 0.0f, v, r, stream);
  if (u == nullptr) {
    float* const u_again = scratch.data() + m * r;
    sgemm(false, true, m, r, in, 1.0f, x, in, a, in, 0.0f, u_again, r, stream);
    u = u_again;
  }
  // dA += scale·vᵀ·x: (r, m)·(m, in).
  sgemm(true, false, r, in, m, scale, v, r, x, in, 1.0f, da, in, stream);
  // dB += scale·dyᵀ·u: (out, m)·(m, r).
  sgemm(true, false, out, r, m, scale, dy, ldy, u, r, 1.0f, db, r, stream);
  // dx += scale·v·A: (m, r)·(r, in).
  if (dx != nullptr) sgemm(false, false, m, in, r, scale, v, r, a, in, 1.0f, dx, in, stream);
}

void lora_forward(const float* x, const float* w, const float* bias, const float* a, const float* b_adapter,
                  float scale, float* u, float* y, const LoraShape& shape, void* stream) {
  cpu::check_lora_arguments(shape, {{"x", x}, {"w", w}, {"a", a}, {"b_adapter", b_adapter}, {"y", y}},
                            "cuda lora_forward");
  if (shape.rows == 0) return;
  linear(x, w, bias, y, shape.rows, shape.in, shape.out, stream);
  lora_adapter_forward(x, a, b_adapter, scale, u, y, shape.out, shape, stream);
}

void lora_backward(const float* x, const float* w, const float* a, const float* b_adapter, const float* u,
                   const float* dy, float scale, float* dx, float* da, float* db, const LoraShape& shape,
                   void* stream) {
  constexpr const char* who = "cuda lora_backward";
  cpu::check_lora_arguments(
      shape, {{"x", x}, {"a", a}, {"b_adapter", b_adapter}, {"dy", dy}, {"da", da}, {"db", db}}, who);
  if (dx != nullptr) cpu::check_lora_arguments(shape, {{"w", w}}, who);
  const auto [m, in, out, r] = shape;
  if (m == 0) return;
  // dx = dy·W: (m, out)·(out, in); the adapter's term is added to it.
  if (dx != nullptr) sgemm(false, false, m, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in, stream);
  lora_adapter_backward(x, a, b_adapter, u, dy, out, scale, dx, da, db, shape, stream);
}

void lora_merge(float* w, const float* a, const float* b_adapter, float scale, const LoraShape& shape, void* stream) {
  add_product(w, a, b_adapter, scale, shape, "cuda lora_merge", stream);
}

void lora_unmerge(float* w, const float* a, const float* b_adapter, float scale, const LoraShape& shape,
                  void* stream) {
  add_product(w, a, b_adapter, -scale, shape, "cuda lora_unmerge", stream);
}

void lora_init(float* a, float* b_adapter, std::uint64_t seed, const LoraShape& shape, void* stream) {
  constexpr const char* who = "cuda lora_init";
  cpu::check_lora_arguments(shape, {{"a", a}, {"b_adapter", b_adapter}}, who);
  const std::size_t a_count = shape.rank * shape.in, b_count = shape.out * shape.rank;
  lora_init_kernel<<<elementwise_blocks(std::max(a_count, b_count)), 256, 0, as_stream(stream)>>>(
      a, a_count, b_adapter, b_count, seed, cpu::lora_init_bound(shape.in));
  CUDA_CHECK_LAUNCH();
}

}  // namespace aiopt::kernels::cuda
