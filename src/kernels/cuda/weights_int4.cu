// Int4 weight-only GEMV; format in kernels/cuda/weights_int4.hpp.
//
// The work is split in chunks of 32 weights: 16 bytes of one row, loaded as one 128-bit load.
// A group holds a whole number of chunks (group is a multiple of 32), so each chunk needs one
// scale. LANES lanes of a warp share one output row (8, 16 or 32: the fewest that still give
// every lane a chunk when rows are short), lane l taking chunks l, l + LANES, ...; consecutive
// lanes read consecutive 16-byte chunks, so a warp's loads are coalesced. A chunk is
// dequantized in registers (sign-extending shifts, then fp32 FMAs against x) and multiplied by
// its scale once: s·Σ q·x instead of Σ (s·q)·x. The LANES partial sums of a row meet through
// warp shuffles.
#include "kernels/cuda/weights_int4.hpp"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "core/cuda_check.hpp"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

constexpr int warp_size = 32;
constexpr unsigned full_mask = 0xffffffffu;
constexpr int block_threads = 256;
constexpr int chunk = 32;  // weights per 16-byte load
constexpr int max_rows = static_cast<int>(gemv_int4_max_rows);

// ---- kernels

// Nibble e (0..7) of a little-endian word, as the signed 4-bit value it encodes: weight e sits
// in bits 4e..4e+3; shifting it to the top and arithmetic-shifting back sign-extends it.
template <int E>
__device__ __forceinline__ float nibble(std::uint32_t word) {
  return static_cast<float>(static_cast<std::int32_t>(word << (28 - 4 * E)) >> 28);
}

// Σ_e q_e·x_e over the 8 weights of one word; x8 points at their 8 inputs (16-byte aligned).
__device__ __forceinline__ float dot_word(std::uint32_t word, const float* x8, float dot) {
  const float4 lo = *reinterpret_cast<const float4*>(x8);
  const float4 hi = *reinterpret_cast<const float4*>(x8 + 4);
  dot = fmaf(nibble<0>(word), lo.x, dot);
  dot = fmaf(nibble<1>(word), lo.y, dot);
  dot = fmaf(nibble<2>(word), lo.z, dot);
  dot = fmaf(nibble<3>(word), lo.w, dot);
  dot = fmaf(nibble<4>(word), hi.x, dot);
  dot = fmaf(nibble<5>(word), hi.y, dot);
  dot = fmaf(nibble<6>(word), hi.z, dot);
  dot = fmaf(nibble<7>(word), hi.w, dot);
  return dot;
}

// x: (m, k); packed: (n, k/32) chunks of 16 bytes; scales: (n, k/group); y: (m, n).
template <int LANES>
__global__ void gemv_int4_kernel(const float* __restrict__ x, const uint4* __restrict__ packed,
                                 const __half* __restrict__ scales, float* __restrict__ y, int m, std::size_t n,
                                 std::size_t k, std::size_t group) {
  constexpr int rows_per_warp = warp_size / LANES;
  const std::size_t thread = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  const int lane = static_cast<int>(threadIdx.x % warp_size);
  const std::size_t j = thread / warp_size * rows_per_warp + lane / LANES;  // output feature
  const int l = lane % LANES;
  const std::size_t chunks = k / chunk;

  float acc[max_rows];
#pragma unroll
  for (int r = 0; r < max_rows; ++r) acc[r] = 0.0f;

  if (j < n) {
    const uint4* row = packed + j * chunks;
    const __half* row_scales = scales + j * (k / group);
    for (std::size_t c = l; c < chunks; c += LANES) {
      const uint4 q = __ldg(row + c);
      const float s = __half2float(row_scales[c * chunk / group]);
#pragma unroll
      for (int r = 0; r < max_rows; ++r) {
        if (r < m) {
          const float* xc = x + r * k + c * chunk;
          float dot = 0.0f;
          dot = dot_word(q.x, xc, dot);
          dot = dot_word(q.y, xc + 8, dot);
          dot = dot_word(q.z, xc + 16, dot);
          dot = dot_word(q.w, xc + 24, dot);
          acc[r] = fmaf(s, dot, acc[r]);
        }
      }
    }
  }
  // Every lane takes part, rows past n with zeros: the xor partners of a lane stay within its
  // aligned group of LANES lanes.
#pragma unroll
  for (int r = 0; r < max_rows; ++r)
    for (int offset = LANES / 2; offset > 0; offset /= 2) acc[r] += __shfl_xor_sync(full_mask, acc[r], offset);
  if (j < n && l == 0) {
#pragma unroll
    for (int r = 0; r < max_rows; ++r)
      if (r < m) y[r * n + j] = acc[r];
  }
}

template <int LANES>
void launch(const float* x, const std::uint8_t* packed, const std::uint16_t* scales, float* y, std::size_t m,
            std::size_t n, std::size_t k, std::size_t group, cudaStream_t stream) {
  constexpr std::size_t rows_per_block = block_threads / LANES;
  const std::size_t blocks = (n + rows_per_block - 1) / rows_per_block;
  if (blocks > 0x7fffffffu)
    throw std::invalid_argument("cuda gemv_int4: n = " + std::to_string(n) + " needs more than 2^31 - 1 blocks");
  gemv_int4_kernel<LANES><<<static_cast<unsigned>(blocks), block_threads, 0, stream>>>(
      x, reinterpret_cast<const uint4*>(packed), reinterpret_cast<const __half*>(scales), y, static_cast<int>(m), n,
      k, group);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

// ---- launcher

void gemv_int4(const float* x, const std::uint8_t* packed, const std::uint16_t* scales, float* y, std::size_t m,
               std::size_t n, std::size_t k, std::size_t group, void* stream) {
  validate_gemv_int4(m, n, k, group, x, packed);
  const std::size_t chunks = k / chunk;
  if (chunks <= 8)
    launch<8>(x, packed, scales, y, m, n, k, group, as_stream(stream));
  else if (chunks <= 16)
    launch<16>(x, packed, scales, y, m, n, k, group, as_stream(stream));
  else
    launch<32>(x, packed, scales, y, m, n, k, group, as_stream(stream));
}

}  // namespace aiopt::kernels::cuda
