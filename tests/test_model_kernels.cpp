// The GPT's own CPU kernels against plain references on random inputs: embedding (and its range
// checks), split_qkv and merge_heads (exact copies), int8 row quantization (round to nearest
// even, saturation, the zero row), split_qkv_int8, and attention over the int8 cache.
//
// Tolerances: the copies and the quantization are exact (bit-equal); attention_int8_kv is
// compared with the double reference over the same dequantized keys and values, 2e-5 absolute
// (fp32 dot products of head_dim <= 64 terms of magnitude <= 1, ~64 · 6e-8 ≈ 4e-6, and the exp
// polynomial's 2e-7 relative error; outputs are convex combinations of values in [-1, 1]).
// With CUDA ([gpu]): the row kernels' launchers with zero rows or zero width launch nothing.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

#include "core/rng.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/heads.hpp"
#include "kernels/cpu/kv_int8.hpp"
#include "support/random.hpp"

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
using kernels::AttentionShape;

namespace {

using aiopt::test::random_vector;

// The plain int8 rounding: nearbyint rounds to nearest even in the default rounding mode.
std::int8_t quantize_reference(float x, float s) {
  return static_cast<std::int8_t>(std::fmax(-127.0f, std::fmin(127.0f, std::nearbyint(x / s))));
}

}  // namespace

TEST_CASE("embedding adds the token and position rows", "[model_kernels]") {
  const std::size_t B = 2, T = 5, V = 11, P = 9, C = 19, pos0 = 3;
  const auto wte = random_vector(V * C, 1), wpe = random_vector(P * C, 2);
  std::vector<std::int32_t> tokens(B * T);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int32_t>(rng::bits(3, i) % V);
  std::vector<float> y(B * T * C);
  cpu::embedding(tokens.data(), wte.data(), wpe.data(), y.data(), B, T, pos0, V, P, C);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t t = 0; t < T; ++t)
      for (std::size_t c = 0; c < C; ++c)
        REQUIRE(y[(b * T + t) * C + c] == wte[tokens[b * T + t] * C + c] + wpe[(pos0 + t) * C + c]);

  std::vector<float> untouched(B * T * C, 7.0f);
  tokens[6] = static_cast<std::int32_t>(V);
  CHECK_THROWS_AS(cpu::embedding(tokens.data(), wte.data(), wpe.data(), untouched.data(), B, T, 0, V, P, C),
                  std::out_of_range);
  tokens[6] = -1;
  CHECK_THROWS_AS(cpu::embedding(tokens.data(), wte.data(), wpe.data(), untouched.data(), B, T, 0, V, P, C),
                  std::out_of_range);
  for (float v : untouched) REQUIRE(v == 7.0f);  // checked before writing
  tokens[6] = 0;
  CHECK_THROWS_AS(cpu::embedding(tokens.data(), wte.data(), wpe.data(), y.data(), B, T, P - T + 1, V, P, C),
                  std::out_of_range);
  CHECK_NOTHROW(cpu::embedding(tokens.data(), wte.data(), wpe.data(), y.data(), B, T, P - T, V, P, C));
}

TEST_CASE("split_qkv and merge_heads move every value to its place", "[model_kernels]") {
  const std::size_t B = 2, T = 3, H = 4, d = 5, C = H * d, cap = 8, pos0 = 4;
  const auto qkv = random_vector(B * T * 3 * C, 4);  // (B, T, 3, H, d)
  std::vector<float> q(B * H * T * d), k(B * H * cap * d, -9.0f), v(B * H * cap * d, -9.0f);
  cpu::split_qkv(qkv.data(), q.data(), k.data(), v.data(), B, T, H, d, cap, pos0);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t p = 0; p < cap; ++p)
        for (std::size_t e = 0; e < d; ++e) {
          const std::size_t slot = ((b * H + h) * cap + p) * d + e;
          if (p < pos0 || p >= pos0 + T) {  // positions outside [pos0, pos0 + T) are left alone
            REQUIRE(k[slot] == -9.0f);
            REQUIRE(v[slot] == -9.0f);
            continue;
          }
          const std::size_t t = p - pos0;
          const float* row = &qkv[(b * T + t) * 3 * C];
          REQUIRE(q[((b * H + h) * T + t) * d + e] == row[h * d + e]);
          REQUIRE(k[slot] == row[C + h * d + e]);
          REQUIRE(v[slot] == row[2 * C + h * d + e]);
        }
  std::vector<float> merged(B * T * C);
  cpu::merge_heads(q.data(), merged.data(), B, T, H, d);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t t = 0; t < T; ++t)
      for (std::size_t c = 0; c < C; ++c) REQUIRE(merged[(b * T + t) * C + c] == qkv[(b * T + t) * 3 * C + c]);
}

