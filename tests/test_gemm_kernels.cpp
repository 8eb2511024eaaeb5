// GEMM: the CPU layer over OpenBLAS (linear, sgemm, sgemm_strided_batched) against loops in
// double, and ([gpu]) the cuBLAS layer (linear, gemm, gemm_strided_batched in f32, f16, bf16)
// against the same references; the cuBLASLt int8 GEMM's one workspace shared by new streams.
//
// Tolerances, per element. A dot product of k terms in fp32, in any order, with rounding to
// nearest, is within γ_k·Σ_p|a_p·b_p| of the exact value, γ_k = k·u/(1 − k·u), u = 2^-24
// (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §3.1); scaling by alpha,
// adding beta·c or the bias, and the reference's own rounding to float add a few u more. So
//   |got − exact| <= (k + 5)·u·(|alpha|·Σ_p|a_ip·b_pj| + |beta·c_ij|)      ("the fp32 bound").
// The references accumulate in double, exact to far below that. Two fp32 results (OpenBLAS and
// cuBLAS, batched and per-matrix) each within the bound differ by at most twice it.
// f16 and bf16 storage: the reference takes the rounded inputs, so what remains is the fp32
// accumulation, bounded twice over (tensor cores may truncate their fp32 sums rather than round
// them: u becomes 2u), plus the rounding of the stored output, u_out·|exact| (f16 2^-11, bf16
// 2^-8), plus 2^-24 absolute for an f16 output in the subnormal range. A NaN always fails.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "core/dtype.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "core/threads.hpp"
#include "kernels/cpu/gemm.hpp"
#include "support/random.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "core/cuda_check.hpp"
#include "core/memory.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/gemm_lt.hpp"
#include "support/device_copy.hpp"
#endif

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;

namespace {

constexpr double u = 1.0 / 16777216.0;  // 2^-24: the unit roundoff of fp32

using aiopt::test::random_vector;

// One row-major product C = alpha·op(A)·op(B) + beta·C with padded leading dimensions, so that a
// confusion of m, n, k or of a leading dimension shows. A is stored (m, lda) or, transposed,
// (k, lda); B (k, ldb) or (n, ldb); C (m, ldc).
struct Problem {
  bool transpose_a = false, transpose_b = false;
  std::size_t m = 0, n = 0, k = 0;
  float alpha = 1.0f, beta = 0.0f;
  std::size_t pad = 3;  // each leading dimension exceeds its minimum by this

