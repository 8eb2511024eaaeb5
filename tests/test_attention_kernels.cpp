// Attention kernels: every CPU variant (naive, flash, memory_efficient) against the float64
// reference on random inputs — causal and not, queries after an offset, a KV cache larger than
// its filled part, head_dim 64 and an odd one, a one-query decode step — their workspace, and
// ([gpu]) every CUDA variant and dtype against the same reference.
//
// Tolerances (max abs error against the float64 reference), and why. Inputs are uniform in
// [-1, 1], so each output is a convex combination of v rows: |out| <= 1.
//   fp32 CPU and CUDA variants: 2e-5. A score is an fp32 dot of d <= 128 products with
//   scale 1/√d (|s| <= √d, rounding ~d·2^-24·|s| < 1e-4 relative to nothing larger than 1e-5
//   absolute in practice), exp_poly is within 3e-7 relative, and the fp32 sums over Tk <= 1024
//   keys add a few 1e-7 relative: each output moves by ~1e-6; 2e-5 leaves a wide margin.
//   f16 CUDA: 4e-3. q, k, v are rounded to f16 (2^-11 relative), P is rounded to f16 before P·v
//   on the tensor cores, the output once more: a few 2^-11 ≈ 5e-4 per output; 4e-3 is 8 of those.
//   bf16 CUDA: 3e-2. The same with bf16's 2^-8: a few 4e-3; 3e-2 is about 8 of those.
// The reference is computed from the same rounded inputs the GPU sees, so only the kernel's own
// arithmetic is measured.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/cuda_runtime.hpp"
#include "core/device.hpp"
#include "core/dtype.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cpu/attention.hpp"
#include "support/error_metric.hpp"
#if defined(AIOPT_HAVE_CUDA)
#include "kernels/cuda/attention.hpp"
#endif

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
using kernels::AttentionShape;

namespace {

constexpr double fp32_tolerance = 2e-5;

struct Inputs {
  std::vector<float> q, k, v;
};

// q: (B, H, Tq, d); k, v: (B, H, capacity, d) with the rows past kv_len NaN, so a kernel that
// reads beyond the filled part of a cache poisons its output.
Inputs random_inputs(const AttentionShape& s, std::uint64_t seed) {
  rng::Stream r(seed);
  Inputs in;
  in.q.resize(s.batch * s.heads * s.q_len * s.head_dim);
  for (auto& x : in.q) x = r.uniform(-1.0f, 1.0f);
  const std::size_t kv = s.batch * s.heads * s.kv_capacity * s.head_dim;
  in.k.resize(kv);
  in.v.resize(kv);
  for (std::size_t i = 0; i < kv; ++i) {
    const bool filled = (i / s.head_dim) % s.kv_capacity < s.kv_len;
    in.k[i] = filled ? r.uniform(-1.0f, 1.0f) : std::numeric_limits<float>::quiet_NaN();
    in.v[i] = filled ? r.uniform(-1.0f, 1.0f) : std::numeric_limits<float>::quiet_NaN();
  }
  return in;
}

// Max |got − want|; a NaN anywhere gives infinity, so it fails every tolerance.
using aiopt::test::max_abs_error;

std::vector<double> reference(const Inputs& in, const AttentionShape& s) {
  std::vector<double> out(in.q.size());
  cpu::attention_reference(in.q.data(), in.k.data(), in.v.data(), out.data(), s);
  return out;
}

// Runs the three CPU variants (flash with two tilings) and checks each against the reference.
void check_cpu_variants(const AttentionShape& s, std::uint64_t seed) {
  const Inputs in = random_inputs(s, seed);
  const std::vector<double> want = reference(in, s);
  std::vector<float> out(in.q.size());

  std::vector<float> scores(cpu::naive_workspace_elements(s));
  cpu::attention_naive(in.q.data(), in.k.data(), in.v.data(), out.data(), scores.data(), s);
  CHECK(max_abs_error(out, want) < fp32_tolerance);

  for (cpu::FlashTiles tiles : {cpu::FlashTiles{}, cpu::FlashTiles{16, 24}, cpu::FlashTiles{5, 7}}) {
    INFO("flash tiles " << tiles.q_tile << " x " << tiles.kv_tile);
    std::fill(out.begin(), out.end(), -7.0f);
    cpu::attention_flash(in.q.data(), in.k.data(), in.v.data(), out.data(), s, tiles);
    CHECK(max_abs_error(out, want) < fp32_tolerance);
  }

  for (std::size_t chunk : {std::size_t{128}, std::size_t{13}}) {
    INFO("memory_efficient chunk " << chunk);
    std::fill(out.begin(), out.end(), -7.0f);
    cpu::attention_memory_efficient(in.q.data(), in.k.data(), in.v.data(), out.data(), s, chunk);
    CHECK(max_abs_error(out, want) < fp32_tolerance);
  }
}

AttentionShape cache_shape(std::size_t q_len, std::size_t kv_len, std::size_t capacity,
                           std::size_t q_offset, std::size_t d, bool causal) {
  return {2, 3, q_len, kv_len, d, capacity, q_offset, causal, 1.0f / std::sqrt(static_cast<float>(d))};
}

}  // namespace

