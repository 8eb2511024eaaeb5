#include "kernels/cpu/weights_int4.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/half.hpp"
#include "kernels/cpu/over_rows.hpp"
#include "kernels/cpu/simd_targets.hpp"
#include "kernels/cpu/widened_tiles.hpp"

// How the GEMV kernels work. A decode step's GEMV is bound by reading the packed weights, so the
// kernels spend as few instructions per weight as they can:
//  - No shuffles: a vector of packed bytes is read as 32-bit lanes of 8 nibbles each; nibble j
//    of lane d is element 8d + j of the block. Shifting the whole vector right by 4j and masking
//    gives element 8d + j in lane d for every d at once. The input x is permuted once per call
//    to the same order (xp), so the product needs no permutation of the weights.
//  - The zero point leaves the inner loop: Σ_i s·(q_i − z)·x_i = s·Σ_i q_i·x_i − s·z·X_g, with
//    X_g = Σ_{i in g} x_i computed once per call; the symmetric mode's two's-complement nibble
//    is turned into q + 8 by one xor with 0x8 per nibble, so it is the case z = 8.
//  - A scale multiplies a whole block's partial sums once (lanes of one group share it).
//  - R rows at a time share each load of x.
// fp32 error of Ŵx computed this way, per output (Higham §3.1, γ_m = m·u/(1 − m·u), u = 2^-24):
// the block sums, the scale products, the group sums X_g and the final correction together are
// within (k + 8)·u·Σ_i s_g·(q'_i + z_g)·|x_i|, where q' = q + z in [0, 15] is the stored nibble
// (q'+8 for symmetric): folding z out costs a looser bound than Σ|ŵ_i·x_i| by at most
// (q' + z)/|q' − z|, and the tests use this bound.

