#pragma once
// Device math shared by the CUDA kernel files: storage types and the conversions between them
// and fp32, vector loads, the per-element math, warp and block reductions, the per-row LayerNorm
// and softmax, and launch geometry. Rows are handled by one block each; thread t owns the
// elements t·V, (t + blockDim)·V, ... of its row, so a thread that writes an element and reads
// it back needs no barrier.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "core/cuda_check.hpp"
#include "core/device.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "kernels/cpu/elementwise.hpp"

namespace aiopt::kernels::cuda {

// ---- storage types

// The launchers take bf16 as std::uint16_t bits (kernels/cpu/bf16.hpp); kernels see the same
// bits as __nv_bfloat16. Parameter vectors are always float.
template <class T>
struct Storage {
  using type = T;
};
template <>
struct Storage<std::uint16_t> {
  using type = __nv_bfloat16;
};
template <class T>
using storage_t = typename Storage<T>::type;

template <class T>
const storage_t<T>* device_ptr(const T* p) {
  return reinterpret_cast<const storage_t<T>*>(p);
}
template <class T>
storage_t<T>* device_ptr(T* p) {
  return reinterpret_cast<storage_t<T>*>(p);
}

// One element of float, __half or __nv_bfloat16 to fp32 and back (rounded to nearest even).
template <class T>
__device__ __forceinline__ float widen(T x) {
  return static_cast<float>(x);
}
template <>
__device__ __forceinline__ float widen(__half x) {
  return __half2float(x);
}
template <>
__device__ __forceinline__ float widen(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <class T>
__device__ __forceinline__ T narrow(float x);
template <>
__device__ __forceinline__ float narrow(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half narrow(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 narrow(float x) {
  return __float2bfloat16_rn(x);
}

// ---- vectors of V values widened to float (V = 4: one float4, or four bf16 in 8 bytes)

template <int V>
struct Pack {
  float v[V];
};

struct alignas(8) Bf16x4 {
  __nv_bfloat162 lo, hi;
};

template <int V>
__device__ __forceinline__ Pack<V> load(const float* p) {
  if constexpr (V == 4) {
    const float4 f = *reinterpret_cast<const float4*>(p);
    return {{f.x, f.y, f.z, f.w}};
  } else {
    return {{*p}};
  }
}

template <int V>
__device__ __forceinline__ Pack<V> load(const __nv_bfloat16* p) {
  if constexpr (V == 4) {
    const Bf16x4 h = *reinterpret_cast<const Bf16x4*>(p);
    const float2 lo = __bfloat1622float2(h.lo);
    const float2 hi = __bfloat1622float2(h.hi);
    return {{lo.x, lo.y, hi.x, hi.y}};
  } else {
    return {{__bfloat162float(*p)}};
  }
}

template <int V>
__device__ __forceinline__ void store(float* p, const Pack<V>& a) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(a.v[0], a.v[1], a.v[2], a.v[3]);
  } else {
    *p = a.v[0];
  }
}

// Rounds to nearest even (cvt.rn.bf16x2.f32), as kernels/cpu/bf16.hpp.
template <int V>
__device__ __forceinline__ void store(__nv_bfloat16* p, const Pack<V>& a) {
  if constexpr (V == 4) {
    Bf16x4 h;
    h.lo = __floats2bfloat162_rn(a.v[0], a.v[1]);
    h.hi = __floats2bfloat162_rn(a.v[2], a.v[3]);
    *reinterpret_cast<Bf16x4*>(p) = h;
  } else {
    *p = __float2bfloat16_rn(a.v[0]);
  }
}

// Vectors of 4 when `width` (the row width, or the element count of a flat op) is a multiple of
// 4, so every vector starts 4 elements past the last, and every pointer is aligned to 4 of its
// elements (float: 16 B, bf16: 8 B): cudaMalloc gives 256 B, but the launchers are public and a
// caller may pass an offset pointer.
template <class... T>
inline bool use_vector4(std::size_t width, const T*... pointers) {
  return width % 4 == 0 && ((reinterpret_cast<std::uintptr_t>(pointers) % (4 * sizeof(T)) == 0) && ...);
}

// An elementwise kernel's grid-stride loop over n elements in vectors of V: body(i) for every
// i = 0, V, 2V, ... below n, each in one thread.
template <int V, class Body>
__device__ __forceinline__ void for_each_vector(std::size_t n, Body body) {
  for (std::size_t i = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) * V; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x * V)
    body(i);
}

// Every vectorised launcher's one branch: launch.template operator()<4>() when use_vector4 allows
// float4-wide access, else <1>, then the launch check. The launch lambda takes the width as V:
//   launch_vectorized(use_vector4(n, x, y), [&]<int V>() { kernel<V><<<blocks(n / V), ...>>>(...); });
template <class Launch>
void launch_vectorized(bool vector4, Launch&& launch) {
  if (vector4) {
    launch.template operator()<4>();
  } else {
    launch.template operator()<1>();
  }
  CUDA_CHECK_LAUNCH();
}

// ---- per-element math (the same formulas as kernels/cpu)

// Softmax in the log2 domain: e^x = 2^(x·log2e), ln y = ln2·log2 y.
inline constexpr float log2e = 1.4426950408889634f;
inline constexpr float ln2 = 0.6931471805599453f;

__device__ __forceinline__ float gelu_tanh(float x) {
  constexpr float sqrt_2_over_pi = 0.7978845608028654f;
  return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * (x + 0.044715f * x * x * x)));
}

