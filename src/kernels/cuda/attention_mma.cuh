#pragma once
// Flash attention on tensor cores, f16 or bf16 storage with fp32 accumulation (FA2 layout).
// A block of 4 warps takes 64 queries of one (b, h); each warp owns 16 query rows. For each tile
// of 64 keys, k and v are staged in shared memory; a warp computes its 16×64 scores with
// mma.sync m16n8k16 (q fragments kept in registers), applies the online softmax in registers,
// and multiplies the probabilities — re-packed from the score accumulators into A fragments,
// without a trip through shared memory — by the v tile into its 16×D output accumulator.
//
// Fragment layouts of mma.m16n8k16 (PTX ISA), g = lane / 4, c = lane % 4:
//   A (16×16, row): reg0 = A[g][2c..2c+1], reg1 = A[g+8][2c..], reg2 = A[g][2c+8..], reg3 = A[g+8][2c+8..]
//   B (16×8, col):  reg0 = B[2c..2c+1][g], reg1 = B[2c+8..2c+9][g]
//   C (16×8, f32):  c0, c1 = C[g][2c], C[g][2c+1]; c2, c3 = C[g+8][2c], C[g+8][2c+1]
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "core/cuda_check.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

inline constexpr int mma_warps = 4, mma_threads = 32 * mma_warps, mma_queries = 16 * mma_warps, mma_keys = 64;

template <class T>
__device__ __forceinline__ std::uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ std::uint32_t pack2<__half>(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);  // .x = lo: the low 16 bits
  return *reinterpret_cast<const std::uint32_t*>(&h);
}
template <>
__device__ __forceinline__ std::uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&h);
}

// Two 16-bit elements into one register, `lo` in the low half.
__device__ __forceinline__ std::uint32_t join2(std::uint16_t lo, std::uint16_t hi) {
  return static_cast<std::uint32_t>(lo) | (static_cast<std::uint32_t>(hi) << 16);
}

// d += a·b for one m16n8k16 tile, fp32 accumulators.
template <class T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                          std::uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// q, k, v, out: 16-bit elements as raw bits; T (__half or __nv_bfloat16) picks the mma type.
template <class T, int D>
__global__ void __launch_bounds__(mma_threads)
flash_mma_kernel(const std::uint16_t* __restrict__ q, const std::uint16_t* __restrict__ k,
                 const std::uint16_t* __restrict__ v, std::uint16_t* __restrict__ out, std::size_t q_len,
                 std::size_t kv_len, std::size_t kv_capacity, std::size_t q_offset, bool causal, float scale_log2) {
  // Rows padded by 8 elements (16 bytes): the fragment reads of the 8 row groups of a warp fall
  // in distinct banks, and rows stay 16-byte aligned for the vector fills.
  constexpr int stride = D + 8;
  constexpr int chunks = D / 8;  // 16-byte pieces per row
  __shared__ __align__(16) std::uint16_t sk[mma_keys * stride];
  __shared__ __align__(16) std::uint16_t sv[mma_keys * stride];

  const std::size_t bh = blockIdx.y;
  // Causal blocks at the end do the most work; launching them first evens the tail.
  const std::size_t tile = causal ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const std::size_t q0 = tile * mma_queries;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const std::uint16_t* qh = q + bh * q_len * D;
  const std::uint16_t* kh = k + bh * kv_capacity * D;
  const std::uint16_t* vh = v + bh * kv_capacity * D;

  // Fill `rows` rows of shared memory from global rows first.. (zeros past `limit`).
  auto fill = [&](std::uint16_t* dst, const std::uint16_t* src, std::size_t first, std::size_t limit) {
    for (int e = threadIdx.x; e < mma_keys * chunks; e += mma_threads) {
      const int r = e / chunks, p = e % chunks;
      uint4 val = make_uint4(0, 0, 0, 0);
      if (first + r < limit) val = *reinterpret_cast<const uint4*>(src + (first + r) * D + p * 8);
      *reinterpret_cast<uint4*>(dst + r * stride + p * 8) = val;
    }
  };

  // q of this warp's 16 rows as A fragments, read once through the k buffer.
  fill(sk, qh, q0, q_len);
  __syncthreads();
  std::uint32_t qa[D / 16][4];
  {
    const std::uint16_t* rows = sk + (warp * 16) * stride;
#pragma unroll
    for (int kb = 0; kb < D / 16; ++kb) {
      const int col = kb * 16 + 2 * c;
      qa[kb][0] = *reinterpret_cast<const std::uint32_t*>(rows + g * stride + col);
      qa[kb][1] = *reinterpret_cast<const std::uint32_t*>(rows + (g + 8) * stride + col);
      qa[kb][2] = *reinterpret_cast<const std::uint32_t*>(rows + g * stride + col + 8);
      qa[kb][3] = *reinterpret_cast<const std::uint32_t*>(rows + (g + 8) * stride + col + 8);
    }
  }

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  // Rows g and g + 8 of the warp: running max (in log2 units) and this lane's partial sum.
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  const std::size_t row_q[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  std::size_t row_keys[2];
  for (int h = 0; h < 2; ++h) {
    row_keys[h] = visible_keys(causal, kv_len, q_offset, row_q[h]);
  }
  const std::size_t last = q0 + mma_queries < q_len ? q0 + mma_queries - 1 : q_len - 1;
  const std::size_t keys = visible_keys(causal, kv_len, q_offset, last);

  for (std::size_t j0 = 0; j0 < keys; j0 += mma_keys) {
    __syncthreads();  // every warp is done with the previous tile (and with q)
    fill(sk, kh, j0, kv_len);
    fill(sv, vh, j0, kv_len);
    __syncthreads();

    // s = q·kᵀ: 8 tiles of 16 rows × 8 keys. B = kᵀ, column-major, is k row-major.
    float s[mma_keys / 8][4];
#pragma unroll
    for (int n = 0; n < mma_keys / 8; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      const std::uint16_t* krow = sk + (n * 8 + g) * stride;
#pragma unroll
      for (int kb = 0; kb < D / 16; ++kb) {
        const std::uint32_t b0 = *reinterpret_cast<const std::uint32_t*>(krow + kb * 16 + 2 * c);
        const std::uint32_t b1 = *reinterpret_cast<const std::uint32_t*>(krow + kb * 16 + 2 * c + 8);
        mma_16816<T>(s[n], qa[kb], b0, b1);
      }
    }

    // Scale into log2 units, mask, and the tile's row max (over this lane's columns, then the
    // 4 lanes sharing a row).
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < mma_keys / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2;
        const std::size_t key = j0 + n * 8 + 2 * c + (e % 2);
        s[n][e] = key < row_keys[h] ? s[n][e] * scale_log2 : -INFINITY;
        tile_max[h] = fmaxf(tile_max[h], s[n][e]);
      }
    }
    float correction[2], base[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
      const float new_max = fmaxf(row_max[h], tile_max[h]);
      // A row with every key masked so far (only rows past q_len) stays at zero.
      base[h] = new_max == -INFINITY ? 0.0f : new_max;
      correction[h] = exp2f(row_max[h] - base[h]);
      row_max[h] = new_max;
      row_sum[h] *= correction[h];
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= correction[0];
      o[n][1] *= correction[0];
      o[n][2] *= correction[1];
      o[n][3] *= correction[1];
    }
#pragma unroll
    for (int n = 0; n < mma_keys / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - base[e / 2]);
        row_sum[e / 2] += s[n][e];
      }
    }

    // o += p·v over 4 blocks of 16 keys. A = p from the score tiles 2kb and 2kb+1; B = v
    // (keys × D, column-major fragments): two keys of one column per register.
