// The int8 GEMM (kernels/cpu/gemm_int8.hpp): every path this CPU runs against an int32 reference
// computed here from the same quantized values, and against the fp32 product within a bound
// derived from the quantization steps.
//
// Exactness. The dot product Σ_p q_x·q_w is exact in int32 on every path (no saturation, no
// overflow for k <= int8_max_k), and every path finishes with y = fma(float(dot), s_x·s_w, b)
// (s_x·s_w rounded to fp32 first). The reference here does the same, so each path must match it
// bit for bit. Against the real number dot·s_x·s_w + b that result is off by the roundings of
// float(dot) (exact below 2^24), of s_x·s_w and of the fma: at most 2u·|dot·s_x·s_w| + u·|y|
// (u = 2^-24), checked separately.
//
// Against fp32. With x = s_x·q_x + e_x and w = s_w·q_w + e_w, each term differs by
//   x·w − s_x q_x·s_w q_w = x·e_w + w·e_x − e_x·e_w,
// so |y − (x·w + b)| <= Σ_p (|x_p|·E_w + |w_p|·E_x + E_x·E_w) + 2u·|dot|·s_x·s_w + u·|y|,
// where E = s·(1/2 + 128u) bounds a quantization error (quantize.hpp: s/2 plus the rounding of
// x / s). The fp32 reference accumulates in double, exact far below that.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "core/threads.hpp"
#include "kernels/cpu/gemm_int8.hpp"
#include "kernels/cpu/quantize.hpp"
#include "support/random.hpp"

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;

namespace {

constexpr double u = 1.0 / 16777216.0;  // 2^-24
constexpr float sentinel = 12345.0f;    // written past y; must survive every product
constexpr std::size_t guard = 64;

using aiopt::test::random_vector;

struct Shape {
  std::size_t m, n, k;
  std::string name() const {
    return "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k);
  }
};

// Odd k (not a multiple of 4 or 64), n not a multiple of 16 or 64, m = 1 (GEMV) and m > 1,
// m beyond one block of rows (192), shapes large enough to run on several threads.
const std::vector<Shape> shapes = {{1, 1, 1},      {1, 64, 64},   {1, 100, 67},  {3, 17, 5},
                                   {7, 130, 259},  {13, 64, 128}, {200, 70, 33}, {1, 300, 1000},
                                   {37, 200, 515}, {6, 129, 4}};

// One problem: fp32 x, w, bias; the quantized operands; the unpacked weights for the reference.
struct Problem {
  Shape shape;
  std::vector<float> x, w, bias;
  std::vector<std::int8_t> wq;
  std::vector<float> w_scale;
  cpu::QuantizedActivations xq;
  cpu::PackedInt8Weights packed;

  Problem(Shape s, std::uint64_t seed) : shape(s), xq(s.m, s.k) {
    x = random_vector(s.m * s.k, seed);
    w = random_vector(s.n * s.k, seed + 1, -0.5f, 0.5f);
    bias = random_vector(s.n, seed + 2);
    x[0] = 3.0f;  // an outlier, so that row's scale differs from the others'
    wq.resize(w.size());
    w_scale.resize(s.n);
    cpu::quantize_rows_int8(w.data(), wq.data(), w_scale.data(), s.n, s.k);
    packed = cpu::pack_int8_weights(wq.data(), w_scale.data(), s.n, s.k);
    cpu::quantize_activations_dynamic(x.data(), xq);
  }

  // Summed in int64: GCC 12 at -O3 for an AVX-512 VNNI target miscompiles this sum in int32.
  std::int64_t dot(std::size_t i, std::size_t j) const {
    std::int64_t d = 0;
    for (std::size_t p = 0; p < shape.k; ++p) d += int{xq.value(i, p)} * int{wq[j * shape.k + p]};
    return d;
  }
  // The reference: exact int32 dot, then the documented fp32 finish.
  float reference(std::size_t i, std::size_t j, bool with_bias) const {
    return std::fma(static_cast<float>(dot(i, j)), xq.scale[i] * w_scale[j], with_bias ? bias[j] : 0.0f);
  }
};

// y (m, n) followed by `guard` sentinels.
std::vector<float> run(const Problem& p, cpu::Int8Path path, bool with_bias) {
  std::vector<float> y(p.shape.m * p.shape.n + guard, sentinel);
  cpu::gemm_int8(p.xq, p.packed, with_bias ? p.bias.data() : nullptr, y.data(), path);
  return y;
}

std::size_t guard_changed(const std::vector<float>& y, std::size_t size) {
  std::size_t changed = 0;
  for (std::size_t i = size; i < y.size(); ++i) changed += y[i] != sentinel;
  return changed;
}

}  // namespace

