// Symmetric int8 quantization (kernels/cpu/quantize.hpp): rounding to nearest even on exact ties,
// saturation at ±127 (never −128), zero rows, the static clip count, the biased activation
// format and its padding, the error bound s/2 on fresh random rows, and non-finite input, which
// must throw rather than quantize silently.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/rng.hpp"
#include "kernels/cpu/quantize.hpp"
#include "support/random.hpp"

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;

namespace {

constexpr double u = 1.0 / 16777216.0;  // 2^-24: fp32's unit roundoff

using aiopt::test::random_vector;

// q of one row of activations, unbiased.
std::vector<int> activation_row(const cpu::QuantizedActivations& a, std::size_t i) {
  std::vector<int> out(a.k);
  for (std::size_t p = 0; p < a.k; ++p) out[p] = a.value(i, p);
  return out;
}

}  // namespace

TEST_CASE("int8 quantization rounds exact ties to the nearest even integer", "[quantize]") {
  // The row's max|w| is 127, so s = 1 exactly and w / s is w: every .5 is an exact tie.
  const std::vector<float> w = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, -2.5f, 126.5f, -125.5f, 3.49f};
  const std::vector<int> want = {127, 0, 2, 2, 0, -2, -2, 126, -126, 3};
  std::vector<std::int8_t> q(w.size());
  float scale = 0.0f;
  cpu::quantize_rows_int8(w.data(), q.data(), &scale, 1, w.size());
  CHECK(scale == 1.0f);
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(int{q[i]} == want[i]);

  cpu::QuantizedActivations a(1, w.size());
  cpu::quantize_activations_dynamic(w.data(), a);
  CHECK(a.scale[0] == 1.0f);
  CHECK(activation_row(a, 0) == want);

  // Static with s = 0.5: x / s doubles x, so x = 1.25 is the tie 2.5.
  const std::vector<float> x = {1.25f, 0.75f, -1.25f, -0.75f, 0.25f};
  cpu::QuantizedActivations b(1, x.size());
  const auto clip = cpu::quantize_activations_static(x.data(), 0.5f, b);
  CHECK(clip.clipped == 0);
  CHECK(activation_row(b, 0) == std::vector<int>{2, 2, -2, -2, 0});
}

TEST_CASE("static int8 quantization saturates at ±127 and counts what it clipped", "[quantize]") {
  // s = 1: 127.5 rounds (tie, to even) to 128 and saturates with error exactly s/2, which is not
  // clipping; 127.6 and beyond lose more than s/2 and count.
  const std::vector<float> x = {200.0f, -1000.0f, 127.6f, 127.5f, -127.5f, -128.0f, 3.0f, 1e30f};
  cpu::QuantizedActivations a(1, x.size());
  const auto clip = cpu::quantize_activations_static(x.data(), 1.0f, a);
  CHECK(activation_row(a, 0) == std::vector<int>{127, -127, 127, 127, -127, -127, 3, 127});
  CHECK(clip.clipped == 5);
  CHECK(clip.total == x.size());
  CHECK(clip.fraction() == Approx(5.0 / 8.0));
  for (std::size_t p = 0; p < a.k_padded; ++p) CHECK(int{a.biased[p]} >= 1);  // q never −128

  // A known fraction on random data: 1000 values in [−1, 1], scale 0.5/127: |x| > 0.50197 clips.
  const std::size_t m = 10, k = 100;
  const auto r = random_vector(m * k, 11);
  const float s = 0.5f / 127.0f;
  std::size_t want = 0;
  for (float v : r) want += std::fabs(v / s) > 127.5f;
  cpu::QuantizedActivations big(m, k);
  const auto c = cpu::quantize_activations_static(r.data(), s, big);
  CHECK(c.clipped == want);
  CHECK(c.total == m * k);
  CHECK(c.fraction() > 0.4);  // about half of a uniform [−1, 1] lies beyond ±0.502
  CHECK(c.fraction() < 0.6);

  cpu::QuantizedActivations z(1, 1);
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::infinity(), std::nanf("")})
    CHECK_THROWS_AS(cpu::quantize_activations_static(x.data(), bad, z), std::invalid_argument);
}

