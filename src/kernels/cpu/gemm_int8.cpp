#include "kernels/cpu/gemm_int8.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__)
#include <immintrin.h>
#define AIOPT_INT8_X86 1
#endif

#include "core/error.hpp"
#include "core/hardware.hpp"
#include "core/threads.hpp"

namespace aiopt::kernels::cpu {

namespace {

constexpr std::size_t panel_bytes_per_group = int8_panel_width * 4;  // one k-group of a panel
// Rows of x per block of work: with a 64-channel panel (k·64 bytes) kept in L2, 192 rows of x
// stream past it; blocks are panel-major, so a thread's consecutive blocks share a panel.
constexpr std::size_t row_block = 192;
// Below this many multiply-adds a product runs on one thread (as kernels/cpu/gemm.cpp).
constexpr std::size_t parallel_min_macs = std::size_t{1} << 18;

// Everything one tile of output needs: rows [i, i + rows) of x against one panel.
struct Tile {
  const std::uint8_t* x;             // (rows, ldx) biased activations, first row of the tile
  std::size_t ldx;                   // x.k_padded
  const float* x_scale;              // (rows)
  const std::int8_t* panel;          // (groups, 64, 4)
  std::size_t groups;                // k_padded / 4
  const float* w_scale;              // (64)
  const std::int32_t* compensation;  // (64)
  const float* bias;                 // (64) or null; only the first `cols` may be read
  float* y;                          // (rows, ldy), first output of the tile
  std::size_t ldy;                   // n
  std::size_t cols;                  // valid channels of the panel, <= 64
};

// ---- scalar

void tile_scalar(const Tile& t, std::size_t rows) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < t.cols; ++c) {
      // Summed in int64: GCC 12 at -O3 for an AVX-512 VNNI target vectorizes an int32 sum of
      // (u8 − 128)·s8 into wrong code (a 1000-term sum off by about 30,000); this path must stay
      // the plain reference. The sum fits int32 (k <= int8_max_k), so the cast below is exact.
      std::int64_t dot = 0;
      for (std::size_t g = 0; g < t.groups; ++g)
        for (std::size_t b = 0; b < 4; ++b)
          dot += (int{t.x[r * t.ldx + g * 4 + b]} - int8_activation_bias) *
                 int{t.panel[g * panel_bytes_per_group + c * 4 + b]};
      const float dot_f = static_cast<float>(static_cast<std::int32_t>(dot));
      const float bias_c = t.bias != nullptr ? t.bias[c] : 0.0f;
      t.y[r * t.ldy + c] = std::fma(dot_f, t.x_scale[r] * t.w_scale[c], bias_c);
    }
}

#ifdef AIOPT_INT8_X86