namespace aiopt::kernels::cpu {

namespace {

void validate_shape(std::size_t n, std::size_t k, std::size_t group) {
  if (group != 32 && group != 64 && group != 128)
    throw std::invalid_argument("int4 weights: group size " + std::to_string(group) +
                                " is not one of 32, 64, 128");
  if (n == 0 || k == 0 || k % group != 0)
    throw std::invalid_argument("int4 weights: shape (" + std::to_string(n) + ", " + std::to_string(k) +
                                ") needs n > 0 and k a positive multiple of the group size " +
                                std::to_string(group));
}

// The smallest f16 at least s (s >= 0, finite): rounding the scale up keeps every weight of the
// group within the grid, so no value saturates beyond half a step.
std::uint16_t f16_at_least(float s) {
  std::uint16_t h = float_to_f16(s);
  if (f16_to_float(h) < s) ++h;  // positive f16 bit patterns are ordered like their values
  if (h >= 0x7c00u)
    throw std::invalid_argument("int4 weights: group scale " + std::to_string(s) +
                                " exceeds the f16 range (max 65504)");
  return h;
}

// Quantize one group of g values; writes g/2 bytes, the scale and (asymmetric) the zero point.
void quantize_group(const float* w, std::size_t g, Int4Mode mode, std::uint8_t* packed,
                    std::uint16_t* scale, std::uint8_t* zero) {
  float lo = 0.0f, hi = 0.0f;  // [min, max] widened to hold 0
  for (std::size_t i = 0; i < g; ++i) {
    if (!std::isfinite(w[i]))
      throw std::invalid_argument("int4 weights: weight " + std::to_string(w[i]) + " is not finite");
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
  }
  const bool symmetric = mode == Int4Mode::symmetric;
  const float span = symmetric ? std::max(-lo, hi) / 7.0f : (hi - lo) / 15.0f;
  const std::uint16_t h = f16_at_least(span);
  const float s = f16_to_float(h);
  *scale = h;
  int z = 0;
  if (!symmetric) {
    z = s == 0.0f ? 0 : round_saturate(-lo / s, 0, 15);
    *zero = static_cast<std::uint8_t>(z);
  }
  const int qmin = symmetric ? -8 : -z, qmax = symmetric ? 7 : 15 - z;  // q − z's range
  for (std::size_t i = 0; i < g; i += 2) {
    int q[2];
    for (int j = 0; j < 2; ++j) q[j] = (s == 0.0f ? 0 : round_saturate(w[i + j] / s, qmin, qmax)) + z;
    packed[i / 2] = static_cast<std::uint8_t>((q[0] & 0xf) | ((q[1] & 0xf) << 4));
  }
}

// ---- scalar kernel: the portable reference, in the natural element order

void gemv_rows_scalar(const Int4Matrix& w, std::size_t row0, std::size_t rows, const float* x,
                      const float* b, float* y) {
  const std::size_t groups = w.groups_per_row();
  const bool symmetric = w.mode == Int4Mode::symmetric;
  for (std::size_t r = row0; r < row0 + rows; ++r) {
    const std::uint8_t* packed = w.packed.data() + r * (w.k / 2);
    float acc = 0.0f;
    for (std::size_t gi = 0; gi < groups; ++gi) {
      const int z = symmetric ? 0 : w.zeros[r * groups + gi];
      float part = 0.0f;
      for (std::size_t i = gi * w.group; i < (gi + 1) * w.group; ++i) {
        const int nibble = (packed[i / 2] >> (4 * (i % 2))) & 0xf;
        const int q = symmetric ? (nibble ^ 8) - 8 : nibble - z;
        part += static_cast<float>(q) * x[i];
      }
      acc += f16_to_float(w.scales[r * groups + gi]) * part;
    }
    y[r] = acc + (b ? b[r] : 0.0f);
  }
}

// ---- shared preparation of x for the SIMD kernels

// xp (blocks·block): block bb, lane position j·(block/8) + d holds x[bb·block + 8d + j], 0 past
// k. xz (k/g): X_g, times 8 for the symmetric mode (its z), so the correction is Σ s_g·z_g·xz_g
// with z_g = 1 there.
void prepare_input(const Int4Matrix& w, const float* x, std::size_t block, float* xp, float* xz) {
  const std::size_t blocks = (w.k + block - 1) / block;
  const std::size_t lanes = block / 8;
  for (std::size_t bb = 0; bb < blocks; ++bb)
    for (std::size_t j = 0; j < 8; ++j)
      for (std::size_t d = 0; d < lanes; ++d) {
        const std::size_t e = bb * block + 8 * d + j;
        xp[bb * block + j * lanes + d] = e < w.k ? x[e] : 0.0f;
      }
  const float z = w.mode == Int4Mode::symmetric ? 8.0f : 1.0f;
  for (std::size_t gi = 0; gi < w.groups_per_row(); ++gi) {
    float sum = 0.0f;
    for (std::size_t i = gi * w.group; i < (gi + 1) * w.group; ++i) sum += x[i];
    xz[gi] = z * sum;
  }
}

// ---- AVX-512 kernel: blocks of 128 elements (64 bytes, 16 lanes of 8 nibbles)

// Σ_g s_g·z_g·xz_g of one row; zeros is null for the symmetric mode (z_g = 1 there, see xz).
AIOPT_TARGET_AVX512 float zero_correction_avx512(const std::uint16_t* scales, const std::uint8_t* zeros,
                                                 const float* xz, std::size_t groups) {
  __m512 acc = _mm512_setzero_ps();
  for (std::size_t i = 0; i < groups; i += 16) {
    const std::size_t left = std::min<std::size_t>(16, groups - i);
    const __mmask16 m = static_cast<__mmask16>((1u << left) - 1u);
    __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, scales + i));
    if (zeros) s = _mm512_mul_ps(s, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, zeros + i))));
    acc = _mm512_fmadd_ps(s, _mm512_maskz_loadu_ps(m, xz + i), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

template <int R, bool Symmetric>
AIOPT_TARGET_AVX512 void gemv_rows_avx512(const Int4Matrix& w, std::size_t row0, const float* xp,
                                          const float* xz, const float* b, float* y) {
  const std::size_t k = w.k, g = w.group, groups = w.groups_per_row();
  const __m512i low4 = _mm512_set1_epi32(0x0f);
  const __m512i flip = _mm512_set1_epi32(static_cast<int>(0x88888888u));
  // Lane d holds elements 8d..8d+7 of the block, all in the block's group 8d / g.
  const auto group_shift = static_cast<unsigned>(std::countr_zero(g));  // g is a power of 2
  const __m512i group_of_lane = _mm512_srli_epi32(
      _mm512_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120), group_shift);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (std::size_t e0 = 0; e0 < k; e0 += 128) {
    const std::size_t elems = std::min<std::size_t>(128, k - e0);  // a multiple of 32
    const __mmask64 wmask = elems == 128 ? ~__mmask64{0} : (__mmask64{1} << (elems / 2)) - 1;
    // The block's elems / g scales (g divides elems: k and the block starts are multiples of g).
    const __mmask8 smask = static_cast<__mmask8>((1u << (elems >> group_shift)) - 1u);
    const float* xb = xp + e0;
    const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
    const __m512 x2 = _mm512_loadu_ps(xb + 32), x3 = _mm512_loadu_ps(xb + 48);
    const __m512 x4 = _mm512_loadu_ps(xb + 64), x5 = _mm512_loadu_ps(xb + 80);
    const __m512 x6 = _mm512_loadu_ps(xb + 96), x7 = _mm512_loadu_ps(xb + 112);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const std::size_t row = row0 + static_cast<std::size_t>(r);
      const std::uint8_t* packed = w.packed.data() + row * (k / 2) + e0 / 2;
      // Plain loads for full blocks: masked loads of streamed memory run at a fraction of the
      // speed (they defeat the hardware prefetch); a masked load only for the tail.
      __m512i v = elems == 128 ? _mm512_loadu_si512(packed) : _mm512_maskz_loadu_epi8(wmask, packed);
      if constexpr (Symmetric) v = _mm512_xor_si512(v, flip);
      // Two chains of four products each, so the FMA latency overlaps.
      __m512 t0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v, low4)), x0);
      __m512 t1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 4), low4)), x1);
      t0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 8), low4)), x2, t0);
      t1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 12), low4)), x3, t1);
      t0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 16), low4)), x4, t0);
      t1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 20), low4)), x5, t1);
      t0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(v, 24), low4)), x6, t0);
      t1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v, 28)), x7, t1);
      const __m128i s16 = _mm_maskz_loadu_epi16(smask, w.scales.data() + row * groups + (e0 >> group_shift));
      const __m512 s = _mm512_permutexvar_ps(group_of_lane, _mm512_castps128_ps512(_mm_cvtph_ps(s16)));
      acc[r] = _mm512_fmadd_ps(_mm512_add_ps(t0, t1), s, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const std::size_t row = row0 + static_cast<std::size_t>(r);
    const float correction = zero_correction_avx512(
        w.scales.data() + row * groups, Symmetric ? nullptr : w.zeros.data() + row * groups, xz, groups);
    y[row] = _mm512_reduce_add_ps(acc[r]) - correction + (b ? b[row] : 0.0f);
  }
}