  std::size_t lda() const { return (transpose_a ? m : k) + pad; }
  std::size_t ldb() const { return (transpose_b ? k : n) + pad; }
  std::size_t ldc() const { return n + pad; }
  std::size_t a_size() const { return (transpose_a ? k : m) * lda(); }
  std::size_t b_size() const { return (transpose_b ? n : k) * ldb(); }
  std::size_t c_size() const { return m * ldc(); }
  double a(const std::vector<float>& s, std::size_t i, std::size_t p) const {
    return transpose_a ? s[p * lda() + i] : s[i * lda() + p];
  }
  double b(const std::vector<float>& s, std::size_t p, std::size_t j) const {
    return transpose_b ? s[j * ldb() + p] : s[p * ldb() + j];
  }
  std::string name() const {
    return std::string(transpose_a ? "T" : "N") + (transpose_b ? "T" : "N") + " m=" + std::to_string(m) +
           " n=" + std::to_string(n) + " k=" + std::to_string(k) + " alpha=" + std::to_string(alpha) +
           " beta=" + std::to_string(beta);
  }
};

// The exact C (double) and the fp32 bound per element, laid out (m, ldc); padding holds c0.
struct Expected {
  std::vector<double> value, bound;
};

Expected reference(const Problem& p, const std::vector<float>& a, const std::vector<float>& b,
                   const std::vector<float>& c0) {
  Expected e{std::vector<double>(c0.begin(), c0.end()), std::vector<double>(c0.size(), 0.0)};
  for (std::size_t i = 0; i < p.m; ++i)
    for (std::size_t j = 0; j < p.n; ++j) {
      double dot = 0.0, magnitude = 0.0;
      for (std::size_t q = 0; q < p.k; ++q) {
        const double t = p.a(a, i, q) * p.b(b, q, j);
        dot += t;
        magnitude += std::fabs(t);
      }
      const std::size_t ij = i * p.ldc() + j;
      // beta 0 ignores C, as BLAS specifies (a NaN there must not leak).
      const double c = p.beta == 0.0f ? 0.0 : p.beta * static_cast<double>(c0[ij]);
      e.value[ij] = p.alpha * dot + c;
      e.bound[ij] = (static_cast<double>(p.k) + 5) * u * (std::fabs(p.alpha) * magnitude + std::fabs(c));
    }
  return e;
}

// The worst |got − want| / (scale·bound + rel·|want| + abs) over C's elements, +inf on a NaN;
// and the padding elements that differ from c0 (bitwise), which must stay as they were.
struct Verdict {
  double worst = 0.0;
  std::size_t padding_changed = 0;
};

Verdict compare(const Problem& p, const std::vector<float>& got, const std::vector<double>& want,
                const std::vector<double>& bound, const std::vector<float>& c0, double scale, double rel = 0.0,
                double abs = 0.0) {
  REQUIRE(got.size() == p.c_size());
  Verdict v;
  for (std::size_t i = 0; i < p.m; ++i)
    for (std::size_t j = 0; j < p.ldc(); ++j) {
      const std::size_t ij = i * p.ldc() + j;
      if (j >= p.n) {
        v.padding_changed += !(got[ij] == c0[ij] || (std::isnan(got[ij]) && std::isnan(c0[ij])));
        continue;
      }
      const double e = std::fabs(got[ij] - want[ij]);
      const double limit = scale * bound[ij] + rel * std::fabs(want[ij]) + abs;
      const double ratio = std::isnan(e) ? std::numeric_limits<double>::infinity() : (limit > 0 ? e / limit : e * 1e300);
      v.worst = std::max(v.worst, ratio);
    }
  return v;
}

std::vector<double> widen(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// The products every transpose combination is tried on: odd sizes, and beta 0 over a C of NaNs.
std::vector<Problem> problems(std::size_t m, std::size_t n, std::size_t k) {
  std::vector<Problem> out;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      out.push_back({ta, tb, m, n, k, 0.75f, -0.5f});
      out.push_back({ta, tb, m, n, k, 1.0f, 0.0f});
    }
  return out;
}

std::vector<float> initial_c(const Problem& p, std::uint64_t seed) {
  auto c = random_vector(p.c_size(), seed);
  if (p.beta == 0.0f) std::fill(c.begin(), c.end(), std::numeric_limits<float>::quiet_NaN());
  // Padding always holds ordinary values, checked unchanged afterwards.
  for (std::size_t i = 0; i < p.m; ++i)
    for (std::size_t j = p.n; j < p.ldc(); ++j) c[i * p.ldc() + j] = static_cast<float>(i * 1000 + j);
  return c;
}

// Restores the thread count a test changed.
struct ThreadsRestored {
  int saved = threads();
  ~ThreadsRestored() { set_threads(saved); }
};

// |x|·|w| summed per output element of y = x·Wᵀ + b, and the fp32 bound from it.
std::vector<double> linear_bound(const std::vector<float>& x, const std::vector<float>& w, const float* b,
                                 std::size_t m, std::size_t k, std::size_t n) {
  std::vector<double> bound(m * n);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double magnitude = b != nullptr ? std::fabs(b[j]) : 0.0;
      for (std::size_t p = 0; p < k; ++p) magnitude += std::fabs(static_cast<double>(x[i * k + p]) * w[j * k + p]);
      bound[i * n + j] = (static_cast<double>(k) + 5) * u * magnitude;
    }
  return bound;
}

double worst_ratio(const std::vector<float>& got, const std::vector<float>& want, const std::vector<double>& bound,
                   double scale) {
  REQUIRE(got.size() == want.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (std::isnan(e)) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, e / (scale * bound[i]));
  }
  return worst;
}

struct LinearShape {
  std::size_t m, k, n;
};
// Odd sizes, a single row, and GPT-2 small's fused qkv projection (768 -> 2304) over 64 tokens.
const std::vector<LinearShape> linear_shapes = {{37, 53, 29}, {1, 17, 5}, {64, 768, 2304}};