TEST_CASE("int8 GEMM paths match the int32 reference bit for bit", "[gemm_int8]") {
  const auto paths = cpu::int8_paths_supported();
  const int threads_before = threads();
  for (int workers : {1, 2}) {
    set_threads(workers);
    for (const Shape& s : shapes) {
      const Problem p(s, 1000 + s.m * 7 + s.n * 3 + s.k);
      for (cpu::Int8Path path : paths)
        for (bool with_bias : {false, true}) {
          INFO(s.name() << " path " << cpu::int8_path_name(path) << " bias " << with_bias << " threads "
                        << workers);
          const auto y = run(p, path, with_bias);
          std::size_t mismatches = 0, beyond_rounding = 0;
          for (std::size_t i = 0; i < s.m; ++i)
            for (std::size_t j = 0; j < s.n; ++j) {
              const float got = y[i * s.n + j];
              const float want = p.reference(i, j, with_bias);
              if (std::memcmp(&got, &want, sizeof got) != 0) {
                if (mismatches < 3)
                  UNSCOPED_INFO("y[" << i << "," << j << "] = " << got << ", want " << want);
                ++mismatches;
              }
              const double exact =
                  double(p.dot(i, j)) * p.xq.scale[i] * p.w_scale[j] + (with_bias ? p.bias[j] : 0.0);
              const double limit = 2 * u * std::fabs(double(p.dot(i, j)) * p.xq.scale[i] * p.w_scale[j]) +
                                   u * std::fabs(double{got});
              beyond_rounding += !(std::fabs(got - exact) <= limit);  // a NaN counts
            }
          CHECK(mismatches == 0);
          CHECK(beyond_rounding == 0);
          CHECK(guard_changed(y, s.m * s.n) == 0);
        }
    }
  }
  set_threads(threads_before);
}

TEST_CASE("int8 GEMM is within the quantization bound of the fp32 product", "[gemm_int8]") {
  for (const Shape& s : shapes) {
    const Problem p(s, 2000 + s.m + s.n + s.k);
    for (cpu::Int8Path path : cpu::int8_paths_supported()) {
      INFO(s.name() << " path " << cpu::int8_path_name(path));
      const auto y = run(p, path, true);
      double worst = 0.0, largest_error = 0.0;
      for (std::size_t i = 0; i < s.m; ++i)
        for (std::size_t j = 0; j < s.n; ++j) {
          const double ex = p.xq.scale[i] * (0.5 + 128 * u), ew = p.w_scale[j] * (0.5 + 128 * u);
          double exact = p.bias[j], bound = 0.0;
          for (std::size_t q = 0; q < s.k; ++q) {
            const double xv = p.x[i * s.k + q], wv = p.w[j * s.k + q];
            exact += xv * wv;
            bound += std::fabs(xv) * ew + std::fabs(wv) * ex + ex * ew;
          }
          const double got = y[i * s.n + j];
          bound += 2 * u * std::fabs(double(p.dot(i, j)) * p.xq.scale[i] * p.w_scale[j]) + u * std::fabs(got);
          const double e = std::fabs(got - exact);
          worst = std::max(worst, std::isnan(e) ? std::numeric_limits<double>::infinity() : e / bound);
          largest_error = std::max(largest_error, e);
        }
      CHECK(worst <= 1.0);
      // Quantization did happen (a result equal to fp32 would mean the test compared fp32 to itself).
      if (s.k > 4) CHECK(largest_error > 0.0);
    }
  }
}