TEST_CASE("CPU attention variants match the reference on self-attention", "[attention]") {
  for (bool causal : {false, true}) {
    for (std::size_t d : {std::size_t{64}, std::size_t{37}}) {
      INFO("causal " << causal << ", head_dim " << d);
      check_cpu_variants(AttentionShape::self(2, 3, 100, d, causal), 11 + d + causal);
    }
  }
}

TEST_CASE("CPU attention variants match the reference on a partly filled KV cache", "[attention]") {
  SECTION("causal queries after an offset") {
    // 7 new queries at positions 43..49 of a 50-key cache with room for 64.
    check_cpu_variants(cache_shape(7, 50, 64, 43, 64, true), 21);
  }
  SECTION("non-causal queries, fewer than the keys") {
    check_cpu_variants(cache_shape(9, 70, 96, 0, 37, false), 22);
  }
  SECTION("one-query decode step") {
    check_cpu_variants(cache_shape(1, 33, 40, 32, 64, true), 23);
    check_cpu_variants(cache_shape(1, 1, 8, 0, 64, true), 24);
  }
  SECTION("a causal prefill into a larger cache") {
    check_cpu_variants(cache_shape(80, 80, 128, 0, 64, true), 25);
  }
}

TEST_CASE("a NaN input fails the comparison", "[attention]") {
  const AttentionShape s = AttentionShape::self(1, 2, 40, 64, false);
  Inputs in = random_inputs(s, 31);
  const std::vector<double> want = reference(in, s);
  in.q[5] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> out(in.q.size());
  cpu::attention_flash(in.q.data(), in.k.data(), in.v.data(), out.data(), s);
  CHECK_FALSE(max_abs_error(out, want) < fp32_tolerance);
}

TEST_CASE("attention shapes are validated", "[attention]") {
  AttentionShape s = AttentionShape::self(1, 1, 8, 16, true);
  s.q_offset = 1;  // queries 1..8 of 8 keys: the last one sees past the cache
  std::vector<float> buf(8 * 16), scores(64);
  CHECK_THROWS_AS(cpu::attention_flash(buf.data(), buf.data(), buf.data(), buf.data(), s),
                  std::invalid_argument);
  s.q_offset = 0;
  s.kv_capacity = 4;
  CHECK_THROWS_AS(cpu::attention_naive(buf.data(), buf.data(), buf.data(), buf.data(), scores.data(), s),
                  std::invalid_argument);
  s = AttentionShape::self(1, 1, 8, 16, false);
  CHECK_THROWS_AS(cpu::attention_flash(buf.data(), buf.data(), buf.data(), buf.data(), s, {0, 8}),
                  std::invalid_argument);
  CHECK_THROWS_AS(cpu::attention_memory_efficient(buf.data(), buf.data(), buf.data(), buf.data(), s, 0),
                  std::invalid_argument);
}

TEST_CASE("flash attention's workspace is far below the naive scores at N = 1024", "[attention]") {
  const AttentionShape s = AttentionShape::self(1, 4, 1024, 64, false);
  const std::size_t n = s.batch * s.heads * s.q_len * s.head_dim;
  const std::vector<std::int64_t> dims{static_cast<std::int64_t>(n)};
  Tensor q = Tensor::empty(dims, DType::f32, Device::cpu()), k = Tensor::empty(dims, DType::f32, Device::cpu());
  Tensor v = Tensor::empty(dims, DType::f32, Device::cpu()), out = Tensor::empty(dims, DType::f32, Device::cpu());
  q.fill_uniform(41, -1.0f, 1.0f);
  k.fill_uniform(42, -1.0f, 1.0f);
  v.fill_uniform(43, -1.0f, 1.0f);

  std::size_t naive_bytes = 0, flash_bytes = 0;
  {
    memory::Scope scope(Device::cpu());
    memory::Buffer<float> scores(Device::cpu(), cpu::naive_workspace_elements(s));
    cpu::attention_naive(q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(),
                         scores.data(), s);
    naive_bytes = scope.peak_bytes();
  }
  {
    memory::Scope scope(Device::cpu());
    cpu::attention_flash(q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(), s);
    flash_bytes = scope.peak_bytes();
  }
  INFO("naive " << naive_bytes << " B, flash " << flash_bytes << " B");
  CHECK(naive_bytes == 4 * 1024 * 1024 * sizeof(float));
  CHECK(flash_bytes > 0);
  CHECK(flash_bytes * 10 < naive_bytes);
}