// One shape's random x (m, k), w (n, k) and b (n), from seeds base + k, base + 1 + k, base + 2 + k.
struct LinearInputs {
  std::vector<float> x, w, b;
};
LinearInputs linear_inputs(const LinearShape& s, std::uint64_t base) {
  return {random_vector(s.m * s.k, base + s.k), random_vector(s.n * s.k, base + 1 + s.k),
          random_vector(s.n, base + 2 + s.k)};
}

}  // namespace

// ---- CPU

TEST_CASE("linear matches linear_reference with and without bias", "[gemm][cpu]") {
  for (const auto& s : linear_shapes) {
    const auto [x, w, b] = linear_inputs(s, 1);
    for (const float* bias : {static_cast<const float*>(nullptr), b.data()}) {
      INFO("m=" << s.m << " k=" << s.k << " n=" << s.n << (bias ? " with bias" : " without bias"));
      std::vector<float> want(s.m * s.n), got(s.m * s.n, std::numeric_limits<float>::quiet_NaN());
      cpu::linear_reference(x.data(), w.data(), bias, want.data(), s.m, s.k, s.n);
      cpu::linear(x.data(), w.data(), bias, got.data(), s.m, s.k, s.n);  // y starts as NaNs: written, not read
      CHECK(worst_ratio(got, want, linear_bound(x, w, bias, s.m, s.k, s.n), 1.0) <= 1.0);
    }
  }
}

TEST_CASE("sgemm matches the double loop for every transpose combination", "[gemm][cpu]") {
  for (const Problem& p : problems(37, 29, 53)) {
    INFO(p.name());
    const auto a = random_vector(p.a_size(), 10);
    const auto b = random_vector(p.b_size(), 11);
    const auto c0 = initial_c(p, 12);
    auto c = c0;
    cpu::sgemm(p.transpose_a, p.transpose_b, p.m, p.n, p.k, p.alpha, a.data(), p.lda(), b.data(), p.ldb(), p.beta,
               c.data(), p.ldc());
    const Expected e = reference(p, a, b, c0);
    const Verdict v = compare(p, c, e.value, e.bound, c0, 1.0);
    CHECK(v.worst <= 1.0);
    CHECK(v.padding_changed == 0);
  }
}

TEST_CASE("sgemm split among threads by rows and by columns matches the double loop", "[gemm][cpu]") {
  // Products large enough to be split (kernels/cpu/gemm.cpp): by rows (m >= 16 per thread), by
  // columns (m = 1, a decode step's GEMV, and m = 20 < 3·16), with 3 threads so the last block is
  // the remainder.
  const ThreadsRestored restore;
  set_threads(3);
  for (const auto& [m, n, k] : {std::tuple<std::size_t, std::size_t, std::size_t>{150, 97, 64},
                                {1, 1031, 300}, {20, 700, 40}})
    for (const Problem& p : problems(m, n, k)) {
      INFO(p.name());
      const auto a = random_vector(p.a_size(), 30 + m);
      const auto b = random_vector(p.b_size(), 31 + m);
      const auto c0 = initial_c(p, 32 + m);
      auto c = c0;
      cpu::sgemm(p.transpose_a, p.transpose_b, p.m, p.n, p.k, p.alpha, a.data(), p.lda(), b.data(), p.ldb(),
                 p.beta, c.data(), p.ldc());
      const Expected e = reference(p, a, b, c0);
      const Verdict v = compare(p, c, e.value, e.bound, c0, 1.0);
      CHECK(v.worst <= 1.0);
      CHECK(v.padding_changed == 0);
    }
}