TEST_CASE("int8 GEMM with static activation scales matches the reference", "[gemm_int8]") {
  // Static activations share one scale; this one clips some values, which the reference sees too
  // (it reads the stored q), so the paths still match it bit for bit.
  const Shape s{9, 150, 300};
  Problem p(s, 77);
  const auto clip = cpu::quantize_activations_static(p.x.data(), 0.8f / 127.0f, p.xq);
  CHECK(clip.clipped > 0);
  for (cpu::Int8Path path : cpu::int8_paths_supported()) {
    INFO("path " << cpu::int8_path_name(path));
    const auto y = run(p, path, true);
    std::size_t mismatches = 0;
    for (std::size_t i = 0; i < s.m; ++i)
      for (std::size_t j = 0; j < s.n; ++j) {
        const float want = p.reference(i, j, true);
        mismatches += std::memcmp(&y[i * s.n + j], &want, sizeof want) != 0;
      }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("int8 GEMM does not saturate at the extreme operands", "[gemm_int8]") {
  // q_x = ±127 (biased 255 or 1) against q_w = ±127: vpmaddubsw on u8 = q_x + 128 would sum a pair
  // to 2·255·127 = 64,770 and saturate at 32,767; the AVX2 path's |w|·sign(w)·x sums to 32,258.
  // Every dot is ±127²·k, known exactly; k = 4099 also exercises a k tail.
  const std::size_t m = 4, n = 67, k = 4099;
  std::vector<float> x(m * k), w(n * k);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t p = 0; p < k; ++p) x[i * k + p] = i % 2 == 0 ? 1.0f : -1.0f;
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t p = 0; p < k; ++p)
      w[j * k + p] = (j % 3 == 0 || (j % 3 == 2 && p % 2 == 0)) ? 1.0f : -1.0f;
  cpu::QuantizedActivations xq(m, k);
  cpu::quantize_activations_dynamic(x.data(), xq);
  const auto packed = cpu::quantize_pack_int8_weights(w.data(), n, k);
  for (cpu::Int8Path path : cpu::int8_paths_supported()) {
    INFO("path " << cpu::int8_path_name(path));
    std::vector<float> y(m * n);
    cpu::gemm_int8(xq, packed, nullptr, y.data(), path);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = 0; j < n; ++j) {
        // Per element x·w = ±1 with sign (row sign)·(column pattern); pattern 2 alternates.
        const std::int64_t sign_x = i % 2 == 0 ? 1 : -1;
        const std::int64_t per_k = j % 3 == 0 ? 1 : j % 3 == 1 ? -1 : 0;
        const std::int64_t sum =
            j % 3 == 2 ? static_cast<std::int64_t>((k + 1) / 2) - static_cast<std::int64_t>(k / 2)
                       : per_k * static_cast<std::int64_t>(k);
        const std::int64_t dot = 127 * 127 * sign_x * sum;
        const float want = std::fma(static_cast<float>(dot), xq.scale[i] * packed.scale[j], 0.0f);
        wrong += y[i * n + j] != want;
      }
    CHECK(wrong == 0);
  }
}

TEST_CASE("int8 GEMM rejects bad operands", "[gemm_int8]") {
  auto w = random_vector(8 * 16, 5);
  w[17] = std::nanf("");
  CHECK_THROWS_AS(cpu::quantize_pack_int8_weights(w.data(), 8, 16), std::invalid_argument);
  w[17] = 0.25f;
  const auto packed = cpu::quantize_pack_int8_weights(w.data(), 8, 16);
  cpu::QuantizedActivations wrong_k(1, 15);
  std::vector<float> y(8);
  CHECK_THROWS_AS(cpu::gemm_int8(wrong_k, packed, nullptr, y.data()), std::invalid_argument);
  std::vector<std::int8_t> q(cpu::int8_max_k + 1, 1);
  const float scale = 1.0f;
  CHECK_THROWS_AS(cpu::pack_int8_weights(q.data(), &scale, 1, cpu::int8_max_k + 1), std::invalid_argument);
  for (cpu::Int8Path path : {cpu::Int8Path::avx2, cpu::Int8Path::avx512_vnni})
    if (!cpu::int8_path_supported(path)) {
      cpu::QuantizedActivations x(1, 16);
      CHECK_THROWS_AS(cpu::gemm_int8(x, packed, nullptr, y.data(), path), std::invalid_argument);
    }
  CHECK(cpu::int8_path_supported(cpu::int8_path_default()));
}