// ---- AVX2 kernel: blocks of 64 elements (32 bytes, 8 lanes of 8 nibbles)

AIOPT_TARGET_AVX2 float zero_correction_avx2(const std::uint16_t* scales, const std::uint8_t* zeros,
                                             const float* xz, std::size_t groups) {
  __m256 acc = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 8 <= groups; i += 8) {
    __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + i)));
    if (zeros) {
      std::uint64_t z8;
      std::memcpy(&z8, zeros + i, 8);
      s = _mm256_mul_ps(s, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(z8)))));
    }
    acc = _mm256_fmadd_ps(s, _mm256_loadu_ps(xz + i), acc);
  }
  float sum = hsum_avx2(acc);
  for (; i < groups; ++i) sum += f16_to_float(scales[i]) * (zeros ? static_cast<float>(zeros[i]) : 1.0f) * xz[i];
  return sum;
}

template <int R, bool Symmetric>
AIOPT_TARGET_AVX2 void gemv_rows_avx2(const Int4Matrix& w, std::size_t row0, const float* xp,
                                      const float* xz, const float* b, float* y) {
  const std::size_t k = w.k, g = w.group, groups = w.groups_per_row();
  const __m256i low4 = _mm256_set1_epi32(0x0f);
  const __m256i flip = _mm256_set1_epi32(static_cast<int>(0x88888888u));
  const int group_shift = std::countr_zero(g);  // g is a power of 2
  const __m256i group_of_lane = _mm256_srli_epi32(_mm256_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56), group_shift);
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (std::size_t e0 = 0; e0 < k; e0 += 64) {
    const bool full = k - e0 >= 64;  // else 32 elements: k is a multiple of 32
    // Scales of the block: two for g = 32 (one in a half block), else one.
    const std::size_t scale_count = g == 32 && full ? 2 : 1;
    const float* xb = xp + e0;
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const std::size_t row = row0 + static_cast<std::size_t>(r);
      const std::uint8_t* packed = w.packed.data() + row * (k / 2) + e0 / 2;
      __m256i v = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed))
                       : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(packed)));
      if constexpr (Symmetric) v = _mm256_xor_si256(v, flip);
      __m256 t0 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, low4)), _mm256_loadu_ps(xb));
      __m256 t1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 4), low4)),
                                _mm256_loadu_ps(xb + 8));
      t0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 8), low4)),
                           _mm256_loadu_ps(xb + 16), t0);
      t1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 12), low4)),
                           _mm256_loadu_ps(xb + 24), t1);
      t0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 16), low4)),
                           _mm256_loadu_ps(xb + 32), t0);
      t1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 20), low4)),
                           _mm256_loadu_ps(xb + 40), t1);
      t0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v, 24), low4)),
                           _mm256_loadu_ps(xb + 48), t0);
      t1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(v, 28)), _mm256_loadu_ps(xb + 56), t1);
      const std::uint16_t* sp = w.scales.data() + row * groups + (e0 >> group_shift);
      std::uint32_t s32 = sp[0];
      if (scale_count == 2) s32 |= static_cast<std::uint32_t>(sp[1]) << 16;
      const __m128 s4 = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(s32)));
      const __m256 s = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(s4), group_of_lane);
      acc[r] = _mm256_fmadd_ps(_mm256_add_ps(t0, t1), s, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const std::size_t row = row0 + static_cast<std::size_t>(r);
    const float correction = zero_correction_avx2(
        w.scales.data() + row * groups, Symmetric ? nullptr : w.zeros.data() + row * groups, xz, groups);
    y[row] = hsum_avx2(acc[r]) - correction + (b ? b[row] : 0.0f);
  }
}