TEST_CASE("sgemm_strided_batched matches per-matrix sgemm, batch below and above the thread count",
          "[gemm][cpu]") {
  const ThreadsRestored restore;
  set_threads(3);
  for (std::size_t batch : {std::size_t{2}, std::size_t{7}})
    for (const Problem& p : problems(19, 23, 31)) {
      INFO(p.name() << " batch=" << batch);
      // Gaps between the matrices, which must stay untouched.
      const std::size_t sa = p.a_size() + 5, sb = p.b_size() + 7, sc = p.c_size() + 11;
      const auto a = random_vector(sa * batch, 20 + batch);
      const auto b = random_vector(sb * batch, 21 + batch);
      std::vector<float> c0(sc * batch);
      for (std::size_t i = 0; i < batch; ++i) {
        const auto ci = initial_c(p, 22 + i);
        std::copy(ci.begin(), ci.end(), c0.begin() + i * sc);
        std::fill(c0.begin() + i * sc + p.c_size(), c0.begin() + (i + 1) * sc, -7.0f);
      }
      auto batched = c0, single = c0;
      cpu::sgemm_strided_batched(p.transpose_a, p.transpose_b, p.m, p.n, p.k, p.alpha, a.data(), p.lda(), sa,
                                 b.data(), p.ldb(), sb, p.beta, batched.data(), p.ldc(), sc, batch);
      for (std::size_t i = 0; i < batch; ++i)
        cpu::sgemm(p.transpose_a, p.transpose_b, p.m, p.n, p.k, p.alpha, a.data() + i * sa, p.lda(),
                   b.data() + i * sb, p.ldb(), p.beta, single.data() + i * sc, p.ldc());
      for (std::size_t i = 0; i < batch; ++i) {
        const auto slice = [&](const std::vector<float>& v, std::size_t off, std::size_t n) {
          return std::vector<float>(v.begin() + off, v.begin() + off + n);
        };
        const auto ci0 = slice(c0, i * sc, p.c_size());
        const Expected e = reference(p, slice(a, i * sa, p.a_size()), slice(b, i * sb, p.b_size()), ci0);
        const auto got = slice(batched, i * sc, p.c_size());
        const Verdict exact = compare(p, got, e.value, e.bound, ci0, 1.0);
        const Verdict paired = compare(p, got, widen(slice(single, i * sc, p.c_size())), e.bound, ci0, 2.0);
        INFO("matrix " << i);
        CHECK(exact.worst <= 1.0);
        CHECK(exact.padding_changed == 0);
        CHECK(paired.worst <= 1.0);
        const auto gap = slice(batched, i * sc + p.c_size(), sc - p.c_size());
        CHECK(std::count(gap.begin(), gap.end(), -7.0f) == static_cast<std::ptrdiff_t>(gap.size()));
      }
    }
}

// ---- CUDA

#ifdef AIOPT_HAVE_CUDA

using aiopt::test::download, aiopt::test::upload;

namespace {

namespace gpu = aiopt::kernels::cuda;

// Values as stored in `dtype`: the storage bits (f32 as its own bits), and the stored values
// widened back to float, which the reference uses.
struct Stored {
  std::vector<std::uint16_t> half;  // f16 / bf16 bits
  std::vector<float> values;
};

Stored store(const std::vector<float>& v, DType dtype) {
  Stored s{{}, v};
  if (dtype == DType::f32) return s;
  s.half.resize(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    s.half[i] = dtype == DType::f16 ? float_to_f16(v[i]) : float_to_bf16(v[i]);
    s.values[i] = dtype == DType::f16 ? f16_to_float(s.half[i]) : bf16_to_float(s.half[i]);
  }
  return s;
}

// A device copy of stored values, of either element size.
struct DeviceArray {
  memory::Buffer<float> f32;
  memory::Buffer<std::uint16_t> half;
  DType dtype;

  DeviceArray(const Stored& s, DType d) : dtype(d) {
    if (d == DType::f32) {
      f32 = upload(s.values);
    } else {
      half = upload(s.half);
    }
  }
  void* data() { return dtype == DType::f32 ? static_cast<void*>(f32.data()) : static_cast<void*>(half.data()); }
  std::vector<float> values() const {
    if (dtype == DType::f32) return download(f32);
    const auto bits = download(half);
    std::vector<float> v(bits.size());
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = dtype == DType::f16 ? f16_to_float(bits[i]) : bf16_to_float(bits[i]);
    return v;
  }
};

// What a dtype adds to the fp32 bound (file comment): the factor on it, the output rounding
// relative to |exact|, and an absolute floor.
struct DtypeTolerance {
  double scale, rel, abs;
};
DtypeTolerance tolerance(DType dtype) {
  switch (dtype) {
    case DType::f16: return {2.0, 1.0 / 2048, 1.0 / 16777216};
    case DType::bf16: return {2.0, 1.0 / 256, 0.0};
    default: return {1.0, 0.0, 0.0};
  }
}

const std::vector<DType> gemm_dtypes = {DType::f32, DType::f16, DType::bf16};

}  // namespace