// cpu::Dropout's counter-based mask (kernels/cpu/elementwise.hpp) as a kernel argument: keep iff
// (bits(seed, i) >> 40) >= ceil(p·2^24), which is exactly rng::uniform(seed, i) >= p.
struct DropoutMask {
  std::uint64_t seed;
  std::uint64_t keep_threshold;
  float scale;

  explicit DropoutMask(const cpu::Dropout& mask)
      : seed(mask.seed), keep_threshold(mask.keep_threshold), scale(mask.scale) {}
  __device__ __forceinline__ float apply(float v, std::uint64_t i) const {
    return (rng::bits(seed, i) >> 40) >= keep_threshold ? v * scale : 0.0f;
  }
};

// ---- reductions over a block (blockDim.x a multiple of 32)

struct Sum {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct Max {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <class Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Every thread gets the block's total. Warp shuffles, then one warp over the warps' partials.
// Safe to call again at once: the next call writes `partial` only after every thread has passed
// this call's second barrier, and `total` only after its own first barrier.
template <class Op>
__device__ float block_reduce(float v, Op op, float identity) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  v = warp_reduce(v, op);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : identity;
    w = warp_reduce(w, op);
    if (lane == 0) total = w;
  }
  __syncthreads();
  return total;
}

// ---- rows (one block per row)

// LayerNorm of one row with two-pass statistics. `row(j)` gives the V pre-norm values at j as
// floats (a load, or the fused chain's recomputation); out may be the row's own storage when
// that is float. out: (hidden), stored as Out; gamma, beta: (hidden).
template <int V, class Row, class Out>
__device__ void layernorm_row(Row row, const float* gamma, const float* beta, Out* out, int hidden, float eps) {
  const int stride = static_cast<int>(blockDim.x) * V;
  float sum = 0.0f;
  for (int j = static_cast<int>(threadIdx.x) * V; j < hidden; j += stride) {
    const Pack<V> a = row(j);
    for (int k = 0; k < V; ++k) sum += a.v[k];
  }
  const float mean = block_reduce(sum, Sum{}, 0.0f) / static_cast<float>(hidden);
  float squares = 0.0f;
  for (int j = static_cast<int>(threadIdx.x) * V; j < hidden; j += stride) {
    const Pack<V> a = row(j);
    for (int k = 0; k < V; ++k) squares += (a.v[k] - mean) * (a.v[k] - mean);
  }
  const float rstd = rsqrtf(block_reduce(squares, Sum{}, 0.0f) / static_cast<float>(hidden) + eps);
  for (int j = static_cast<int>(threadIdx.x) * V; j < hidden; j += stride) {
    const Pack<V> a = row(j);
    const Pack<V> g = load<V>(gamma + j);
    const Pack<V> b = load<V>(beta + j);
    Pack<V> y;
    for (int k = 0; k < V; ++k) y.v[k] = (a.v[k] - mean) * rstd * g.v[k] + b.v[k];
    store<V>(out + j, y);
  }
}

