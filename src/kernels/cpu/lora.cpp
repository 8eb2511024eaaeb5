#include "kernels/cpu/lora.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "core/memory.hpp"
#include "core/rng.hpp"
#include "kernels/cpu/gemm.hpp"

namespace aiopt::kernels::cpu {

namespace {

// W += sign·scale·B·A: (out, rank)·(rank, in).
void add_product(float* w, const float* a, const float* b_adapter, float scale, const LoraShape& shape,
                 const char* who) {
  check_lora_arguments(shape, {{"w", w}, {"a", a}, {"b_adapter", b_adapter}}, who);
  sgemm(false, false, shape.out, shape.in, shape.rank, scale, b_adapter, shape.rank, a, shape.in, 1.0f, w,
        shape.in);
}

}  // namespace

void check_lora_shape(const LoraShape& shape, const char* who) {
  if (shape.rank == 0) throw std::invalid_argument(std::string(who) + ": rank = 0; it must be at least 1");
  const std::size_t most = std::min(shape.in, shape.out);
  if (shape.rank > most)
    throw std::invalid_argument(std::string(who) + ": rank = " + std::to_string(shape.rank) + " exceeds min(in = " +
                                std::to_string(shape.in) + ", out = " + std::to_string(shape.out) +
                                ") = " + std::to_string(most));
}

void check_lora_arguments(const LoraShape& shape, std::initializer_list<std::pair<const char*, const void*>> required,
                          const char* who) {
  check_lora_shape(shape, who);
  for (const auto& [name, pointer] : required)
    if (pointer == nullptr) throw std::invalid_argument(std::string(who) + ": " + name + " is null");
}

float lora_scale(float alpha, std::size_t rank) {
  if (rank == 0) throw std::invalid_argument("lora_scale: rank = 0; it must be at least 1");
  return alpha / static_cast<float>(rank);
}

void check_lora_ldy(std::size_t ldy, const LoraShape& shape, const char* who) {
  if (ldy < shape.out)
    throw std::invalid_argument(std::string(who) + ": ldy = " + std::to_string(ldy) + " is below out = " +
                                std::to_string(shape.out));
}

void lora_adapter_forward(const float* x, const float* a, const float* b_adapter, float scale, float* u, float* y,
                          std::size_t ldy, const LoraShape& shape) {
  constexpr const char* who = "lora_adapter_forward";
  check_lora_arguments(shape, {{"x", x}, {"a", a}, {"b_adapter", b_adapter}, {"y", y}}, who);
  check_lora_ldy(ldy, shape, who);
  const auto [m, in, out, r] = shape;
  if (m == 0) return;
  memory::Buffer<float> scratch(Device::cpu(), u == nullptr ? m * r : 0);
  float* const u_out = u != nullptr ? u : scratch.data();
  // u = x·Aᵀ: (m, in)·(in, r).
  sgemm(false, true, m, r, in, 1.0f, x, in, a, in, 0.0f, u_out, r);
  // y += scale·u·Bᵀ: (m, r)·(r, out).
  sgemm(false, true, m, out, r, scale, u_out, r, b_adapter, r, 1.0f, y, ldy);
}

void lora_adapter_backward(const float* x, const float* a, const float* b_adapter, const float* u, const float* dy,
                           std::size_t ldy, float scale, float* dx, float* da, float* db, const LoraShape& shape) {
  constexpr const char* who = "lora_adapter_backward";
  check_lora_arguments(
      shape, {{"x", x}, {"a", a}, {"b_adapter", b_adapter}, {"dy", dy}, {"da", da}, {"db", db}}, who);
  check_lora_ldy(ldy, shape, who);
  const auto [m, in, out, r] = shape;
  if (m == 0) return;
  // v = dy·B (m, r), then u when the caller did not keep it.
  memory::Buffer<float> scratch(Device::cpu(), m * r * (u == nullptr ? 2 : 1));
  float* const v = scratch.data();
  sgemm(false, false, m, r, out, 1.0f, dy, ldy, b_adapter, r, 0.0f, v, r);
  if (u == nullptr) {
    float* const u_again = scratch.data() + m * r;
    sgemm(false, true, m, r, in, 1.0f, x, in, a, in, 0.0f, u_again, r);
    u = u_again;
  }
  // dA += scale·vᵀ·x: (r, m)·(m, in).
  sgemm(true, false, r, in, m, scale, v, r, x, in, 1.0f, da, in);
  // dB += scale·dyᵀ·u: (out, m)·(m, r).
  sgemm(true, false, out, r, m, scale, dy, ldy, u, r, 1.0f, db, r);
  // dx += scale·v·A: (m, r)·(r, in).
  if (dx != nullptr) sgemm(false, false, m, in, r, scale, v, r, a, in, 1.0f, dx, in);
}

void lora_forward(const float* x, const float* w, const float* bias, const float* a, const float* b_adapter,
                  float scale, float* u, float* y, const LoraShape& shape) {
  check_lora_arguments(shape, {{"x", x}, {"w", w}, {"a", a}, {"b_adapter", b_adapter}, {"y", y}}, "lora_forward");
  if (shape.rows == 0) return;
  linear(x, w, bias, y, shape.rows, shape.in, shape.out);
  lora_adapter_forward(x, a, b_adapter, scale, u, y, shape.out, shape);
}

void lora_backward(const float* x, const float* w, const float* a, const float* b_adapter, const float* u,
                   const float* dy, float scale, float* dx, float* da, float* db, const LoraShape& shape) {
  constexpr const char* who = "lora_backward";
  check_lora_arguments(
      shape, {{"x", x}, {"a", a}, {"b_adapter", b_adapter}, {"dy", dy}, {"da", da}, {"db", db}}, who);
  if (dx != nullptr) check_lora_arguments(shape, {{"w", w}}, who);
  const auto [m, in, out, r] = shape;
  if (m == 0) return;
  // dx = dy·W: (m, out)·(out, in); the adapter's term is added to it.
  if (dx != nullptr) sgemm(false, false, m, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
  lora_adapter_backward(x, a, b_adapter, u, dy, out, scale, dx, da, db, shape);
}

void lora_merge(float* w, const float* a, const float* b_adapter, float scale, const LoraShape& shape) {
  add_product(w, a, b_adapter, scale, shape, "lora_merge");
}

void lora_unmerge(float* w, const float* a, const float* b_adapter, float scale, const LoraShape& shape) {
  add_product(w, a, b_adapter, -scale, shape, "lora_unmerge");
}

float lora_init_bound(std::size_t in) {
  if (in == 0) throw std::invalid_argument("lora_init_bound: in = 0; it must be at least 1");
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(in)));
}

void lora_init(float* a, float* b_adapter, std::uint64_t seed, const LoraShape& shape) {
  constexpr const char* who = "lora_init";
  check_lora_arguments(shape, {{"a", a}, {"b_adapter", b_adapter}}, who);
  const float bound = lora_init_bound(shape.in);
  const std::size_t count = shape.rank * shape.in;
  for (std::size_t i = 0; i < count; ++i) a[i] = bound * (2.0f * rng::uniform(seed, i) - 1.0f);
  std::fill(b_adapter, b_adapter + shape.out * shape.rank, 0.0f);
}

}  // namespace aiopt::kernels::cpu
