// The int8 KV cache on CUDA (TECHNIQUES.md §1, kv_cache_int8): writing new k, v rows quantized,
// and attention that dequantizes them as it reads. Row format and layouts as
// kernels/cpu/kv_int8.hpp: one fp32 scale s = max|x| / 127 per (batch, head, position) row,
// q = round_even(x / s) saturated to [−127, 127], an all-zero row stored as scale 0 and zeros.
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/device_math.cuh"
#include "kernels/cuda/warp_softmax_merge.cuh"
#include "kernels/cuda/kv_int8.hpp"

namespace aiopt::kernels::cuda {

namespace {

constexpr int warp_size = 32;
constexpr unsigned full_mask = 0xffffffffu;

// ---- quantization (one warp per row)

// x: (n) -> out: (n) int8 and *scale, as cpu::quantize_row_int8: x / s is an IEEE division on
// both, and rintf rounds to nearest even like the CPU's 1.5·2^23 trick.
__device__ void quantize_row_warp(const float* x, std::int8_t* out, float* scale, int n, int lane) {
  float max = 0.0f;
  for (int d = lane; d < n; d += warp_size) max = fmaxf(max, fabsf(x[d]));
  max = warp_reduce(max, Max{});
  const float s = max / 127.0f;
  for (int d = lane; d < n; d += warp_size)
    out[d] = max == 0.0f ? std::int8_t{0} : static_cast<std::int8_t>(fminf(fmaxf(rintf(x[d] / s), -127.0f), 127.0f));
  if (lane == 0) *scale = s;  // 0 for an all-zero row
}

// One warp per (b, t, h): copies q and quantizes the k and v rows into the cache at pos0 + t.
// qkv: (batch, len, 3, heads, head_dim); q: (batch, heads, len, head_dim);
// k8, v8: (batch, heads, capacity, head_dim); k_scale, v_scale: (batch, heads, capacity).
__global__ void split_qkv_int8_kernel(const float* qkv, float* q, std::int8_t* k8, float* k_scale, std::int8_t* v8,
                                      float* v_scale, std::size_t rows, std::size_t len, std::size_t heads,
                                      int head_dim, std::size_t capacity, std::size_t pos0) {
  const std::size_t row = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) / warp_size;
  const int lane = static_cast<int>(threadIdx.x % warp_size);
  if (row >= rows) return;  // whole warps only: blockDim.x is a multiple of 32
  const std::size_t h = row % heads;
  const std::size_t bt = row / heads;  // b·len + t
  const std::size_t t = bt % len, b = bt / len;
  const std::size_t channels = heads * head_dim;
  const float* src = qkv + bt * 3 * channels + h * head_dim;  // q; k at + channels, v at + 2·channels
  float* q_row = q + ((b * heads + h) * len + t) * head_dim;
  for (int d = lane; d < head_dim; d += warp_size) q_row[d] = src[d];
  const std::size_t slot = (b * heads + h) * capacity + pos0 + t;
  quantize_row_warp(src + channels, k8 + slot * head_dim, k_scale + slot, head_dim, lane);
  quantize_row_warp(src + 2 * channels, v8 + slot * head_dim, v_scale + slot, head_dim, lane);
}

// ---- attention over the int8 cache

constexpr int attention_warps = 8;

// What the attention kernel needs of AttentionShape, as device-friendly values.
struct AttentionArgs {
  std::size_t q_len, kv_len, kv_capacity, q_offset;
  int head_dim;
  bool causal;
  float scale;
};

__device__ __forceinline__ float dot_int8_row(const float* q, const std::int8_t* k, int n, bool vector4) {
  float dot = 0.0f;
  if (vector4) {
    for (int d = 0; d < n; d += 4) {
      const char4 c = *reinterpret_cast<const char4*>(k + d);
      dot += q[d] * c.x + q[d + 1] * c.y + q[d + 2] * c.z + q[d + 3] * c.w;
    }
  } else {
    for (int d = 0; d < n; ++d) dot += q[d] * k[d];
  }
  return dot;
}

// One block per (b, h, query) row and slice of 32·DPL output dimensions (blockIdx.y); every slice
// computes the full scores, so head_dim is unbounded while the accumulators stay in registers.
// Each warp takes tiles of 32 keys in turn (tile w, w + W, ...): lane j scores key j of the tile
// against the whole q row, then the warp runs the online softmax (Milakov & Gimelshein 2018)
// over the tile and accumulates p·v, lane l owning dimensions d0 + l + 32·e. Finally the warps'
// (max, sum, accumulator) triples are merged in shared memory.
// q, out: (batch, heads, q_len, head_dim); k8, v8: (batch, heads, kv_capacity, head_dim);
// k_scale, v_scale: (batch, heads, kv_capacity).
template <int DPL>
__global__ void attention_int8_kv_kernel(const float* q, const std::int8_t* k8, const float* k_scale,
                                         const std::int8_t* v8, const float* v_scale, float* out, AttentionArgs a,
                                         bool vector4) {
  constexpr int slice = warp_size * DPL;
  extern __shared__ float shared[];
  float* q_row = shared;                                    // (head_dim), scaled
  float* warp_acc = q_row + a.head_dim;                     // (attention_warps, slice)
  float* warp_max = warp_acc + attention_warps * slice;     // (attention_warps)
  float* warp_sum = warp_max + attention_warps;             // (attention_warps)

  const int D = a.head_dim;
  const std::size_t row = blockIdx.x;  // (b·heads + h)·q_len + i
  const std::size_t i = row % a.q_len;
  const std::size_t bh = row / a.q_len;
  const int d0 = static_cast<int>(blockIdx.y) * slice;
  // Keys [0, kv_end) are seen; kv_end >= 1 (AttentionShape::validate), so tile 0 has a key.
  const std::size_t kv_end = visible_keys(a.causal, a.kv_len, a.q_offset, i);

  // The softmax scale folded into q: s_j = (scale·q)·k_j.
  for (int d = static_cast<int>(threadIdx.x); d < D; d += static_cast<int>(blockDim.x))
    q_row[d] = q[row * D + d] * a.scale;
  __syncthreads();

  const int lane = static_cast<int>(threadIdx.x % warp_size);
  const int warp = static_cast<int>(threadIdx.x / warp_size);
  const std::int8_t* k_head = k8 + bh * a.kv_capacity * D;
  const std::int8_t* v_head = v8 + bh * a.kv_capacity * D;
  const float* ks_head = k_scale + bh * a.kv_capacity;
  const float* vs_head = v_scale + bh * a.kv_capacity;

  float max = -INFINITY, sum = 0.0f;
  float acc[DPL];
  for (int e = 0; e < DPL; ++e) acc[e] = 0.0f;

  for (std::size_t j0 = static_cast<std::size_t>(warp) * warp_size; j0 < kv_end;
       j0 += static_cast<std::size_t>(attention_warps) * warp_size) {
    const std::size_t j = j0 + lane;
    const bool seen = j < kv_end;
    const float s = seen ? dot_int8_row(q_row, k_head + j * D, D, vector4) * ks_head[j] : -INFINITY;
    // Key j0 is seen, so the tile's max and max_new are finite; the first tile's correction is
    // e^(−inf) = 0 against the empty state.
    const float max_new = fmaxf(max, warp_reduce(s, Max{}));
    const float correction = expf(max - max_new);
    const float p = expf(s - max_new);  // 0 for keys not seen
    sum = sum * correction + warp_reduce(p, Sum{});
    for (int e = 0; e < DPL; ++e) acc[e] *= correction;
    // p_j·s_v(j), the weight of int8 row v_j; broadcast from lane jj in turn.
    const float weight = seen ? p * vs_head[j] : 0.0f;
    const int count = static_cast<int>(kv_end - j0 < std::size_t{warp_size} ? kv_end - j0 : std::size_t{warp_size});
    for (int jj = 0; jj < count; ++jj) {
      const float w = __shfl_sync(full_mask, weight, jj);
      const std::int8_t* v_row = v_head + (j0 + jj) * D;
      for (int e = 0; e < DPL; ++e) {
        const int d = d0 + lane + warp_size * e;
        if (d < D) acc[e] += w * static_cast<float>(v_row[d]);
      }
    }
    max = max_new;
  }

  merge_warp_softmax<attention_warps, DPL>(max, sum, acc, d0, D, warp_acc, warp_max, warp_sum, out + row * D);
}

template <int DPL>
void launch_attention(const float* q, const std::int8_t* k8, const float* k_scale, const std::int8_t* v8,
                      const float* v_scale, float* out, const AttentionShape& shape, cudaStream_t stream) {
  constexpr int slice = warp_size * DPL;
  const AttentionArgs args{shape.q_len,    shape.kv_len, shape.kv_capacity, shape.q_offset,
                           static_cast<int>(shape.head_dim), shape.causal, shape.scale};
  const std::size_t shared_bytes = (shape.head_dim + attention_warps * (slice + 2)) * sizeof(float);
  if (shared_bytes > 48 * 1024)
    throw std::invalid_argument("cuda attention_int8_kv: head_dim " + std::to_string(shape.head_dim) +
                                " needs more than 48 KiB of shared memory");
  const dim3 grid(row_blocks(shape.batch * shape.heads * shape.q_len),
                  static_cast<unsigned>((shape.head_dim + slice - 1) / slice));
  // char4 loads of k rows: every row starts 4-byte aligned when head_dim is a multiple of 4.
  const bool vector4 = shape.head_dim % 4 == 0 && reinterpret_cast<std::uintptr_t>(k8) % 4 == 0;
  attention_int8_kv_kernel<DPL><<<grid, attention_warps * warp_size, shared_bytes, stream>>>(
      q, k8, k_scale, v8, v_scale, out, args, vector4);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

// ---- launchers

void split_qkv_int8(const float* qkv, float* q, std::int8_t* k8, float* k_scale, std::int8_t* v8,
                    float* v_scale, std::size_t batch, std::size_t len, std::size_t heads,
                    std::size_t head_dim, std::size_t capacity, std::size_t pos0, void* stream) {
  const std::size_t rows = batch * len * heads;
  if (rows == 0 || head_dim == 0) return;
  constexpr unsigned threads = 256;  // 8 rows per block
  const std::size_t blocks = (rows * warp_size + threads - 1) / threads;
  split_qkv_int8_kernel<<<row_blocks(blocks), threads, 0, as_stream(stream)>>>(
      qkv, q, k8, k_scale, v8, v_scale, rows, len, heads, static_cast<int>(head_dim), capacity, pos0);
  CUDA_CHECK_LAUNCH();
}

void attention_int8_kv(const float* q, const std::int8_t* k8, const float* k_scale,
                       const std::int8_t* v8, const float* v_scale, float* out,
                       const AttentionShape& shape, void* stream) {
  shape.validate();
  // Registers per lane for its output dimensions: the fewest of 1, 2, 4, 8 that cover head_dim,
  // and slices of 256 dimensions beyond that.
  const std::size_t per_lane = (shape.head_dim + warp_size - 1) / warp_size;
  const cudaStream_t s = as_stream(stream);
  if (per_lane <= 1) {
    launch_attention<1>(q, k8, k_scale, v8, v_scale, out, shape, s);
  } else if (per_lane <= 2) {
    launch_attention<2>(q, k8, k_scale, v8, v_scale, out, shape, s);
  } else if (per_lane <= 4) {
    launch_attention<4>(q, k8, k_scale, v8, v_scale, out, shape, s);
  } else {
    launch_attention<8>(q, k8, k_scale, v8, v_scale, out, shape, s);
  }
}

}  // namespace aiopt::kernels::cuda