TEST_CASE("int8 quantization of a zero row gives scale 0 and zeros", "[quantize]") {
  const std::size_t k = 37;
  std::vector<float> w(3 * k, 0.0f);
  for (std::size_t p = 0; p < k; ++p) w[k + p] = 0.01f * static_cast<float>(p + 1);  // row 1 non-zero
  std::vector<std::int8_t> q(w.size(), 99);
  std::vector<float> scale(3, -1.0f);
  cpu::quantize_rows_int8(w.data(), q.data(), scale.data(), 3, k);
  CHECK(scale[0] == 0.0f);
  CHECK(scale[2] == 0.0f);
  CHECK(scale[1] > 0.0f);
  for (std::size_t p = 0; p < k; ++p) {
    CHECK(int{q[p]} == 0);
    CHECK(int{q[2 * k + p]} == 0);
  }
  std::vector<float> back(w.size(), 1.0f);
  cpu::dequantize_rows_int8(q.data(), scale.data(), back.data(), 3, k);
  for (std::size_t p = 0; p < k; ++p) CHECK(back[p] == 0.0f);

  cpu::QuantizedActivations a(3, k);
  cpu::quantize_activations_dynamic(w.data(), a);
  CHECK(a.scale[0] == 0.0f);
  for (int v : activation_row(a, 0)) CHECK(v == 0);
}

TEST_CASE("int8 quantization is within s/2 of the input on random rows", "[quantize]") {
  // Each value is off by at most s/2 from rounding, plus the rounding of x / s to fp32
  // (|x / s| <= 127 + ..., so < 128·u·s); the row's largest |x| maps to ±127 exactly.
  for (std::size_t k : {1, 3, 4, 17, 64, 257}) {
    const std::size_t rows = 5;
    auto w = random_vector(rows * k, 100 + k);
    w[2 * k] = 40.0f;  // an outlier: that row's scale is large
    std::vector<std::int8_t> q(w.size());
    std::vector<float> scale(rows);
    cpu::quantize_rows_int8(w.data(), q.data(), scale.data(), rows, k);
    std::vector<float> back(w.size());
    cpu::dequantize_rows_int8(q.data(), scale.data(), back.data(), rows, k);
    cpu::QuantizedActivations a(rows, k);
    cpu::quantize_activations_dynamic(w.data(), a);
    CHECK(a.k_padded % 4 == 0);
    CHECK(a.k_padded >= k);
    CHECK(a.k_padded < k + 4);
    for (std::size_t r = 0; r < rows; ++r) {
      double max_abs = 0.0;
      for (std::size_t p = 0; p < k; ++p) max_abs = std::max(max_abs, std::fabs(double{w[r * k + p]}));
      CHECK(scale[r] == static_cast<float>(max_abs) / 127.0f);
      CHECK(a.scale[r] == scale[r]);
      bool hit_max = false;
      for (std::size_t p = 0; p < k; ++p) {
        const std::size_t i = r * k + p;
        const double bound = scale[r] * (0.5 + 128 * u);
        CHECK(std::fabs(double{w[i]} - double{scale[r]} * q[i]) <= bound);
        CHECK(back[i] == scale[r] * static_cast<float>(q[i]));
        CHECK(int{a.value(r, p)} == int{q[i]});  // the same rule for activations and weights
        hit_max |= std::abs(int{q[i]}) == 127;
      }
      CHECK(hit_max);
      for (std::size_t p = k; p < a.k_padded; ++p) CHECK(int{a.biased[r * a.k_padded + p]} == 128);
    }
  }
}

TEST_CASE("int8 quantization of a NaN or an infinity throws", "[quantize]") {
  // Non-finite values anywhere in a row, including past the last full vector of a row.
  const std::size_t rows = 3, k = 37;
  for (float bad : {std::nanf(""), -std::nanf(""), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()})
    for (std::size_t at : {std::size_t{0}, k + 5, 3 * k - 1}) {
      auto w = random_vector(rows * k, 7);
      w[at] = bad;
      std::vector<std::int8_t> q(w.size());
      std::vector<float> scale(rows);
      CHECK_THROWS_AS(cpu::quantize_rows_int8(w.data(), q.data(), scale.data(), rows, k),
                      std::invalid_argument);
      cpu::QuantizedActivations a(rows, k);
      CHECK_THROWS_AS(cpu::quantize_activations_dynamic(w.data(), a), std::invalid_argument);
      CHECK_THROWS_AS(cpu::quantize_activations_static(w.data(), 0.01f, a), std::invalid_argument);
    }
  // Large inputs take the parallel path, which must report it too.
  auto big = random_vector(300 * 512, 8);
  big[299 * 512 + 511] = std::nanf("");
  std::vector<std::int8_t> q(big.size());
  std::vector<float> scale(300);
  CHECK_THROWS_WITH(cpu::quantize_rows_int8(big.data(), q.data(), scale.data(), 300, 512),
                    Catch::Contains("row 299"));
}