// Softmax of one row, max-subtracted; −inf entries give 0. `row(j)` gives the V scores at j as
// floats; out may be the row's own storage when that is float. A float out holds e^(x − max)
// between the passes; a bf16 out is written once, with e^(x − max) recomputed, so each output
// is rounded once. out: (hidden), stored as Out.
template <int V, class Row, class Out>
__device__ void softmax_row(Row row, Out* out, int hidden) {
  constexpr bool float_out = std::is_same_v<Out, float>;
  const int stride = static_cast<int>(blockDim.x) * V;
  float max = -INFINITY;
  for (int j = static_cast<int>(threadIdx.x) * V; j < hidden; j += stride) {
    const Pack<V> a = row(j);
    for (int k = 0; k < V; ++k) max = fmaxf(max, a.v[k]);
  }
  max = block_reduce(max, Max{}, -INFINITY);
  float sum = 0.0f;
  for (int j = static_cast<int>(threadIdx.x) * V; j < hidden; j += stride) {
    Pack<V> a = row(j);
    for (int k = 0; k < V; ++k) {
      a.v[k] = expf(a.v[k] - max);
      sum += a.v[k];
    }
    if constexpr (float_out) store<V>(out + j, a);
  }
  const float inv = 1.0f / block_reduce(sum, Sum{}, 0.0f);
  for (int j = static_cast<int>(threadIdx.x) * V; j < hidden; j += stride) {
    Pack<V> a;
    if constexpr (float_out) {
      a = load<V>(out + j);
      for (int k = 0; k < V; ++k) a.v[k] *= inv;
    } else {
      a = row(j);
      for (int k = 0; k < V; ++k) a.v[k] = expf(a.v[k] - max) * inv;
    }
    store<V>(out + j, a);
  }
}

// Threads per row block: enough for one vector per thread up to 256, a multiple of 32.
inline unsigned row_block_threads(std::size_t hidden, int v) {
  const std::size_t vectors = (hidden + v - 1) / v;
  const std::size_t warps = (vectors + 31) / 32;
  return static_cast<unsigned>(warps >= 8 ? 256 : warps * 32);
}

// One block per row: gridDim.x is at most 2^31 − 1, and a wider count must not wrap silently.
// Launchers return before launching for zero rows (an empty grid is an invalid configuration).
inline unsigned row_blocks(std::size_t rows) {
  if (rows > 0x7fffffffu)
    throw std::invalid_argument("CUDA row kernels take at most 2^31 - 1 rows, got " + std::to_string(rows));
  return static_cast<unsigned>(rows);
}

// Blocks for a grid-stride loop over `count` items with 256 threads each.
inline unsigned elementwise_blocks(std::size_t count) {
  const std::size_t blocks = (count + 255) / 256;
  return static_cast<unsigned>(blocks < (1u << 20) ? (blocks ? blocks : 1) : (1u << 20));
}

// ---- host helpers of the launchers

// A scratch buffer on the current device, from the tracked allocator. Released by cudaFree,
// which waits for the work queued on the device, so it outlives the kernels that use it.
inline memory::Buffer<float> device_scratch(std::size_t count) {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return memory::Buffer<float>(Device::cuda(device), count);
}

inline int checked_width(std::size_t n, const char* who) {
  if (n > 0x7fffffffu) throw std::invalid_argument(std::string(who) + ": row width exceeds 2^31 - 1");
  return static_cast<int>(n);
}

// out[j] = a[j] + b[j] for j < n (a multiple of V), the block's threads V values apart: a
// token's embedding plus its position's, one row per block.
template <int V>
__device__ __forceinline__ void add_row(const float* a, const float* b, float* out, int n) {
  for (int j = static_cast<int>(threadIdx.x) * V; j < n; j += static_cast<int>(blockDim.x) * V) {
    Pack<V> x = load<V>(a + j);
    const Pack<V> y = load<V>(b + j);
    for (int k = 0; k < V; ++k) x.v[k] += y.v[k];
    store<V>(out + j, x);
  }
}

// The launchers take the stream as void* so that plain C++ callers need no CUDA headers.
inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace aiopt::kernels::cuda
