// The GPT's own kernels (kernels/cpu/embedding.hpp, heads.hpp, kv_int8.hpp) against plain
// references on random inputs: embedding (and its range checks), split_qkv and merge_heads (exact
// copies), int8 row quantization (round to nearest even, saturation, the zero row),
// split_qkv_int8, and attention over the int8 cache; and ([gpu]) their CUDA twins
// (kernels/cuda/embedding.hpp, heads.hpp, kv_int8.hpp) against the CPU ones.
//
// CPU tolerances: the copies and the quantization are exact (bit-equal); attention_int8_kv is
// compared with the double reference over the same dequantized keys and values, 2e-5 absolute
// (fp32 dot products of head_dim <= 64 terms of magnitude <= 1, ~64 · 6e-8 ≈ 4e-6, and the exp
// polynomial's 2e-7 relative error; outputs are convex combinations of values in [-1, 1]).
//
// CUDA tolerances:
//   embedding, split_qkv, merge_heads: bit-exact (copies, and one fp32 add of the same operands);
//   split_qkv_int8: q bit-exact; scales bit-exact (max|x| is exact, and max/127 one IEEE division
//   on both sides); int8 values within 1: both compute x/s as an IEEE division and round to
//   nearest even, so they agree unless the compilers evaluate x/s differently, which can move a
//   value that lands on a rounding tie (x/s = k + 1/2 in float) to the other neighbour, never
//   further; a crafted row of exact ties must agree exactly, with the even neighbours;
//   attention_int8_kv: both read the same int8 data, so they differ only by fp32 rounding. With
//   u = 2^-24, a score s_j = scale·Σ_d q_d·k_jd (k_jd dequantized) is within (d + 3)·u·S of exact
//   on either side, S = scale·Σ_d|q_d·k_jd|, so the two differ by δ <= 2·(d + 3)·u·max S. That
//   moves each softmax weight by a factor within e^(±2δ), plus the exp errors (the CPU's exp_poly
//   3e-7, CUDA's expf 2 ulp, and the online softmax's rescalings, one expf each per tile of 32
//   keys): r = 4δ + 4e-6 relative in all. Reweighting a convex combination of v rows by factors
//   within 1 ± r moves it by at most 2r·max|v|. Summing kv_len weighted rows and the weights in
//   fp32 adds at most 2·(kv_len + 3)·u·max|v| per side. So
//     |gpu − cpu| <= max|v|·(2r + 4·(kv_len + 3)·u).
// With CUDA ([gpu]): the row kernels' launchers with zero rows or zero width launch nothing.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "core/rng.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/heads.hpp"
#include "kernels/cpu/kv_int8.hpp"
#include "support/error_metric.hpp"
#include "support/random.hpp"

#ifdef AIOPT_HAVE_CUDA
#include <cuda_runtime.h>

#include "core/cuda_check.hpp"
#include "core/memory.hpp"
#include "kernels/cuda/embedding.hpp"
#include "kernels/cuda/fused_chains.hpp"
#include "kernels/cuda/heads.hpp"
#include "kernels/cuda/kv_int8.hpp"
#include "kernels/cuda/layernorm.hpp"
#include "kernels/cuda/softmax.hpp"
#include "support/device_copy.hpp"
#endif

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
using kernels::AttentionShape;
using aiopt::test::random_vector;