#pragma unroll
    for (int kb = 0; kb < mma_keys / 16; ++kb) {
      const std::uint32_t pa[4] = {pack2<T>(s[2 * kb][0], s[2 * kb][1]), pack2<T>(s[2 * kb][2], s[2 * kb][3]),
                                   pack2<T>(s[2 * kb + 1][0], s[2 * kb + 1][1]),
                                   pack2<T>(s[2 * kb + 1][2], s[2 * kb + 1][3])};
      const std::uint16_t* v0 = sv + (kb * 16 + 2 * c) * stride;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        const int col = n * 8 + g;
        const std::uint32_t b0 = join2(v0[col], v0[stride + col]);
        const std::uint32_t b1 = join2(v0[8 * stride + col], v0[9 * stride + col]);
        mma_16816<T>(o[n], pa, b0, b1);
      }
    }
  }

  // The full row sums (4 lanes share a row), then out = o / sum for rows inside q_len.
  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
    inv[h] = 1.0f / row_sum[h];
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (row_q[h] >= q_len) continue;
    std::uint16_t* orow = out + (bh * q_len + row_q[h]) * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<std::uint32_t*>(orow + n * 8 + 2 * c) =
          pack2<T>(o[n][2 * h] * inv[h], o[n][2 * h + 1] * inv[h]);
  }
}

template <class T>
void launch_flash_mma(const void* q, const void* k, const void* v, void* out, const AttentionShape& s,
                      cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((s.q_len + mma_queries - 1) / mma_queries),
                  static_cast<unsigned>(s.batch * s.heads));
  const auto* qb = static_cast<const std::uint16_t*>(q);
  const auto* kb = static_cast<const std::uint16_t*>(k);
  const auto* vb = static_cast<const std::uint16_t*>(v);
  auto* ob = static_cast<std::uint16_t*>(out);
  const float scale_log2 = s.scale * log2e;
  if (s.head_dim == 64) {
    flash_mma_kernel<T, 64><<<grid, mma_threads, 0, stream>>>(qb, kb, vb, ob, s.q_len, s.kv_len, s.kv_capacity,
                                                             s.q_offset, s.causal, scale_log2);
  } else {
    flash_mma_kernel<T, 128><<<grid, mma_threads, 0, stream>>>(qb, kb, vb, ob, s.q_len, s.kv_len, s.kv_capacity,
                                                              s.q_offset, s.causal, scale_log2);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace aiopt::kernels::cuda
