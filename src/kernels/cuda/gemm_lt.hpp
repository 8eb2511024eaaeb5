#pragma once
// Low-precision GEMMs through cuBLASLt (TECHNIQUES.md §3): int8 × int8 → int32 on the integer
// tensor cores (IMMA), and fp8 e4m3 × e4m3 → fp32 or bf16 with per-tensor scales (Ada, Hopper).
// Both compute the linear layer's product, row-major:
//   y (m, n) = x (m, k) · W (n, k)ᵀ
// x and W both with k contiguous. Read column-major, that is yᵀ = W·xᵀ with W transposed and x
// not: the "TN" form, the only one cuBLASLt's IMMA (plain row/column order) and fp8 kernels
// accept. So the layout the model already has is the one they need, and nothing is copied.
//
// Device pointers; `stream` a cudaStream_t (nullptr: default). One cuBLASLt handle per device and
// host thread, with one 32 MiB workspace allocated with it and shared by every stream (GEMMs on
// different streams are ordered: the first on a new stream waits for the device). Like the
// handle, the workspace bypasses the tracked allocator (core/memory.hpp): it is in no case's
// measured peak. The algorithm is chosen by cuBLASLt's heuristic once per shape and pointer
// alignment and reused.
//
// The validate_* functions are host-only and need no device: callers (and tests) check shapes
// before they allocate. The GEMMs call them first.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "core/dtype.hpp"

namespace aiopt::kernels::cuda {

namespace gemm_lt_detail {

[[noreturn]] inline void fail(const char* gemm, const std::string& what) {
  throw std::invalid_argument(std::string("cuda ") + gemm + ": " + what);
}

inline void require_multiple(const char* gemm, const char* name, std::size_t value, std::size_t of,
                             const char* why) {
  if (value == 0 || value % of != 0)
    fail(gemm, std::string(name) + " = " + std::to_string(value) + " must be a positive multiple of " +
                   std::to_string(of) + " (" + why + ")");
}

inline void require_aligned(const char* gemm, const char* name, const void* p, std::size_t alignment) {
  if (reinterpret_cast<std::uintptr_t>(p) % alignment != 0)
    fail(gemm, std::string(name) + " is not " + std::to_string(alignment) + "-byte aligned");
}

}  // namespace gemm_lt_detail

// int32 sums of k products of int8 values stay exact while k·128² < 2^31.
inline constexpr std::size_t gemm_int8_max_k = (std::size_t{1} << 31) / (128 * 128) - 1;

// Throws std::invalid_argument unless gemm_int8 can run: cuBLASLt's IMMA kernels in plain
// (row/column) order need, in its column-major terms, m and k multiples of 4 and every leading
// dimension a multiple of 4, which here means n % 4 == 0 and k % 4 == 0 (the leading dimensions
// are k, k and n); m (the rows of x) is free. Pointers must be 16-byte aligned (cuBLASLt asks for
// 4 and names 16 for speed; 16 keeps the fast kernels). k <= gemm_int8_max_k keeps int32 exact.
inline void validate_gemm_int8(std::size_t m, std::size_t n, std::size_t k, const void* x, const void* w,
                               const void* y) {
  using namespace gemm_lt_detail;
  constexpr const char* gemm = "gemm_int8";
  if (m == 0) fail(gemm, "m = 0 rows of x; need at least 1");
  require_multiple(gemm, "n", n, 4, "cuBLASLt IMMA needs the output features a multiple of 4");
  require_multiple(gemm, "k", k, 4, "cuBLASLt IMMA needs the inner dimension a multiple of 4");
  if (k > gemm_int8_max_k)
    fail(gemm, "k = " + std::to_string(k) + " could overflow the int32 sums; at most " +
                   std::to_string(gemm_int8_max_k));
  require_aligned(gemm, "x", x, 16);
  require_aligned(gemm, "w", w, 16);
  require_aligned(gemm, "y", y, 16);
}

// Throws std::invalid_argument unless gemm_fp8 can run: out is f32 or bf16; cuBLASLt's fp8 kernels
// need 16-byte alignment of pointers and dimensions, here n % 16 == 0 and k % 16 == 0 (leading
// dimensions k, k and n; 16 elements is 16 bytes of fp8); m is free.
inline void validate_gemm_fp8(std::size_t m, std::size_t n, std::size_t k, DType out, const void* x, const void* w,
                              const void* y) {
  using namespace gemm_lt_detail;
  constexpr const char* gemm = "gemm_fp8";
  if (out != DType::f32 && out != DType::bf16)
    fail(gemm, "output dtype " + to_string(out) + " is not supported (f32, bf16)");
  if (m == 0) fail(gemm, "m = 0 rows of x; need at least 1");
  require_multiple(gemm, "n", n, 16, "cuBLASLt fp8 needs 16-byte aligned dimensions");
  require_multiple(gemm, "k", k, 16, "cuBLASLt fp8 needs 16-byte aligned dimensions");
  require_aligned(gemm, "x", x, 16);
  require_aligned(gemm, "w", w, 16);
  require_aligned(gemm, "y", y, 16);
}

// y (m, n) int32 = x (m, k) int8 · W (n, k)ᵀ int8, exact. Throws as validate_gemm_int8, and
// DeviceUnavailable when cuBLASLt cannot start on the current device.
void gemm_int8(const std::int8_t* x, const std::int8_t* w, std::int32_t* y, std::size_t m, std::size_t n,
               std::size_t k, void* stream);

// y (m, n) = (x_scale·w_scale) · x (m, k) · W (n, k)ᵀ with x and W e4m3 bits, x_scale and w_scale
// one fp32 each on the device (the multipliers that turn stored e4m3 values back into real ones,
// as kernels/cuda/quantize.hpp computes them; cuBLASLt's A/B scale pointers). Products of two
// e4m3 values are exact; the sums run in the tensor cores' accumulators, promoted to fp32 at
// intervals (cuBLASLt's default; its "fast accumulation" is left off); y stored as `out`.
// Throws as validate_gemm_fp8, and DeviceUnavailable on a device below compute capability 8.9.
void gemm_fp8(const std::uint8_t* x, const float* x_scale, const std::uint8_t* w, const float* w_scale, void* y,
              DType out, std::size_t m, std::size_t n, std::size_t k, void* stream);

}  // namespace aiopt::kernels::cuda