TEST_CASE("quantize_row_int8 rounds to nearest even and saturates", "[model_kernels]") {
  for (std::size_t n : {1, 7, 64, 100}) {
    const auto x = random_vector(n, 10 + n, -3.0f, 2.0f);
    std::vector<std::int8_t> q(n);
    float s = -1.0f;
    cpu::quantize_row_int8(x.data(), q.data(), &s, n);
    float max_abs = 0.0f;
    for (float v : x) max_abs = std::fmax(max_abs, std::fabs(v));
    REQUIRE(s == max_abs / 127.0f);
    for (std::size_t i = 0; i < n; ++i) {
      REQUIRE(q[i] == quantize_reference(x[i], s));
      REQUIRE(std::fabs(x[i] - s * q[i]) <= 0.5f * s * (1.0f + 1e-6f));  // the s/2 bound
    }
  }
  // Ties go to the even neighbour: with max 127, s = 1 and x / s is x.
  const std::vector<float> ties{127.0f, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, -0.5f, 126.5f};
  std::vector<std::int8_t> q(ties.size());
  float s = 0.0f;
  cpu::quantize_row_int8(ties.data(), q.data(), &s, ties.size());
  REQUIRE(s == 1.0f);
  CHECK(std::vector<int>(q.begin(), q.end()) == std::vector<int>{127, 2, 4, -2, -4, 0, 0, 126});
  // The extreme values land on ±127, never −128, however x / s rounds.
  const std::vector<float> extremes{-0.1f, 0.1f, 0.05f, -0.099999994f};
  std::vector<std::int8_t> e(extremes.size());
  cpu::quantize_row_int8(extremes.data(), e.data(), &s, extremes.size());
  CHECK(e[0] == -127);
  CHECK(e[1] == 127);
  CHECK(e[3] >= -127);
  // An all-zero row: scale 0 and zeros, no division by zero.
  const std::vector<float> zeros(9, 0.0f);
  std::vector<std::int8_t> z(9, 5);
  cpu::quantize_row_int8(zeros.data(), z.data(), &s, 9);
  CHECK(s == 0.0f);
  for (auto v : z) CHECK(v == 0);
}

TEST_CASE("split_qkv_int8 quantizes each cached row", "[model_kernels]") {
  const std::size_t B = 2, T = 4, H = 3, d = 16, C = H * d, cap = 10, pos0 = 5;
  const auto qkv = random_vector(B * T * 3 * C, 20);
  std::vector<float> q(B * H * T * d), qf(B * H * T * d), kf(B * H * cap * d), vf(B * H * cap * d);
  std::vector<std::int8_t> k8(B * H * cap * d), v8(B * H * cap * d);
  std::vector<float> ks(B * H * cap, -1.0f), vs(B * H * cap, -1.0f);
  cpu::split_qkv_int8(qkv.data(), q.data(), k8.data(), ks.data(), v8.data(), vs.data(), B, T, H, d, cap, pos0);
  cpu::split_qkv(qkv.data(), qf.data(), kf.data(), vf.data(), B, T, H, d, cap, pos0);
  CHECK(q == qf);
  for (std::size_t row = 0; row < B * H * cap; ++row) {
    const std::size_t p = row % cap;
    if (p < pos0 || p >= pos0 + T) {
      REQUIRE(ks[row] == -1.0f);
      continue;
    }
    std::vector<std::int8_t> want(d);
    float s = 0.0f;
    cpu::quantize_row_int8(&kf[row * d], want.data(), &s, d);
    REQUIRE(ks[row] == s);
    REQUIRE(std::equal(want.begin(), want.end(), &k8[row * d]));
    cpu::quantize_row_int8(&vf[row * d], want.data(), &s, d);
    REQUIRE(vs[row] == s);
    REQUIRE(std::equal(want.begin(), want.end(), &v8[row * d]));
  }
}

