#include "core/half.hpp"

#include <stdexcept>
#include <string>

#if defined(__F16C__) || defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace aiopt {

namespace {

void require_half(DType dtype) {
  if (dtype != DType::f16 && dtype != DType::bf16)
    throw std::logic_error("half::convert: dtype " + to_string(dtype) + " is not f16 or bf16");
}

void to_f16(const float* src, std::uint16_t* dst, std::size_t n) {
  std::size_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
#endif
  for (; i < n; ++i) dst[i] = float_to_f16(src[i]);
}

void from_f16(const std::uint16_t* src, float* dst, std::size_t n) {
  std::size_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = f16_to_float(src[i]);
}

void to_bf16(const float* src, std::uint16_t* dst, std::size_t n) {
  std::size_t i = 0;
#if defined(__AVX512BF16__)
  for (; i + 16 <= n; i += 16) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), std::bit_cast<__m256i>(h));
  }
#endif
#pragma omp simd
  for (std::size_t j = i; j < n; ++j) dst[j] = float_to_bf16(src[j]);
}

void from_bf16(const std::uint16_t* src, float* dst, std::size_t n) {
#pragma omp simd
  for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
}

}  // namespace

void convert(const float* src, std::uint16_t* dst, std::size_t n, DType dtype) {
  require_half(dtype);
  if (dtype == DType::f16) {
    to_f16(src, dst, n);
  } else {
    to_bf16(src, dst, n);
  }
}

void convert(const std::uint16_t* src, float* dst, std::size_t n, DType dtype) {
  require_half(dtype);
  if (dtype == DType::f16) {
    from_f16(src, dst, n);
  } else {
    from_bf16(src, dst, n);
  }
}

}  // namespace aiopt
