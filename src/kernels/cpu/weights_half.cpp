#include "kernels/cpu/weights_half.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "core/half.hpp"
#include "kernels/cpu/over_rows.hpp"
#include "kernels/cpu/simd_targets.hpp"
#include "kernels/cpu/widened_tiles.hpp"

namespace aiopt::kernels::cpu {

namespace {

// ---- scalar kernel: the portable reference

template <bool F16>
float widen(std::uint16_t h) {
  return F16 ? f16_to_float(h) : bf16_to_float(h);
}

template <bool F16>
void gemv_row_scalar(const std::uint16_t* w, const float* x, const float* b, float* y, std::size_t row,
                     std::size_t k) {
  const std::uint16_t* wr = w + row * k;
  float acc = 0.0f;
  for (std::size_t i = 0; i < k; ++i) acc += widen<F16>(wr[i]) * x[i];
  y[row] = acc + (b ? b[row] : 0.0f);
}

// ---- AVX-512: 16 weights a step, R rows sharing each load of x; the tail of k % 16 by masks

template <bool F16>
AIOPT_TARGET_AVX512 __m512 widen_avx512(__m256i h) {
  if constexpr (F16) {
    return _mm512_cvtph_ps(h);
  } else {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <int R, bool F16>
AIOPT_TARGET_AVX512 void gemv_rows_avx512(const std::uint16_t* w, const float* x, const float* b, float* y,
                                          std::size_t row0, std::size_t k) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  // Plain loads for the body: masked loads of streamed memory run at a fraction of the speed
  // (they defeat the hardware prefetch); a masked load only for the tail.
  const std::size_t body = k / 16 * 16;
  for (std::size_t i = 0; i < body; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const std::uint16_t* wr = w + (row0 + static_cast<std::size_t>(r)) * k + i;
      acc[r] = _mm512_fmadd_ps(widen_avx512<F16>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr))), xv,
                               acc[r]);
    }
  }
  if (body < k) {
    const __mmask16 m = static_cast<__mmask16>((1u << (k - body)) - 1u);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + body);
    for (int r = 0; r < R; ++r) {
      const __m256i h = _mm256_maskz_loadu_epi16(m, w + (row0 + static_cast<std::size_t>(r)) * k + body);
      acc[r] = _mm512_fmadd_ps(widen_avx512<F16>(h), xv, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const std::size_t row = row0 + static_cast<std::size_t>(r);
    y[row] = _mm512_reduce_add_ps(acc[r]) + (b ? b[row] : 0.0f);
  }
}

template <bool F16>
AIOPT_TARGET_AVX512 void widen_rows_avx512(const std::uint16_t* w, float* out, std::size_t count) {
  const std::size_t body = count / 16 * 16;
  for (std::size_t i = 0; i < body; i += 16)
    _mm512_storeu_ps(out + i, widen_avx512<F16>(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + i))));
  if (body < count) {
    const __mmask16 m = static_cast<__mmask16>((1u << (count - body)) - 1u);
    _mm512_mask_storeu_ps(out + body, m, widen_avx512<F16>(_mm256_maskz_loadu_epi16(m, w + body)));
  }
}

// ---- AVX2: 8 weights a step, R rows sharing each load of x; the tail of k % 8 scalar

template <bool F16>
AIOPT_TARGET_AVX2 __m256 widen_avx2(__m128i h) {
  if constexpr (F16) {
    return _mm256_cvtph_ps(h);
  } else {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <int R, bool F16>
AIOPT_TARGET_AVX2 void gemv_rows_avx2(const std::uint16_t* w, const float* x, const float* b, float* y,
                                      std::size_t row0, std::size_t k) {
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  const std::size_t body = k / 8 * 8;
  for (std::size_t i = 0; i < body; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    for (int r = 0; r < R; ++r) {
      const std::uint16_t* wr = w + (row0 + static_cast<std::size_t>(r)) * k + i;
      acc[r] = _mm256_fmadd_ps(widen_avx2<F16>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wr))), xv, acc[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const std::size_t row = row0 + static_cast<std::size_t>(r);
    float sum = hsum_avx2(acc[r]);
    for (std::size_t i = body; i < k; ++i) sum += widen<F16>(w[row * k + i]) * x[i];
    y[row] = sum + (b ? b[row] : 0.0f);
  }
}

template <bool F16>
AIOPT_TARGET_AVX2 void widen_rows_avx2(const std::uint16_t* w, float* out, std::size_t count) {
  const std::size_t body = count / 8 * 8;
  for (std::size_t i = 0; i < body; i += 8)
    _mm256_storeu_ps(out + i, widen_avx2<F16>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i))));
  for (std::size_t i = body; i < count; ++i) out[i] = widen<F16>(w[i]);
}

// ---- drivers

bool is_f16(DType dtype) {
  if (dtype != DType::f16 && dtype != DType::bf16)
    throw std::invalid_argument(std::string("16-bit weights: dtype ") + to_string(dtype) +
                                " is not f16 or bf16");
  return dtype == DType::f16;
}

template <bool F16>
void gemv(const std::uint16_t* w, const float* x, const float* b, float* y, std::size_t n, std::size_t k,
          SimdPath kernel) {
  switch (kernel) {
    case SimdPath::avx512:
      over_rows<4>(
          n, [&](std::size_t r) { gemv_rows_avx512<4, F16>(w, x, b, y, r, k); },
          [&](std::size_t r) { gemv_rows_avx512<1, F16>(w, x, b, y, r, k); });
      break;
    case SimdPath::avx2:
      over_rows<4>(
          n, [&](std::size_t r) { gemv_rows_avx2<4, F16>(w, x, b, y, r, k); },
          [&](std::size_t r) { gemv_rows_avx2<1, F16>(w, x, b, y, r, k); });
      break;
    default:
#pragma omp parallel for schedule(static)
      for (std::size_t r = 0; r < n; ++r) gemv_row_scalar<F16>(w, x, b, y, r, k);
  }
}

template <bool F16>
void widen_rows(const std::uint16_t* w, float* out, std::size_t count, SimdPath kernel) {
  switch (kernel) {
    case SimdPath::avx512: widen_rows_avx512<F16>(w, out, count); break;
    case SimdPath::avx2: widen_rows_avx2<F16>(w, out, count); break;
    default:
      for (std::size_t i = 0; i < count; ++i) out[i] = widen<F16>(w[i]);
  }
}

}  // namespace

void gemv_half(const std::uint16_t* w, DType dtype, const float* x, const float* b, float* y,
               std::size_t n, std::size_t k, SimdPath kernel) {
  const bool f16 = is_f16(dtype);
  kernel = resolve_simd_path(kernel, "16-bit weights");
  if (f16) {
    gemv<true>(w, x, b, y, n, k, kernel);
  } else {
    gemv<false>(w, x, b, y, n, k, kernel);
  }
}

void gemm_half(const std::uint16_t* w, DType dtype, const float* x, const float* b, float* y,
               std::size_t m, std::size_t n, std::size_t k, SimdPath kernel) {
  const bool f16 = is_f16(dtype);
  kernel = resolve_simd_path(kernel, "16-bit weights");
  if (m == 1) {
    gemv_half(w, dtype, x, b, y, n, k, kernel);
    return;
  }
  gemm_widened_tiles(x, b, y, m, n, k, [&](std::size_t row0, std::size_t rows, float* tile) {
    if (f16) {
      widen_rows<true>(w + row0 * k, tile, rows * k, kernel);
    } else {
      widen_rows<false>(w + row0 * k, tile, rows * k, kernel);
    }
  });
}

}  // namespace aiopt::kernels::cpu