#if defined(AIOPT_HAVE_CUDA)
#include <cuda_runtime.h>

#include "core/cuda_check.hpp"
#include "core/half.hpp"

namespace {

// The inputs rounded to `dtype` (so the reference sees what the GPU stores), uploaded.
memory::Buffer<std::byte> upload(std::vector<float>& host, DType dtype) {
  const std::size_t n = host.size(), bytes = n * (dtype == DType::f32 ? 4 : 2);
  memory::Buffer<std::byte> d(Device::cuda(), bytes);
  if (dtype == DType::f32) {
    CUDA_CHECK(cudaMemcpy(d.data(), host.data(), bytes, cudaMemcpyHostToDevice));
    return d;
  }
  std::vector<std::uint16_t> bits(n);
  convert(host.data(), bits.data(), n, dtype);
  convert(bits.data(), host.data(), n, dtype);
  CUDA_CHECK(cudaMemcpy(d.data(), bits.data(), bytes, cudaMemcpyHostToDevice));
  return d;
}

std::vector<float> download(const memory::Buffer<std::byte>& d, std::size_t n, DType dtype) {
  std::vector<float> host(n);
  if (dtype == DType::f32) {
    CUDA_CHECK(cudaMemcpy(host.data(), d.data(), n * 4, cudaMemcpyDeviceToHost));
    return host;
  }
  std::vector<std::uint16_t> bits(n);
  CUDA_CHECK(cudaMemcpy(bits.data(), d.data(), n * 2, cudaMemcpyDeviceToHost));
  convert(bits.data(), host.data(), n, dtype);
  return host;
}

double cuda_tolerance(DType dtype) { return dtype == DType::f32 ? fp32_tolerance : dtype == DType::f16 ? 4e-3 : 3e-2; }

}  // namespace

TEST_CASE("every CUDA attention variant and dtype matches the reference on KV-cache shapes", "[attention][gpu]") {
  namespace gpu = aiopt::kernels::cuda;
  const std::vector<AttentionShape> shapes = {
      AttentionShape::self(2, 3, 150, 64, false), AttentionShape::self(2, 3, 150, 128, true),
      cache_shape(7, 50, 64, 43, 64, true),       cache_shape(1, 70, 72, 69, 128, true),
      cache_shape(9, 70, 96, 0, 64, false),
  };
  for (const AttentionShape& s : shapes)
    for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
      INFO("q_len " << s.q_len << " kv_len " << s.kv_len << " d " << s.head_dim << " causal " << s.causal << " "
                    << to_string(dtype));
      Inputs in = random_inputs(s, 51);
      // The rows past kv_len are NaN; rounding keeps them NaN.
      const auto q = upload(in.q, dtype), k = upload(in.k, dtype), v = upload(in.v, dtype);
      const std::vector<double> want = reference(in, s);
      const std::size_t eb = dtype == DType::f32 ? 4 : 2;
      memory::Buffer<std::byte> out(Device::cuda(), in.q.size() * eb);
      memory::Buffer<std::byte> scores(Device::cuda(), gpu::naive_workspace_elements(s) * eb);
      gpu::attention_naive(q.data(), k.data(), v.data(), out.data(), scores.data(), dtype, s, nullptr);
      CHECK(max_abs_error(download(out, in.q.size(), dtype), want) < cuda_tolerance(dtype));
      gpu::attention_flash(q.data(), k.data(), v.data(), out.data(), dtype, s, nullptr);
      CHECK(max_abs_error(download(out, in.q.size(), dtype), want) < cuda_tolerance(dtype));
      memory::Buffer<std::byte> chunk_scores(Device::cuda(), gpu::memory_efficient_workspace_elements(s, 16) * eb);
      gpu::attention_memory_efficient(q.data(), k.data(), v.data(), out.data(), chunk_scores.data(), dtype, s, 16,
                                      nullptr);
      CHECK(max_abs_error(download(out, in.q.size(), dtype), want) < cuda_tolerance(dtype));
    }
}
#endif