TEST_CASE("cuda linear matches the CPU, with and without bias, in true fp32", "[gemm][gpu]") {
  for (const auto& s : linear_shapes) {
    const auto [x, w, b] = linear_inputs(s, 31);
    auto dx = upload(x), dw = upload(w), db = upload(b);
    for (bool with_bias : {false, true}) {
      INFO("m=" << s.m << " k=" << s.k << " n=" << s.n << (with_bias ? " with bias" : " without bias"));
      const float* bias = with_bias ? b.data() : nullptr;
      std::vector<float> want(s.m * s.n), blas(s.m * s.n);
      cpu::linear_reference(x.data(), w.data(), bias, want.data(), s.m, s.k, s.n);
      cpu::linear(x.data(), w.data(), bias, blas.data(), s.m, s.k, s.n);
      // y starts as NaNs: without bias it must be written, not read.
      auto dy = upload(std::vector<float>(s.m * s.n, std::numeric_limits<float>::quiet_NaN()));
      gpu::linear(dx.data(), dw.data(), with_bias ? db.data() : nullptr, dy.data(), s.m, s.k, s.n, nullptr);
      const auto got = download(dy);
      const auto bound = linear_bound(x, w, bias, s.m, s.k, s.n);
      CHECK(worst_ratio(got, want, bound, 1.0) <= 1.0);
      CHECK(worst_ratio(got, blas, bound, 2.0) <= 1.0);
    }
  }
  // TF32 keeps 10 mantissa bits, so it reads x = 1 + 2^-12 as 1: with w = 1 and k = 64 fp32 gives
  // y = 64 + 2^-6 exactly (every partial sum is representable), TF32 gives 64.
  const std::size_t n = 64;
  auto dx = upload(std::vector<float>(n * n, 1.0f + 1.0f / 4096));
  auto dw = upload(std::vector<float>(n * n, 1.0f));
  auto dy = upload(std::vector<float>(n * n, 0.0f));
  gpu::linear(dx.data(), dw.data(), nullptr, dy.data(), n, n, n, nullptr);
  const auto y = download(dy);
  CHECK(std::count(y.begin(), y.end(), 64.0f + 1.0f / 64) == static_cast<std::ptrdiff_t>(y.size()));
}

TEST_CASE("cuda gemm matches the double loop for f32, f16 and bf16 and every transpose", "[gemm][gpu]") {
  for (DType dtype : gemm_dtypes)
    for (const Problem& p : problems(37, 29, 53)) {
      INFO(to_string(dtype) << " " << p.name());
      const Stored a = store(random_vector(p.a_size(), 40), dtype);
      const Stored b = store(random_vector(p.b_size(), 41), dtype);
      const Stored c0 = store(initial_c(p, 42), dtype);
      DeviceArray da(a, dtype), db(b, dtype), dc(c0, dtype);
      gpu::gemm(p.transpose_a, p.transpose_b, p.m, p.n, p.k, p.alpha, da.data(), p.lda(), db.data(), p.ldb(), p.beta,
                dc.data(), p.ldc(), dtype, nullptr);
      const Expected e = reference(p, a.values, b.values, c0.values);
      const DtypeTolerance t = tolerance(dtype);
      const Verdict v = compare(p, dc.values(), e.value, e.bound, c0.values, t.scale, t.rel, t.abs);
      CHECK(v.worst <= 1.0);
      CHECK(v.padding_changed == 0);
    }
}