namespace {

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

// ---- the CUDA twins against the CPU kernels

#ifdef AIOPT_HAVE_CUDA

using aiopt::test::download, aiopt::test::upload;

namespace gpu = aiopt::kernels::cuda;

namespace {

using aiopt::test::differing;

constexpr double u = aiopt::test::fp32_unit_roundoff;

std::vector<std::int8_t> random_int8(std::size_t n, std::uint64_t seed) {
  rng::Stream s(seed);
  std::vector<std::int8_t> v(n);
  for (auto& x : v) x = static_cast<std::int8_t>(static_cast<int>(s.next_bits() % 255) - 127);
  return v;
}

struct Heads {
  std::size_t batch, len, heads, head_dim, capacity, pos0;
  std::size_t channels() const { return heads * head_dim; }
  std::size_t qkv_size() const { return batch * len * 3 * channels(); }
  std::size_t q_size() const { return batch * heads * len * head_dim; }
  std::size_t cache_rows() const { return batch * heads * capacity; }
};
// head_dim 16: float4 paths; 5: scalar paths; 37 and 128: rows of one and several lanes' worth
// for the int8 warps. pos0 > 0 and capacity > pos0 + len, so untouched cache rows show.
const std::vector<Heads> head_shapes = {{2, 7, 3, 16, 20, 4}, {2, 7, 3, 5, 20, 4}, {1, 5, 2, 37, 9, 3},
                                        {2, 3, 4, 128, 8, 5}};

}  // namespace

// ---- layout ops

TEST_CASE("cuda embedding equals the CPU's, and clamps bad tokens to vocab - 1", "[model_kernels][gpu]") {
  const std::size_t batch = 3, len = 17, pos0 = 5, vocab = 256, positions = 64;
  for (std::size_t channels : {std::size_t{96}, std::size_t{33}}) {
    INFO("channels " << channels);
    const auto wte = random_vector(vocab * channels, 1);
    const auto wpe = random_vector(positions * channels, 2);
    rng::Stream s(3);
    std::vector<std::int32_t> tokens(batch * len);
    for (auto& t : tokens) t = static_cast<std::int32_t>(s.next_bits() % vocab);
    auto d_wte = upload(wte), d_wpe = upload(wpe);
    std::vector<float> want(batch * len * channels);
    cpu::embedding(tokens.data(), wte.data(), wpe.data(), want.data(), batch, len, pos0, vocab, positions, channels);
    auto d_tokens = upload(tokens);
    auto d_y = upload(std::vector<float>(want.size(), std::numeric_limits<float>::quiet_NaN()));
    gpu::embedding(d_tokens.data(), d_wte.data(), d_wpe.data(), d_y.data(), batch, len, pos0, vocab, positions, channels, nullptr);
    CHECK(differing(download(d_y), want) == 0);

    // Out-of-range tokens read row vocab − 1 instead of memory outside wte.
    auto bad = tokens;
    bad[0] = -1;
    bad[5] = static_cast<std::int32_t>(vocab);
    bad[len + 2] = std::numeric_limits<std::int32_t>::max();
    auto clamped = bad;
    for (auto& t : clamped)
      if (t < 0 || static_cast<std::size_t>(t) >= vocab) t = static_cast<std::int32_t>(vocab - 1);
    cpu::embedding(clamped.data(), wte.data(), wpe.data(), want.data(), batch, len, pos0, vocab, positions, channels);
    auto d_bad = upload(bad);
    gpu::embedding(d_bad.data(), d_wte.data(), d_wpe.data(), d_y.data(), batch, len, pos0, vocab, positions, channels, nullptr);
    CHECK(differing(download(d_y), want) == 0);
  }
}

TEST_CASE("cuda split_qkv and merge_heads equal the CPU's, bit for bit", "[model_kernels][gpu]") {
  for (const Heads& h : head_shapes) {
    INFO("batch " << h.batch << " len " << h.len << " heads " << h.heads << " head_dim " << h.head_dim);
    const auto qkv = random_vector(h.qkv_size(), 10 + h.head_dim);
    // Caches start with other values: rows outside [pos0, pos0 + len) must keep them.
    const auto k0 = random_vector(h.cache_rows() * h.head_dim, 11), v0 = random_vector(h.cache_rows() * h.head_dim, 12);
    std::vector<float> q(h.q_size()), k = k0, v = v0;
    cpu::split_qkv(qkv.data(), q.data(), k.data(), v.data(), h.batch, h.len, h.heads, h.head_dim, h.capacity, h.pos0);
    auto d_qkv = upload(qkv), d_k = upload(k0), d_v = upload(v0);
    auto d_q = upload(std::vector<float>(q.size(), std::numeric_limits<float>::quiet_NaN()));
    gpu::split_qkv(d_qkv.data(), d_q.data(), d_k.data(), d_v.data(), h.batch, h.len, h.heads, h.head_dim, h.capacity,
                   h.pos0, nullptr);
    CHECK(differing(download(d_q), q) == 0);
    CHECK(differing(download(d_k), k) == 0);
    CHECK(differing(download(d_v), v) == 0);

    // merge_heads: (batch, heads, len, head_dim) -> (batch, len, heads·head_dim).
    const auto x = random_vector(h.q_size(), 13 + h.head_dim);
    std::vector<float> y(x.size());
    cpu::merge_heads(x.data(), y.data(), h.batch, h.len, h.heads, h.head_dim);
    auto d_x = upload(x);
    auto d_y = upload(std::vector<float>(y.size(), std::numeric_limits<float>::quiet_NaN()));
    gpu::merge_heads(d_x.data(), d_y.data(), h.batch, h.len, h.heads, h.head_dim, nullptr);
    CHECK(differing(download(d_y), y) == 0);
  }
}

// ---- the int8 KV cache

TEST_CASE("cuda split_qkv_int8 quantizes like the CPU", "[model_kernels][gpu]") {
  for (const Heads& h : head_shapes) {
    INFO("batch " << h.batch << " len " << h.len << " heads " << h.heads << " head_dim " << h.head_dim);
    auto qkv = random_vector(h.qkv_size(), 20 + h.head_dim, -3.0f, 3.0f);
    const std::size_t C = h.channels();
    // (b 0, t 0, h 0): an all-zero k row, scale 0.
    std::fill_n(qkv.begin() + C, h.head_dim, 0.0f);
    // The last (b, t, h): a v row of exact ties. Its max is 127, so s = 1 and x/s = x: 2.5, −3.5,
    // 0.5 and −126.5 round to the even 2, −4, 0 and −126.
    float* tie = qkv.data() + ((h.batch - 1) * h.len + h.len - 1) * 3 * C + 2 * C + (h.heads - 1) * h.head_dim;
    const std::vector<float> ties = {127.0f, 2.5f, -3.5f, 0.5f, -126.5f};
    for (std::size_t d = 0; d < h.head_dim; ++d) tie[d] = d < ties.size() ? ties[d] : (d % 2 ? 1.5f : -0.5f);

    const std::size_t rows = h.cache_rows(), values = rows * h.head_dim;
    const auto k8_0 = random_int8(values, 21), v8_0 = random_int8(values, 22);
    const auto ks0 = random_vector(rows, 23, 0.0f, 1.0f), vs0 = random_vector(rows, 24, 0.0f, 1.0f);
    std::vector<float> q(h.q_size()), ks = ks0, vs = vs0;
    std::vector<std::int8_t> k8 = k8_0, v8 = v8_0;
    cpu::split_qkv_int8(qkv.data(), q.data(), k8.data(), ks.data(), v8.data(), vs.data(), h.batch, h.len, h.heads,
                        h.head_dim, h.capacity, h.pos0);

    auto d_qkv = upload(qkv), d_ks = upload(ks0), d_vs = upload(vs0);
    auto d_k8 = upload(k8_0), d_v8 = upload(v8_0);
    auto d_q = upload(std::vector<float>(q.size(), std::numeric_limits<float>::quiet_NaN()));
    gpu::split_qkv_int8(d_qkv.data(), d_q.data(), d_k8.data(), d_ks.data(), d_v8.data(), d_vs.data(), h.batch, h.len,
                        h.heads, h.head_dim, h.capacity, h.pos0, nullptr);
    CHECK(differing(download(d_q), q) == 0);
    CHECK(differing(download(d_ks), ks) == 0);
    CHECK(differing(download(d_vs), vs) == 0);
    for (const auto& [got, want] : {std::pair{download(d_k8), k8}, std::pair{download(d_v8), v8}}) {
      std::size_t off_by_one = 0, worse = 0;
      for (std::size_t i = 0; i < values; ++i) {
        const int diff = std::abs(int{got[i]} - int{want[i]});
        off_by_one += diff == 1;
        worse += diff > 1;
      }
      INFO(off_by_one << " values differ by 1 (rounding ties)");
      CHECK(worse == 0);
    }
    // The zero row and the row of ties, exactly.
    const std::size_t zero_slot = h.pos0;  // (b 0, h 0, pos0)
    CHECK(ks[zero_slot] == 0.0f);
    CHECK(download(d_ks)[zero_slot] == 0.0f);
    const std::size_t tie_slot = ((h.batch - 1) * h.heads + h.heads - 1) * h.capacity + h.pos0 + h.len - 1;
    const auto gv8 = download(d_v8);
    CHECK(download(d_vs)[tie_slot] == 1.0f);
    const std::vector<int> even = {127, 2, -4, 0, -126};
    for (std::size_t d = 0; d < h.head_dim; ++d) {
      const int want = d < even.size() ? even[d] : (d % 2 ? 2 : 0);  // 1.5 -> 2, −0.5 -> −0
      INFO("tie row, d = " << d);
      CHECK(int{gv8[tie_slot * h.head_dim + d]} == want);
      CHECK(int{v8[tie_slot * h.head_dim + d]} == want);
    }
  }
}

namespace {

struct AttentionCase {
  std::size_t batch, heads, q_len, kv_len, capacity, head_dim, q_offset;
  bool causal;
};

// The int8 cache of one attention call: rows [0, kv_len) quantized from random values; rows from
// kv_len to capacity hold huge values (scale 1e3, bytes ±127) that wreck the output if read.
struct Int8Cache {
  std::vector<std::int8_t> k8, v8;
  std::vector<float> k_scale, v_scale;
};

Int8Cache make_cache(const AttentionCase& c, std::uint64_t seed) {
  const std::size_t rows = c.batch * c.heads * c.capacity, d = c.head_dim;
  Int8Cache cache{std::vector<std::int8_t>(rows * d), std::vector<std::int8_t>(rows * d), std::vector<float>(rows),
                  std::vector<float>(rows)};
  const auto k = random_vector(rows * d, seed), v = random_vector(rows * d, seed + 1);
  for (std::size_t r = 0; r < rows; ++r) {
    if (r % c.capacity < c.kv_len) {
      cpu::quantize_row_int8(k.data() + r * d, cache.k8.data() + r * d, &cache.k_scale[r], d);
      cpu::quantize_row_int8(v.data() + r * d, cache.v8.data() + r * d, &cache.v_scale[r], d);
    } else {
      std::fill_n(cache.k8.begin() + r * d, d, std::int8_t{127});
      std::fill_n(cache.v8.begin() + r * d, d, std::int8_t{-127});
      cache.k_scale[r] = cache.v_scale[r] = 1e3f;
    }
  }
  return cache;
}

// The file comment's bound for one call: max|v|·(2r + 4·(kv_len + 3)·u), r = 4δ + 4e-6.
double attention_tolerance(const AttentionShape& s, const std::vector<float>& q, const Int8Cache& c) {
  const std::size_t d = s.head_dim;
  double max_s = 0.0, max_v = 0.0;
  for (std::size_t bh = 0; bh < s.batch * s.heads; ++bh)
    for (std::size_t i = 0; i < s.q_len; ++i) {
      const std::size_t keys = s.causal ? s.q_offset + i + 1 : s.kv_len;
      const float* qr = q.data() + (bh * s.q_len + i) * d;
      for (std::size_t j = 0; j < keys; ++j) {
        const std::size_t row = bh * s.kv_capacity + j;
        double magnitude = 0.0;
        for (std::size_t x = 0; x < d; ++x) magnitude += std::fabs(static_cast<double>(qr[x]) * c.k8[row * d + x]);
        max_s = std::max(max_s, s.scale * c.k_scale[row] * magnitude);
      }
    }
  for (std::size_t bh = 0; bh < s.batch * s.heads; ++bh)
    for (std::size_t j = 0; j < s.kv_len; ++j) {
      const std::size_t row = bh * s.kv_capacity + j;
      for (std::size_t x = 0; x < d; ++x)
        max_v = std::max(max_v, std::fabs(static_cast<double>(c.v_scale[row]) * c.v8[row * d + x]));
    }
  const double delta = 2.0 * (static_cast<double>(d) + 3) * u * max_s;
  const double r = 4.0 * delta + 4e-6;
  return max_v * (2.0 * r + 4.0 * (static_cast<double>(s.kv_len) + 3) * u);
}

}  // namespace

TEST_CASE("cuda attention_int8_kv matches the CPU for decode and prefill", "[model_kernels][gpu]") {
  const std::vector<AttentionCase> cases = {
      {2, 3, 1, 2048, 2100, 64, 2047, true},  // decode, a long cache
      {2, 2, 1, 1, 16, 64, 0, true},          // decode of the first token: one key
      {1, 4, 1, 777, 800, 128, 776, true},    // decode, head_dim 128
      {1, 2, 100, 100, 128, 64, 0, true},     // causal prefill
      {2, 2, 8, 40, 48, 32, 32, true},        // a chunk of prefill after 32 cached positions
      {1, 3, 5, 77, 77, 37, 0, false},        // no mask; head_dim not a multiple of 4
      {1, 1, 3, 50, 64, 300, 47, true},       // head_dim over 256: two slices
      {1, 2, 4, 33, 40, 16, 29, true},        // head_dim 16: one register per lane
  };
  for (const AttentionCase& c : cases) {
    const AttentionShape shape{c.batch, c.heads, c.q_len, c.kv_len, c.head_dim, c.capacity, c.q_offset, c.causal,
                               1.0f / std::sqrt(static_cast<float>(c.head_dim))};
    INFO("batch " << c.batch << " heads " << c.heads << " q_len " << c.q_len << " kv_len " << c.kv_len << " capacity "
                  << c.capacity << " head_dim " << c.head_dim << " q_offset " << c.q_offset
                  << (c.causal ? " causal" : ""));
    // q in [−3, 3]: scores of a few units, so the softmax weights are far from uniform.
    const auto q = random_vector(c.batch * c.heads * c.q_len * c.head_dim, 30 + c.kv_len, -3.0f, 3.0f);
    const Int8Cache cache = make_cache(c, 40 + c.head_dim);
    std::vector<float> want(q.size());
    cpu::attention_int8_kv(q.data(), cache.k8.data(), cache.k_scale.data(), cache.v8.data(), cache.v_scale.data(),
                           want.data(), shape);

    auto d_q = upload(q), d_ks = upload(cache.k_scale), d_vs = upload(cache.v_scale);
    auto d_k8 = upload(cache.k8), d_v8 = upload(cache.v8);
    auto d_out = upload(std::vector<float>(q.size(), std::numeric_limits<float>::quiet_NaN()));
    gpu::attention_int8_kv(d_q.data(), d_k8.data(), d_ks.data(), d_v8.data(), d_vs.data(), d_out.data(), shape,
                           nullptr);
    const auto got = download(d_out);
    double worst = 0.0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
      worst = std::isnan(e) ? std::numeric_limits<double>::infinity() : std::max(worst, e);
      if (std::isinf(worst)) break;
    }
    const double tolerance = attention_tolerance(shape, q, cache);
    INFO("max abs error " << worst << ", tolerance " << tolerance);
    CHECK(worst <= tolerance);
  }
}

TEST_CASE("cuda attention_int8_kv rejects a bad shape", "[model_kernels][gpu]") {
  // Causal queries past the last key: AttentionShape::validate throws before any launch.
  const AttentionShape shape{1, 1, 2, 4, 8, 4, 3, true, 0.35f};
  CHECK_THROWS_AS(gpu::attention_int8_kv(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, shape, nullptr),
                  std::invalid_argument);
}

// An empty grid or block is an invalid launch configuration: the row launchers must return
// before launching when there is no row or no column, and leave the output untouched.
TEST_CASE("cuda row kernels launch nothing for zero rows or zero width", "[model_kernels][gpu]") {
  const std::vector<float> sentinel(64, 7.0f);
  auto x = upload(sentinel), y = upload(sentinel), g = upload(sentinel);
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
    CHECK(download(y) == sentinel);
  }
}

#endif  // AIOPT_HAVE_CUDA
