// Quantization kernels for the int8 and fp8 GEMMs; formats in kernels/cuda/quantize.hpp.
// Maxima of |x| are taken over the bit patterns of |x| as unsigned integers: for non-negative
// floats the integer order is the numeric order, and every NaN pattern lies above +inf, so one
// integer max both finds the largest magnitude and lets a NaN win.
#include "kernels/cuda/quantize.hpp"

#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "core/cuda_check.hpp"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

constexpr int warp_size = 32;
constexpr unsigned full_mask = 0xffffffffu;
constexpr int block_threads = 256;
constexpr float int8_max = 127.0f;
constexpr float e4m3_max = 448.0f;

// ---- kernels

__device__ __forceinline__ unsigned magnitude_bits(float v) { return __float_as_uint(fabsf(v)); }

__device__ __forceinline__ unsigned warp_max(unsigned v) {
  for (int offset = warp_size / 2; offset > 0; offset /= 2) v = max(v, __shfl_xor_sync(full_mask, v, offset));
  return v;
}

// round_even(x / s) saturated to ±127; a NaN quotient gives 0.
__device__ __forceinline__ std::int8_t to_int8(float x, float s) {
  const float v = rintf(x / s);
  return isnan(v) ? std::int8_t{0} : static_cast<std::int8_t>(fminf(fmaxf(v, -int8_max), int8_max));
}

// One warp per row, grid-striding over rows. x, q: (rows, cols); scale: (rows).
__global__ void quantize_int8_rows_kernel(const float* x, std::int8_t* q, float* scale, std::size_t rows,
                                          std::size_t cols) {
  const int lane = static_cast<int>(threadIdx.x % warp_size);
  const std::size_t warps = static_cast<std::size_t>(gridDim.x) * (blockDim.x / warp_size);
  for (std::size_t row = (blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x) / warp_size; row < rows;
       row += warps) {
    const float* xr = x + row * cols;
    std::int8_t* qr = q + row * cols;
    unsigned bits = 0;
    for (std::size_t c = lane; c < cols; c += warp_size) bits = max(bits, magnitude_bits(xr[c]));
    const float s = __uint_as_float(warp_max(bits)) / int8_max;
    // False for 0 (all-zero row, or a max so small that max/127 underflows), NaN and inf.
    const bool finite_positive = s > 0.0f && isfinite(s);
    for (std::size_t c = lane; c < cols; c += warp_size) qr[c] = finite_positive ? to_int8(xr[c], s) : std::int8_t{0};
    if (lane == 0) scale[row] = s;
  }
}

// x, q: (count); scale: (1).
__global__ void quantize_int8_static_kernel(const float* x, const float* scale, std::int8_t* q, std::size_t count) {
  const float s = *scale;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    q[i] = to_int8(x[i], s);
}

// acc, y: (m, n); x_scale: (m) or (1); w_scale, bias: (n).
__global__ void dequantize_int32_kernel(const std::int32_t* acc, const float* x_scale, bool x_scale_per_row,
                                        const float* w_scale, const float* bias, float* y, std::size_t m,
                                        std::size_t n) {
  const std::size_t count = m * n;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t row = i / n, col = i - row * n;
    const float s = (x_scale_per_row ? x_scale[row] : x_scale[0]) * w_scale[col];
    y[i] = fmaf(__int2float_rn(acc[i]), s, bias != nullptr ? bias[col] : 0.0f);
  }
}

// *amax_bits = max(*amax_bits, bits of max|x|); *amax_bits starts at 0. x: (count).
__global__ void amax_bits_kernel(const float* x, std::size_t count, unsigned* amax_bits) {
  unsigned bits = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    bits = max(bits, magnitude_bits(x[i]));
  bits = warp_max(bits);  // all lanes, including those that had no element
  if (threadIdx.x % warp_size == 0 && bits != 0) atomicMax(amax_bits, bits);
}

// The same word, from max|x| (as bits) to the scale max|x| / 448 (as bits). One thread.
__global__ void fp8_scale_from_amax_kernel(unsigned* word) {
  *word = __float_as_uint(__uint_as_float(*word) / e4m3_max);
}

// x, q: (count); scale: (1).
__global__ void quantize_fp8_e4m3_kernel(const float* x, const float* scale, std::uint8_t* q, std::size_t count) {
  const float s = *scale;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    q[i] = s == 0.0f ? std::uint8_t{0} : static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(x[i] / s, __NV_SATFINITE, __NV_E4M3));
}

// Blocks of 8 warps for one warp per row, grid-striding past 2^16 blocks.
unsigned warp_row_blocks(std::size_t rows) {
  constexpr std::size_t rows_per_block = block_threads / warp_size;
  const std::size_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  return static_cast<unsigned>(blocks < (1u << 16) ? (blocks ? blocks : 1) : (1u << 16));
}

}  // namespace

// ---- launchers

void quantize_int8_rows(const float* x, std::int8_t* q, float* scale, std::size_t rows, std::size_t cols,
                        void* stream) {
  if (rows == 0) return;
  quantize_int8_rows_kernel<<<warp_row_blocks(rows), block_threads, 0, as_stream(stream)>>>(x, q, scale, rows, cols);
  CUDA_CHECK_LAUNCH();
}

void quantize_int8_static(const float* x, const float* scale, std::int8_t* q, std::size_t count, void* stream) {
  if (count == 0) return;
  quantize_int8_static_kernel<<<elementwise_blocks(count), block_threads, 0, as_stream(stream)>>>(x, scale, q, count);
  CUDA_CHECK_LAUNCH();
}

void dequantize_int32(const std::int32_t* acc, const float* x_scale, bool x_scale_per_row, const float* w_scale,
                      const float* bias, float* y, std::size_t m, std::size_t n, void* stream) {
  if (m == 0 || n == 0) return;
  dequantize_int32_kernel<<<elementwise_blocks(m * n), block_threads, 0, as_stream(stream)>>>(
      acc, x_scale, x_scale_per_row, w_scale, bias, y, m, n);
  CUDA_CHECK_LAUNCH();
}

void quantize_fp8_e4m3(const float* x, std::uint8_t* q, float* scale, std::size_t count, void* stream) {
  // The scale's word holds max|x| as bits while the maximum is taken, then the scale itself.
  auto* word = reinterpret_cast<unsigned*>(scale);
  CUDA_CHECK(cudaMemsetAsync(word, 0, sizeof(unsigned), as_stream(stream)));
  amax_bits_kernel<<<elementwise_blocks(count), block_threads, 0, as_stream(stream)>>>(x, count, word);
  CUDA_CHECK_LAUNCH();
  fp8_scale_from_amax_kernel<<<1, 1, 0, as_stream(stream)>>>(word);
  CUDA_CHECK_LAUNCH();
  quantize_fp8_e4m3_static(x, scale, q, count, stream);
}

void quantize_fp8_e4m3_static(const float* x, const float* scale, std::uint8_t* q, std::size_t count,
                              void* stream) {
  if (count == 0) return;
  quantize_fp8_e4m3_kernel<<<elementwise_blocks(count), block_threads, 0, as_stream(stream)>>>(x, scale, q, count);
  CUDA_CHECK_LAUNCH();
}

}  // namespace aiopt::kernels::cuda
