#pragma once
// Int4 weight-only GEMV for decoding on CUDA (TECHNIQUES.md §3, int4_weight_only): y = x·Wᵀ with
// W stored in 4 bits and dequantized in registers; x and y stay fp32. Decoding is memory-bound,
// so the speed follows the bytes read, about an eighth of fp32 weights.
//
// Weight format, group-wise symmetric (the same as the CPU int4 kernels):
//   packed (n, k/2) bytes: weight (j, 2i) in the low nibble of byte (j, i), weight (j, 2i + 1) in
//     its high nibble; each nibble a two's-complement q in [−8, 7].
//   scales (n, k/group) fp16 bits: w_jp = s_{j, p / group} · q_jp, groups of `group` consecutive
//     inputs along k, group 32, 64 or 128.
// x is fp32, not fp16: the model's activations are fp32 and x is read once per block from cache,
// so halving it would save nothing measurable against n·k/2 bytes of weights.
//
// Device pointers; `stream` a cudaStream_t (nullptr: default); every launch is checked.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace aiopt::kernels::cuda {

inline constexpr std::size_t gemv_int4_max_rows = 8;  // rows of x per call (decode batch)

// Throws std::invalid_argument unless the arguments suit gemv_int4: 1 <= m <= 8, n >= 1, group
// 32, 64 or 128 dividing k (k >= group), and x and packed 16-byte aligned (the kernel reads both
// 16 bytes at a time; with k a multiple of 32 every row then starts aligned too). Host-only: it
// needs no device, so callers check before they allocate.
inline void validate_gemv_int4(std::size_t m, std::size_t n, std::size_t k, std::size_t group, const void* x,
                               const void* packed) {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("cuda gemv_int4: " + what); };
  if (m < 1 || m > gemv_int4_max_rows)
    fail("m = " + std::to_string(m) + " rows of x; allowed 1 to " + std::to_string(gemv_int4_max_rows));
  if (n < 1) fail("n = 0 output features; need at least 1");
  if (group != 32 && group != 64 && group != 128)
    fail("group = " + std::to_string(group) + "; allowed 32, 64 or 128");
  if (k < group || k % group != 0)
    fail("k = " + std::to_string(k) + " is not a positive multiple of the group size " + std::to_string(group));
  if (reinterpret_cast<std::uintptr_t>(x) % 16 != 0) fail("x is not 16-byte aligned");
  if (reinterpret_cast<std::uintptr_t>(packed) % 16 != 0) fail("packed weights are not 16-byte aligned");
}

// Bytes one call reads and writes at least: packed weights, scales, x and y. For bytes/s figures.
inline std::size_t gemv_int4_bytes(std::size_t m, std::size_t n, std::size_t k, std::size_t group) {
  return n * (k / 2) + n * (k / group) * 2 + m * k * sizeof(float) + m * n * sizeof(float);
}

// y (m, n) = x (m, k) · Wᵀ, W (n, k) as packed (n, k/2) and scales (n, k/group) above. Products
// and sums in fp32. Validates with validate_gemv_int4 first.
void gemv_int4(const float* x, const std::uint8_t* packed, const std::uint16_t* scales, float* y, std::size_t m,
               std::size_t n, std::size_t k, std::size_t group, void* stream);

}  // namespace aiopt::kernels::cuda
