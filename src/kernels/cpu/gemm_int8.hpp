#pragma once
// The int8 GEMM (and GEMV, m = 1) on the CPU (TECHNIQUES.md §3):
//   y[i, j] = s_x[i]·s_w[j]·Σ_p q_x[i, p]·q_w[j, p] (+ b[j])
// with x: (m, k) activations as kernels/cpu/quantize.hpp's QuantizedActivations, w: (n, k) int8
// weights with one scale per output channel, packed once (PackedInt8Weights), y: (m, n) fp32.
// The sum accumulates exactly in int32; the result is then
//   y = fma(float(dot), s_x·s_w, b)      (b = 0 when there is no bias)
// with s_x·s_w rounded to fp32 first, on every path, so all paths agree bit for bit.
//
// Paths, chosen at run time from the CPU's flags (core/hardware.hpp):
//   avx512_vnni  vpdpbusd multiplies unsigned by signed bytes, so it takes the activations as
//                stored, u8 = q_x + 128, and the bias is removed per output channel:
//                Σ_p (q_x + 128)·q_w = Σ_p q_x·q_w + 128·Σ_p q_w[j, p], the last term being
//                PackedInt8Weights::compensation[j], subtracted from the int32 accumulator.
//   avx2         vpmaddubsw (u8 × s8, adjacent pairs summed into int16 with saturation) would
//                saturate on u8 = q_x + 128: 2·255·127 = 64,770 > 32,767. Instead it multiplies
//                |q_w| (u8, <= 127) by sign(q_w)·q_x (s8, in [−127, 127]): the same products, and
//                a pair sums to at most 2·127·127 = 32,258, so it never saturates; vpmaddwd then
//                sums pairs of int16 into int32. No compensation is needed.
//   scalar       plain loops over the same packed values; the tests' reference.
// k is limited to int8_max_k: on the VNNI path Σ_p (q_x + 128)·q_w reaches k·255·127, which
// must fit int32.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "core/memory.hpp"
#include "kernels/cpu/quantize.hpp"

namespace aiopt::kernels::cpu {

inline constexpr std::size_t int8_panel_width = 64;  // output channels per packed panel
inline constexpr std::size_t int8_max_k = 65536;

// Weights packed for the kernels: panels of 64 output channels; inside a panel, for each group of
// 4 consecutive k, the 4 bytes of channel 0, then of channel 1, ... (one 256-byte row: four
// vpdpbusd operands of 16 channels). Channels past n and k past k are zero.
//   data: (n_padded / 64, k_padded / 4, 64, 4) int8 — 1 byte per weight (+ padding)
//   scale: (n_padded) f32, compensation: (n_padded) int32 — 8 bytes per output channel
struct PackedInt8Weights {
  std::size_t n = 0, k = 0;
  std::size_t n_padded = 0;  // n rounded up to a multiple of 64
  std::size_t k_padded = 0;  // k rounded up to a multiple of 4
  memory::Buffer<std::int8_t> data;
  memory::Buffer<float> scale;                // s_w; 0 past n
  memory::Buffer<std::int32_t> compensation;  // 128·Σ_p q_w[j, p]; 0 past n

  std::int8_t value(std::size_t j, std::size_t p) const {  // q_w[j, p]
    return data[((j / int8_panel_width) * (k_padded / 4) + p / 4) * (int8_panel_width * 4) +
                (j % int8_panel_width) * 4 + p % 4];
  }
  std::size_t bytes() const { return data.bytes() + scale.bytes() + compensation.bytes(); }
};

// q: (n, k) int8 in [−127, 127], scale: (n). std::invalid_argument when k > int8_max_k.
PackedInt8Weights pack_int8_weights(const std::int8_t* q, const float* scale, std::size_t n, std::size_t k);
// w: (n, k) f32, quantized per output channel (quantize_rows_int8) and packed.
PackedInt8Weights quantize_pack_int8_weights(const float* w, std::size_t n, std::size_t k);

enum class Int8Path { scalar, avx2, avx512_vnni };

std::string_view int8_path_name(Int8Path path);  // "scalar", "avx2", "avx512_vnni"
bool int8_path_supported(Int8Path path);         // this CPU (and OS) runs it
std::vector<Int8Path> int8_paths_supported();    // scalar first, fastest last
// The fastest supported path, or the one the environment variable AIOPT_INT8_PATH names (read
// once; an unknown or unsupported name is an InputError).
Int8Path int8_path_default();

// y (x.m, w.n) = dequant(x·wᵀ) (+ bias (w.n) when not null), on int8_path_default() or the path
// given (std::invalid_argument when unsupported, or when x.k != w.k). OpenMP threads
// (core/threads.hpp) split the output into blocks of 64 channels × up to 192 rows.
void gemm_int8(const QuantizedActivations& x, const PackedInt8Weights& w, const float* bias, float* y);
void gemm_int8(const QuantizedActivations& x, const PackedInt8Weights& w, const float* bias, float* y,
               Int8Path path);

}  // namespace aiopt::kernels::cpu