// ---- drivers

template <bool Symmetric>
void gemv_simd(const Int4Matrix& w, const float* x, const float* b, float* y, SimdPath kernel) {
  const std::size_t block = kernel == SimdPath::avx512 ? 128 : 64;
  const std::size_t padded = (w.k + block - 1) / block * block;
  memory::Buffer<float> xp(Device::cpu(), padded);              // (padded k), permuted x
  memory::Buffer<float> xz(Device::cpu(), w.groups_per_row());  // (k/g)
  prepare_input(w, x, block, xp.data(), xz.data());
  const float* xpd = xp.data();
  const float* xzd = xz.data();
  if (kernel == SimdPath::avx512) {
    over_rows<4>(
        w.n, [&](std::size_t r) { gemv_rows_avx512<4, Symmetric>(w, r, xpd, xzd, b, y); },
        [&](std::size_t r) { gemv_rows_avx512<1, Symmetric>(w, r, xpd, xzd, b, y); });
  } else {
    over_rows<2>(
        w.n, [&](std::size_t r) { gemv_rows_avx2<2, Symmetric>(w, r, xpd, xzd, b, y); },
        [&](std::size_t r) { gemv_rows_avx2<1, Symmetric>(w, r, xpd, xzd, b, y); });
  }
}

}  // namespace

double int4_bytes_per_weight(std::size_t group, Int4Mode mode) {
  return 0.5 + (mode == Int4Mode::symmetric ? 2.0 : 3.0) / static_cast<double>(group);
}