std::int32_t load4(const std::uint8_t* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- AVX-512 VNNI: a tile of MR rows × 64 channels in MR·4 zmm accumulators (MR <= 6 keeps
// 24 accumulators, 4 weight vectors and a broadcast within the 32 registers).

#define AIOPT_TARGET_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

// One output row of a tile: acc0..acc3 hold channels 0-15, ..., 48-63 of row r; channels past
// t.cols are masked off (mask 0 for a vector wholly past them).
AIOPT_TARGET_VNNI inline void finish_row_vnni(const Tile& t, int r, __m512i acc0, __m512i acc1, __m512i acc2,
                                              __m512i acc3) {
  const __m512i acc[4] = {acc0, acc1, acc2, acc3};
  const __m512 sx = _mm512_set1_ps(t.x_scale[r]);
  for (std::size_t v = 0; v < 4; ++v) {
    const std::size_t c0 = v * 16;
    const std::size_t valid = t.cols > c0 ? std::min<std::size_t>(16, t.cols - c0) : 0;
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1u);
    const __m512i comp = _mm512_loadu_si512(t.compensation + c0);
    const __m512 s = _mm512_mul_ps(sx, _mm512_loadu_ps(t.w_scale + c0));
    const __m512 b = t.bias != nullptr ? _mm512_maskz_loadu_ps(mask, t.bias + c0) : _mm512_setzero_ps();
    const __m512 dot = _mm512_maskz_cvtepi32_ps(mask, _mm512_sub_epi32(acc[v], comp));
    _mm512_mask_storeu_ps(t.y + r * t.ldy + c0, mask, _mm512_fmadd_ps(dot, s, b));
  }
}

// The MR·4 accumulators are named variables, not an array: GCC 12 keeps an array of 24 zmm on
// the stack (a load and a store around every vpdpbusd), named ones in registers. Rows past MR
// are never used and compile away.
template <int MR>
AIOPT_TARGET_VNNI void tile_vnni(const Tile& t) {
  static_assert(MR >= 1 && MR <= 6);
  const __m512i zero = _mm512_setzero_si512();
  __m512i c00 = zero, c01 = zero, c02 = zero, c03 = zero, c10 = zero, c11 = zero, c12 = zero, c13 = zero,
          c20 = zero, c21 = zero, c22 = zero, c23 = zero, c30 = zero, c31 = zero, c32 = zero, c33 = zero,
          c40 = zero, c41 = zero, c42 = zero, c43 = zero, c50 = zero, c51 = zero, c52 = zero, c53 = zero;
  const std::int8_t* w = t.panel;
  const std::uint8_t* x = t.x;
  for (std::size_t g = 0; g < t.groups; ++g, w += panel_bytes_per_group, x += 4) {
    const __m512i w0 = _mm512_load_si512(w);
    const __m512i w1 = _mm512_load_si512(w + 64);
    const __m512i w2 = _mm512_load_si512(w + 128);
    const __m512i w3 = _mm512_load_si512(w + 192);
    // Row r: its 4 k broadcast to 16 lanes, against the 4 weight vectors.
#define AIOPT_VNNI_ROW(r)                                      \
  if constexpr (MR > r) {                                      \
    const __m512i a = _mm512_set1_epi32(load4(x + r * t.ldx)); \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, a, w0);             \
    c##r##1 = _mm512_dpbusd_epi32(c##r##1, a, w1);             \
    c##r##2 = _mm512_dpbusd_epi32(c##r##2, a, w2);             \
    c##r##3 = _mm512_dpbusd_epi32(c##r##3, a, w3);             \
  }
    AIOPT_VNNI_ROW(0)
    AIOPT_VNNI_ROW(1)
    AIOPT_VNNI_ROW(2)
    AIOPT_VNNI_ROW(3)
    AIOPT_VNNI_ROW(4)
    AIOPT_VNNI_ROW(5)
#undef AIOPT_VNNI_ROW
  }
  finish_row_vnni(t, 0, c00, c01, c02, c03);
  if constexpr (MR > 1) finish_row_vnni(t, 1, c10, c11, c12, c13);
  if constexpr (MR > 2) finish_row_vnni(t, 2, c20, c21, c22, c23);
  if constexpr (MR > 3) finish_row_vnni(t, 3, c30, c31, c32, c33);
  if constexpr (MR > 4) finish_row_vnni(t, 4, c40, c41, c42, c43);
  if constexpr (MR > 5) finish_row_vnni(t, 5, c50, c51, c52, c53);
}

constexpr int vnni_rows = 6;

void tile_vnni_rows(const Tile& t, std::size_t rows) {
  switch (rows) {
    case 1: tile_vnni<1>(t); break;
    case 2: tile_vnni<2>(t); break;
    case 3: tile_vnni<3>(t); break;
    case 4: tile_vnni<4>(t); break;
    case 5: tile_vnni<5>(t); break;
    default: tile_vnni<6>(t); break;
  }
}

// ---- AVX2: a tile of MR rows × 64 channels, in two halves of 32 channels, each in MR·4 ymm
// accumulators (16 registers: MR = 2 leaves room for the weights, their |.|, the broadcasts).

#define AIOPT_TARGET_AVX2 __attribute__((target("avx2,fma")))

// Up to 8 floats from p (the rest 0) / to p: the ragged edge of the last panel.
AIOPT_TARGET_AVX2 __m256 load_partial(const float* p, std::size_t count) {
  alignas(32) float tmp[8] = {};
  std::memcpy(tmp, p, count * sizeof(float));
  return _mm256_load_ps(tmp);
}
AIOPT_TARGET_AVX2 void store_partial(float* p, __m256 v, std::size_t count) {
  alignas(32) float tmp[8];
  _mm256_store_ps(tmp, v);
  std::memcpy(p, tmp, count * sizeof(float));
}