TEST_CASE("attention over the int8 cache equals attention over its dequantized values", "[model_kernels]") {
  // Prefill (causal, q_len == kv_len), a second prefill appended to a filled cache, a decode
  // step at the end of a larger cache, and a non-causal case. From 16 queries the kernel
  // dequantizes the cache and runs the flash kernel; below, it reads the int8 rows per query.
  const std::vector<AttentionShape> shapes{
      {2, 3, 17, 17, 32, 24, 0, true, 1.0f / std::sqrt(32.0f)},
      {1, 2, 20, 50, 32, 64, 30, true, 1.0f / std::sqrt(32.0f)},
      {1, 4, 1, 45, 64, 60, 44, true, 0.125f},
      {2, 2, 5, 30, 16, 30, 0, false, 0.25f},
  };
  std::uint64_t seed = 30;
  for (const auto& sh : shapes) {
    INFO("q_len " << sh.q_len << " kv_len " << sh.kv_len << " causal " << sh.causal);
    const std::size_t rows = sh.batch * sh.heads * sh.kv_capacity, d = sh.head_dim;
    const auto q = random_vector(sh.batch * sh.heads * sh.q_len * d, seed++);
    const auto k = random_vector(rows * d, seed++, -2.0f, 2.0f);
    const auto v = random_vector(rows * d, seed++);
    std::vector<std::int8_t> k8(rows * d), v8(rows * d);
    std::vector<float> ks(rows), vs(rows), kd(rows * d), vd(rows * d);
    for (std::size_t r = 0; r < rows; ++r) {
      cpu::quantize_row_int8(&k[r * d], &k8[r * d], &ks[r], d);
      cpu::quantize_row_int8(&v[r * d], &v8[r * d], &vs[r], d);
      for (std::size_t e = 0; e < d; ++e) {
        kd[r * d + e] = ks[r] * k8[r * d + e];
        vd[r * d + e] = vs[r] * v8[r * d + e];
      }
    }
    std::vector<float> out(q.size());
    cpu::attention_int8_kv(q.data(), k8.data(), ks.data(), v8.data(), vs.data(), out.data(), sh);
    std::vector<double> want(q.size());
    cpu::attention_reference(q.data(), kd.data(), vd.data(), want.data(), sh);
    double worst = 0.0;
    for (std::size_t i = 0; i < out.size(); ++i) {
      const double err = std::fabs(out[i] - want[i]);
      worst = std::isnan(err) ? err : std::max(worst, err);
    }
    INFO("max error " << worst);
    CHECK(worst <= 2e-5);
  }
  AttentionShape bad{1, 1, 3, 2, 8, 2, 0, true, 1.0f};
  std::vector<float> buf(64);
  std::vector<std::int8_t> b8(64);
  CHECK_THROWS_AS(cpu::attention_int8_kv(buf.data(), b8.data(), buf.data(), b8.data(), buf.data(), buf.data(), bad),
                  std::invalid_argument);
}

#if defined(AIOPT_HAVE_CUDA)
#include <cuda_runtime.h>

#include "core/cuda_check.hpp"
#include "kernels/cuda/fused_chains.hpp"
#include "kernels/cuda/layernorm.hpp"
#include "kernels/cuda/softmax.hpp"
#include "support/device_copy.hpp"

// An empty grid or block is an invalid launch configuration: the row launchers must return
// before launching when there is no row or no column, and leave the output untouched.
TEST_CASE("cuda row kernels launch nothing for zero rows or zero width", "[model_kernels][gpu]") {
  namespace gpu = aiopt::kernels::cuda;
  const std::vector<float> sentinel(64, 7.0f);
  auto x = test::upload(sentinel), y = test::upload(sentinel), g = test::upload(sentinel);
  float* stat = g.data();
  for (const auto& [rows, hidden] : {std::pair<std::size_t, std::size_t>{0, 16}, {4, 0}}) {
    INFO("rows " << rows << " hidden " << hidden);
    CHECK_NOTHROW(gpu::layernorm(x.data(), g.data(), g.data(), y.data(), rows, hidden, 1e-5f, nullptr));
    CHECK_NOTHROW(gpu::layernorm_forward(x.data(), g.data(), g.data(), y.data(), stat, stat, rows, hidden, 1e-5f,
                                         nullptr));
    CHECK_NOTHROW(gpu::softmax(x.data(), y.data(), rows, hidden, nullptr));
    CHECK_NOTHROW(gpu::scale_mask_softmax_fused(x.data(), y.data(), rows, hidden, 0.5f, nullptr));
    CHECK_NOTHROW(gpu::bias_dropout_residual_layernorm_fused(x.data(), g.data(), x.data(), g.data(), g.data(),
                                                             y.data(), rows, hidden, cpu::Dropout(0.1f, 1), 1e-5f,
                                                             nullptr));
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    CHECK(test::download(y) == sentinel);
  }
}
#endif