TEST_CASE("cuda gemm_strided_batched matches per-matrix cuda gemm", "[gemm][gpu]") {
  const std::size_t batch = 5;
  for (DType dtype : gemm_dtypes)
    for (const Problem& p : problems(19, 23, 31)) {
      INFO(to_string(dtype) << " " << p.name());
      const std::size_t sa = p.a_size() + 5, sb = p.b_size() + 7, sc = p.c_size() + 11;
      const Stored a = store(random_vector(sa * batch, 50), dtype);
      const Stored b = store(random_vector(sb * batch, 51), dtype);
      std::vector<float> c_init(sc * batch);
      for (std::size_t i = 0; i < batch; ++i) {
        const auto ci = initial_c(p, 52 + i);
        std::copy(ci.begin(), ci.end(), c_init.begin() + i * sc);
        std::fill(c_init.begin() + i * sc + p.c_size(), c_init.begin() + (i + 1) * sc, -7.0f);
      }
      const Stored c0 = store(c_init, dtype);
      DeviceArray da(a, dtype), db(b, dtype), batched(c0, dtype), single(c0, dtype);
      gpu::gemm_strided_batched(p.transpose_a, p.transpose_b, p.m, p.n, p.k, p.alpha, da.data(), p.lda(), sa,
                                db.data(), p.ldb(), sb, p.beta, batched.data(), p.ldc(), sc, batch, dtype, nullptr);
      const std::size_t element = dtype == DType::f32 ? 4 : 2;
      for (std::size_t i = 0; i < batch; ++i) {
        const auto at = [&](DeviceArray& d, std::size_t off) { return static_cast<char*>(d.data()) + off * element; };
        gpu::gemm(p.transpose_a, p.transpose_b, p.m, p.n, p.k, p.alpha, at(da, i * sa), p.lda(), at(db, i * sb), p.ldb(),
                  p.beta, at(single, i * sc), p.ldc(), dtype, nullptr);
      }
      const auto got = batched.values(), per_matrix = single.values();
      const DtypeTolerance t = tolerance(dtype);
      for (std::size_t i = 0; i < batch; ++i) {
        const auto slice = [&](const std::vector<float>& v, std::size_t off, std::size_t n) {
          return std::vector<float>(v.begin() + off, v.begin() + off + n);
        };
        const auto ci0 = slice(c0.values, i * sc, p.c_size());
        const Expected e = reference(p, slice(a.values, i * sa, p.a_size()), slice(b.values, i * sb, p.b_size()), ci0);
        const auto gi = slice(got, i * sc, p.c_size());
        INFO("matrix " << i);
        const Verdict exact = compare(p, gi, e.value, e.bound, ci0, t.scale, t.rel, t.abs);
        CHECK(exact.worst <= 1.0);
        CHECK(exact.padding_changed == 0);
        // Each within its bound of the exact value: within twice of each other.
        const Verdict paired =
            compare(p, gi, widen(slice(per_matrix, i * sc, p.c_size())), e.bound, ci0, 2 * t.scale, 2 * t.rel, 2 * t.abs);
        CHECK(paired.worst <= 1.0);
        const auto gap = slice(got, i * sc + p.c_size(), sc - p.c_size());
        CHECK(std::count(gap.begin(), gap.end(), -7.0f) == static_cast<std::ptrdiff_t>(gap.size()));
      }
    }
}

// A sweep makes a stream per case: a GEMM on each new stream must neither allocate another
// cuBLASLt workspace on the device nor add to the tracked bytes (no case's peak holds it), and
// each result stays exact (int32 sums of int8 products).
TEST_CASE("cuda gemm_int8 on new streams shares one workspace and stays exact", "[gemm][gpu]") {
  const std::size_t m = 64, n = 128, k = 256;
  rng::Stream s(61);
  std::vector<std::int8_t> x(m * k), w(n * k);
  for (auto& v : x) v = static_cast<std::int8_t>(static_cast<int>(s.next_bits() % 255) - 127);
  for (auto& v : w) v = static_cast<std::int8_t>(static_cast<int>(s.next_bits() % 255) - 127);
  std::vector<std::int32_t> want(m * n, 0);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t p = 0; p < k; ++p) want[i * n + j] += std::int32_t{x[i * k + p]} * w[j * k + p];
  auto dx = upload(x), dw = upload(w);
  auto dy = upload(std::vector<std::int32_t>(m * n, 0));
  gpu::gemm_int8(dx.data(), dw.data(), dy.data(), m, n, k, nullptr);  // starts cuBLASLt on this thread
  CHECK(download(dy) == want);

  const std::size_t tracked = memory::usage(Device::cuda()).current;
  std::size_t free_before = 0, free_after = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
  for (int run = 0; run < 4; ++run) {
    INFO("stream " << run);
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaMemsetAsync(dy.data(), 0, dy.bytes(), stream));
    gpu::gemm_int8(dx.data(), dw.data(), dy.data(), m, n, k, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    CUDA_CHECK(cudaStreamDestroy(stream));
    CHECK(download(dy) == want);
  }
  CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
  CHECK(memory::usage(Device::cuda()).current == tracked);
  // A workspace per stream would hold up to 32 MiB each; 8 MiB covers the driver's own pages.
  CHECK(free_after + (std::size_t{8} << 20) >= free_before);
}

#endif  // AIOPT_HAVE_CUDA