template <int MR>
AIOPT_TARGET_AVX2 void tile_avx2(const Tile& t) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i unbias = _mm256_set1_epi8(static_cast<char>(0x80));  // u8 ^ 0x80 = u8 − 128 as s8
  // The two halves of the panel, channels [h0, h0 + 32).
  for (std::size_t h0 = 0; h0 < t.cols; h0 += 32) {
    __m256i acc[MR][4];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) acc[r][v] = _mm256_setzero_si256();
    const std::int8_t* w = t.panel + h0 * 4;
    const std::uint8_t* x = t.x;
    for (std::size_t g = 0; g < t.groups; ++g, w += panel_bytes_per_group, x += 4) {
      __m256i a[MR];
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
        a[r] = _mm256_xor_si256(_mm256_set1_epi32(load4(x + r * t.ldx)), unbias);  // 4 q_x, 8 times
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) {
        const __m256i wv = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + v * 32));
        const __m256i w_abs = _mm256_abs_epi8(wv);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) {
          const __m256i pairs = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(a[r], wv));
          acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(pairs, ones));
        }
      }
    }
#pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      const std::size_t c0 = h0 + static_cast<std::size_t>(v) * 8;
      if (c0 >= t.cols) continue;
      const std::size_t valid = std::min<std::size_t>(8, t.cols - c0);
      const __m256 sw = _mm256_loadu_ps(t.w_scale + c0);
      const __m256 b = t.bias == nullptr ? _mm256_setzero_ps()
                       : valid == 8      ? _mm256_loadu_ps(t.bias + c0)
                                         : load_partial(t.bias + c0, valid);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m256 s = _mm256_mul_ps(_mm256_set1_ps(t.x_scale[r]), sw);
        const __m256 out = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][v]), s, b);
        if (valid == 8)
          _mm256_storeu_ps(t.y + r * t.ldy + c0, out);
        else
          store_partial(t.y + r * t.ldy + c0, out, valid);
      }
    }
  }
}

constexpr int avx2_rows = 2;

void tile_avx2_rows(const Tile& t, std::size_t rows) {
  if (rows == 1)
    tile_avx2<1>(t);
  else
    tile_avx2<2>(t);
}

#endif  // AIOPT_INT8_X86

// Every tile of the product through one path's tile function, taking up to `tile_rows` rows.
template <class TileFn>
void run_tiles(const QuantizedActivations& x, const PackedInt8Weights& w, const float* bias, float* y,
               std::size_t tile_rows, TileFn tile) {
  const std::size_t panels = w.n_padded / int8_panel_width;
  const std::size_t blocks_per_panel = (x.m + row_block - 1) / row_block;
  const std::size_t blocks = panels * blocks_per_panel;
  const bool parallel = threads() > 1 && !omp_in_parallel() && x.m * w.n * w.k >= parallel_min_macs;
#pragma omp parallel for schedule(static) num_threads(threads()) if (parallel)
  for (std::size_t block = 0; block < blocks; ++block) {
    const std::size_t panel = block / blocks_per_panel;
    const std::size_t row_begin = (block % blocks_per_panel) * row_block;
    const std::size_t row_end = std::min(x.m, row_begin + row_block);
    const std::size_t j0 = panel * int8_panel_width;
    for (std::size_t i = row_begin; i < row_end; i += tile_rows) {
      const Tile t{x.biased.data() + i * x.k_padded,
                   x.k_padded,
                   x.scale.data() + i,
                   w.data.data() + panel * (w.k_padded / 4) * panel_bytes_per_group,
                   w.k_padded / 4,
                   w.scale.data() + j0,
                   w.compensation.data() + j0,
                   bias != nullptr ? bias + j0 : nullptr,
                   y + i * w.n + j0,
                   w.n,
                   std::min(int8_panel_width, w.n - j0)};
      tile(t, std::min(tile_rows, row_end - i));
    }
  }
}

Int8Path parse_path(std::string_view name) {
  for (Int8Path p : {Int8Path::scalar, Int8Path::avx2, Int8Path::avx512_vnni})
    if (int8_path_name(p) == name) {
      if (!int8_path_supported(p))
        throw InputError("AIOPT_INT8_PATH: '" + std::string(name) + "' is not supported by this CPU");
      return p;
    }
  throw InputError("AIOPT_INT8_PATH: '" + std::string(name) +
                   "' is not allowed; use scalar, avx2 or avx512_vnni");
}

}  // namespace