int round_saturate(float v, int lo, int hi) {
  if (std::isnan(v)) throw std::invalid_argument("int4 weights: cannot round NaN");
  // Clamp first, so that the integer conversion is in range; the clamp bounds are integers, so
  // clamping commutes with rounding. nearbyint rounds ties to even in the default FP mode.
  const float c = std::clamp(v, static_cast<float>(lo), static_cast<float>(hi));
  return static_cast<int>(std::nearbyint(c));
}

Int4Matrix quantize_int4(const float* w, std::size_t n, std::size_t k, std::size_t group, Int4Mode mode) {
  validate_shape(n, k, group);
  Int4Matrix m;
  m.n = n;
  m.k = k;
  m.group = group;
  m.mode = mode;
  const std::size_t groups = k / group;
  m.packed = memory::Buffer<std::uint8_t>(Device::cpu(), n * k / 2);
  m.scales = memory::Buffer<std::uint16_t>(Device::cpu(), n * groups);
  if (mode == Int4Mode::asymmetric) m.zeros = memory::Buffer<std::uint8_t>(Device::cpu(), n * groups);
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t gi = 0; gi < groups; ++gi)
      quantize_group(w + r * k + gi * group, group, mode, m.packed.data() + (r * k + gi * group) / 2,
                     m.scales.data() + r * groups + gi,
                     mode == Int4Mode::asymmetric ? m.zeros.data() + r * groups + gi : nullptr);
  return m;
}

void dequantize_int4_rows(const Int4Matrix& w, std::size_t row0, std::size_t rows, float* out) {
  const std::size_t groups = w.groups_per_row();
  const bool symmetric = w.mode == Int4Mode::symmetric;
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t row = row0 + r;
    const std::uint8_t* packed = w.packed.data() + row * (w.k / 2);
    float* o = out + r * w.k;
    for (std::size_t gi = 0; gi < groups; ++gi) {
      const float s = f16_to_float(w.scales[row * groups + gi]);
      const int z = symmetric ? 8 : w.zeros[row * groups + gi];
      const std::size_t first = gi * w.group / 2;
      // (q' − z) is a small integer, exact in fp32: one rounding, s·(q − z), on every CPU.
#pragma omp simd
      for (std::size_t i = first; i < first + w.group / 2; ++i) {
        const int byte = symmetric ? packed[i] ^ 0x88 : packed[i];
        o[2 * i] = s * static_cast<float>((byte & 0xf) - z);
        o[2 * i + 1] = s * static_cast<float>((byte >> 4) - z);
      }
    }
  }
}

void dequantize_int4(const Int4Matrix& w, float* out) {
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < w.n; ++r) dequantize_int4_rows(w, r, 1, out + r * w.k);
}

void gemv_int4(const Int4Matrix& w, const float* x, const float* b, float* y, SimdPath kernel) {
  validate_shape(w.n, w.k, w.group);
  kernel = resolve_simd_path(kernel, "int4 GEMV");
  if (kernel == SimdPath::scalar) {
#pragma omp parallel for schedule(static)
    for (std::size_t r = 0; r < w.n; ++r) gemv_rows_scalar(w, r, 1, x, b, y);
  } else if (w.mode == Int4Mode::symmetric) {
    gemv_simd<true>(w, x, b, y, kernel);
  } else {
    gemv_simd<false>(w, x, b, y, kernel);
  }
}

void gemm_int4(const Int4Matrix& w, const float* x, const float* b, float* y, std::size_t m,
               SimdPath kernel) {
  validate_shape(w.n, w.k, w.group);
  kernel = resolve_simd_path(kernel, "int4 GEMV");
  if (m == 1) {
    gemv_int4(w, x, b, y, kernel);
    return;
  }
  gemm_widened_tiles(x, b, y, m, w.n, w.k, [&](std::size_t row0, std::size_t rows, float* tile) {
    dequantize_int4_rows(w, row0, rows, tile);
  });
}

}  // namespace aiopt::kernels::cpu