PackedInt8Weights pack_int8_weights(const std::int8_t* q, const float* scale, std::size_t n, std::size_t k) {
  if (k > int8_max_k)
    throw std::invalid_argument("pack_int8_weights: k = " + std::to_string(k) + " exceeds " +
                                std::to_string(int8_max_k) + " (the int32 accumulator's range)");
  PackedInt8Weights p;
  p.n = n;
  p.k = k;
  p.n_padded = (n + int8_panel_width - 1) / int8_panel_width * int8_panel_width;
  p.k_padded = (k + 3) / 4 * 4;
  const Device host = Device::cpu();
  p.data = memory::Buffer<std::int8_t>(host, p.n_padded * p.k_padded);
  p.scale = memory::Buffer<float>(host, p.n_padded);
  p.compensation = memory::Buffer<std::int32_t>(host, p.n_padded);
  const std::size_t groups = p.k_padded / 4;
#pragma omp parallel for schedule(static)
  for (std::size_t j = 0; j < p.n_padded; ++j) {
    std::int8_t* out =
        p.data.data() + (j / int8_panel_width) * groups * panel_bytes_per_group + (j % int8_panel_width) * 4;
    std::int32_t sum = 0;
    for (std::size_t pk = 0; pk < p.k_padded; ++pk) {
      const std::int8_t v = j < n && pk < k ? q[j * k + pk] : std::int8_t{0};
      out[(pk / 4) * panel_bytes_per_group + pk % 4] = v;
      sum += v;
    }
    p.scale[j] = j < n ? scale[j] : 0.0f;
    p.compensation[j] = int8_activation_bias * sum;
  }
  return p;
}

PackedInt8Weights quantize_pack_int8_weights(const float* w, std::size_t n, std::size_t k) {
  memory::Buffer<std::int8_t> q(Device::cpu(), n * k);
  memory::Buffer<float> scale(Device::cpu(), n);
  quantize_rows_int8(w, q.data(), scale.data(), n, k);
  return pack_int8_weights(q.data(), scale.data(), n, k);
}

std::string_view int8_path_name(Int8Path path) {
  switch (path) {
    case Int8Path::scalar: return "scalar";
    case Int8Path::avx2: return "avx2";
    case Int8Path::avx512_vnni: return "avx512_vnni";
  }
  return "unknown";
}

bool int8_path_supported(Int8Path path) {
  switch (path) {
    case Int8Path::scalar: return true;
#ifdef AIOPT_INT8_X86
    case Int8Path::avx2: return hardware::has("avx2") && hardware::has("fma");
    case Int8Path::avx512_vnni:
      return hardware::has("avx512f") && hardware::has("avx512bw") && hardware::has("avx512_vnni");
#else
    default: return false;
#endif
  }
  return false;
}

std::vector<Int8Path> int8_paths_supported() {
  std::vector<Int8Path> out;
  for (Int8Path p : {Int8Path::scalar, Int8Path::avx2, Int8Path::avx512_vnni})
    if (int8_path_supported(p)) out.push_back(p);
  return out;
}

Int8Path int8_path_default() {
  static const Int8Path chosen = [] {
    if (const char* env = std::getenv("AIOPT_INT8_PATH"); env != nullptr && *env != '\0')
      return parse_path(env);
    return int8_paths_supported().back();
  }();
  return chosen;
}

void gemm_int8(const QuantizedActivations& x, const PackedInt8Weights& w, const float* bias, float* y) {
  gemm_int8(x, w, bias, y, int8_path_default());
}

void gemm_int8(const QuantizedActivations& x, const PackedInt8Weights& w, const float* bias, float* y,
               Int8Path path) {
  if (x.k != w.k || x.k_padded != w.k_padded)
    throw std::invalid_argument("gemm_int8: activations have k = " + std::to_string(x.k) +
                                " but the weights k = " + std::to_string(w.k));
  if (!int8_path_supported(path))
    throw std::invalid_argument("gemm_int8: path " + std::string(int8_path_name(path)) +
                                " is not supported by this CPU");
  if (x.m == 0 || w.n == 0) return;
  switch (path) {
    case Int8Path::scalar: run_tiles(x, w, bias, y, row_block, tile_scalar); return;
#ifdef AIOPT_INT8_X86
    case Int8Path::avx2: run_tiles(x, w, bias, y, avx2_rows, tile_avx2_rows); return;
    case Int8Path::avx512_vnni: run_tiles(x, w, bias, y, vnni_rows, tile_vnni_rows); return;
#else
    default: return;
#endif
  }
}

}  // namespace aiopt::kernels::cpu
