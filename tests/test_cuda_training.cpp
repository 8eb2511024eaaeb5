// The CUDA training kernels (kernels/cuda/layernorm.hpp, activation.hpp, embedding.hpp, heads.hpp,
// cross_entropy.hpp, elementwise.hpp, precision.hpp, attention_backward.hpp,
// optimizer.hpp, gemm.hpp's linear_backward) against their CPU twins on random inputs, the
// flash backward against the naive one, and determinism (two runs bit-identical). All cases are
// [gpu]; without CUDA in the build they compile away, and the runner skips "[gpu]" with the
// reason.
//
// Tolerances, with u = 2^-24 the unit roundoff of fp32:
//   merge_qkv, split_heads, round_through, value_census, embedding_backward: exact. The first
//   three are copies or one IEEE rounding to nearest even; the census counts; the embedding
//   gradient adds the same dy rows in the same (token) order as the CPU, on the same start values.
//   Sums (bias_backward, dgamma/dbeta, linear_backward, cross-entropy): a recursive fp32 sum of
//   t terms is within (t + 1)·u·Σ|terms| of exact in any order, each term carrying a few more
//   u of its own; two sides: |gpu − cpu| <= 4·(t + 4)·u·Σ|terms|, with Σ|terms| computed here in
//   double from the absolute values.
//   Pointwise math (gelu backward, optimizers): a handful of roundings and one tanhf/sqrtf (2
//   ulp), stated at each case.
//   Attention: every output is a sum over at most N keys or queries of products of softmax
//   weights (relative error about (d + 8)·u from the score dot products and expf) with fp32
//   dot products over d; first order that is (N + d + 8)·u relative to the sum of absolute
//   terms, which for these inputs (uniform in [-1, 1], scale 1/√d) is within a few times max|ref|;
//   the checks allow 32·(N + d + 8)·u·max|ref| against the float64 reference. A wrong index or
//   mask gives errors of order max|ref|, thousands of times that.
#include <catch2/catch.hpp>

#ifdef AIOPT_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/cuda_check.hpp"
#include "core/dtype.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/attention_backward.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/heads.hpp"
#include "kernels/cpu/layernorm.hpp"
#include "kernels/cpu/optimizer.hpp"
#include "kernels/cpu/precision.hpp"
#include "kernels/cuda/activation.hpp"
#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/attention_backward.hpp"
#include "kernels/cuda/cross_entropy.hpp"
#include "kernels/cuda/elementwise.hpp"
#include "kernels/cuda/embedding.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/heads.hpp"
#include "kernels/cuda/layernorm.hpp"
#include "kernels/cuda/optimizer.hpp"
#include "kernels/cuda/precision.hpp"
#include "support/device_copy.hpp"
#include "support/random.hpp"

using aiopt::test::download;
using aiopt::test::random_vector;
using aiopt::test::upload;

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
namespace gpu = aiopt::kernels::cuda;
using aiopt::kernels::AttentionShape;

namespace {

constexpr double u = 1.0 / 16777216.0;  // 2^-24

// Elements that differ (a NaN on either side counts).
std::size_t differing(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += !(a[i] == b[i]);
  return n;
}

// The same, except that a NaN equals a NaN: for rounding NaN inputs.
std::size_t differing_nan_equal(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += !(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])));
  return n;
}

// Elements with |got − want| > tol[i] (or a NaN): 0 when all are close.
template <class Want>
std::size_t outside(const std::vector<float>& got, const std::vector<Want>& want, const std::vector<double>& tol) {
  REQUIRE(got.size() == want.size());
  REQUIRE(tol.size() == want.size());
  std::size_t n = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double diff = std::abs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (!(diff <= tol[i])) {
      if (n < 5) UNSCOPED_INFO("element " << i << ": got " << got[i] << ", want " << want[i] << ", tol " << tol[i]);
      ++n;
    }
  }
  return n;
}

template <class Want>
std::size_t outside(const std::vector<float>& got, const std::vector<Want>& want, double tol) {
  return outside(got, want, std::vector<double>(want.size(), tol));
}

// Tolerance of a sum of t terms on both sides, per element, from Σ|terms|.
std::vector<double> sum_tolerance(const std::vector<double>& abs_sums, std::size_t terms) {
  std::vector<double> tol(abs_sums.size());
  for (std::size_t i = 0; i < tol.size(); ++i) tol[i] = 4.0 * static_cast<double>(terms + 4) * u * abs_sums[i];
  return tol;
}

template <class T>
double max_abs(const std::vector<T>& v) {
  double m = 0.0;
  for (const T& x : v) m = std::max(m, std::abs(static_cast<double>(x)));
  return m;
}

std::vector<std::int32_t> random_tokens(std::size_t n, std::size_t vocab, std::uint64_t seed) {
  rng::Stream s(seed);
  std::vector<std::int32_t> t(n);
  for (auto& x : t) x = static_cast<std::int32_t>(s.next_bits() % vocab);
  return t;
}

}  // namespace

// ---- layernorm

TEST_CASE("cuda layernorm_forward and layernorm_backward match the CPU", "[cuda_training][gpu]") {
  // 130 rows: three 64-row chunks of the column sums, the last partial; widths below and above
  // one block's 256 threads, and one not a multiple of 32.
  for (std::size_t hidden : {std::size_t{37}, std::size_t{384}}) {
    const std::size_t rows = 130;
    INFO("hidden " << hidden);
    const float eps = 1e-5f;
    const auto x = random_vector(rows * hidden, 1, -2.0f, 3.0f);  // an offset mean
    const auto gamma = random_vector(hidden, 2, 0.5f, 1.5f);
    const auto beta = random_vector(hidden, 3);
    const auto dy = random_vector(rows * hidden, 4);
    const auto dgamma0 = random_vector(hidden, 5), dbeta0 = random_vector(hidden, 6);

    std::vector<float> y(rows * hidden), mean(rows), rstd(rows);
    cpu::layernorm_forward(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(), rows, hidden, eps);
    auto d_x = upload(x), d_gamma = upload(gamma), d_beta = upload(beta), d_dy = upload(dy);
    auto d_y = upload(std::vector<float>(y.size(), NAN));
    auto d_mean = upload(std::vector<float>(rows, NAN)), d_rstd = upload(std::vector<float>(rows, NAN));
    gpu::layernorm_forward(d_x.data(), d_gamma.data(), d_beta.data(), d_y.data(), d_mean.data(), d_rstd.data(), rows,
                           hidden, eps, nullptr);
    // mean: a sum of `hidden` terms (<= 3); rstd: the variance likewise, then one sqrt and one
    // division (1/sqrt with 2 roundings besides); y: x̂ carries the mean's and rstd's errors
    // times |x − mean|·rstd·gamma, the mean's error (<= hidden·u·3) times rstd·gamma, then 3 roundings.
    std::vector<double> abs_x(rows, 0.0);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < hidden; ++j) abs_x[r] += std::abs(x[r * hidden + j]) / static_cast<double>(hidden);
    CHECK(outside(download(d_mean), mean, sum_tolerance(abs_x, hidden)) == 0);
    std::vector<double> rstd_tol(rows);
    for (std::size_t r = 0; r < rows; ++r) rstd_tol[r] = 8.0 * static_cast<double>(hidden + 8) * u * rstd[r];
    CHECK(outside(download(d_rstd), rstd, rstd_tol) == 0);
    std::vector<double> y_tol(rows * hidden);
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t j = 0; j < hidden; ++j)
        y_tol[r * hidden + j] = 8.0 * static_cast<double>(hidden + 8) * u *
                                ((std::abs(x[r * hidden + j] - mean[r]) * rstd[r] + 1.0) * gamma[j] + std::abs(beta[j]));
    CHECK(outside(download(d_y), y, y_tol) == 0);

    // The backward from the CPU's saved statistics on both sides, against the float64 reference.
    auto d_mean_cpu = upload(mean), d_rstd_cpu = upload(rstd);
    std::vector<float> dx(rows * hidden), dgamma = dgamma0, dbeta = dbeta0;
    cpu::layernorm_backward_reference(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), dx.data(),
                                      dgamma.data(), dbeta.data(), rows, hidden);
    auto d_dx = upload(std::vector<float>(dx.size(), NAN));
    auto d_dgamma = upload(dgamma0), d_dbeta = upload(dbeta0);
    gpu::layernorm_backward(d_dy.data(), d_x.data(), d_gamma.data(), d_mean_cpu.data(), d_rstd_cpu.data(), d_dx.data(),
                            d_dgamma.data(), d_dbeta.data(), rows, hidden, nullptr);
    // dx = rstd·(g − mean(g) − x̂·mean(g·x̂)): two row sums of `hidden` terms |g|, |g·x̂|, scaled
    // by rstd and x̂; Σ|terms| per element <= rstd·(|g| + mean|g| + |x̂|·mean|g·x̂|) summed with
    // the row's means, bounded here per row.
    std::vector<double> dx_abs(rows * hidden);
    for (std::size_t r = 0; r < rows; ++r) {
      double mg = 0.0, mgx = 0.0;
      for (std::size_t j = 0; j < hidden; ++j) {
        const double xhat = (x[r * hidden + j] - mean[r]) * static_cast<double>(rstd[r]);
        const double g = static_cast<double>(dy[r * hidden + j]) * gamma[j];
        mg += std::abs(g) / static_cast<double>(hidden);
        mgx += std::abs(g * xhat) / static_cast<double>(hidden);
      }
      for (std::size_t j = 0; j < hidden; ++j) {
        const double xhat = (x[r * hidden + j] - mean[r]) * static_cast<double>(rstd[r]);
        const double g = static_cast<double>(dy[r * hidden + j]) * gamma[j];
        dx_abs[r * hidden + j] = rstd[r] * (std::abs(g) + mg + std::abs(xhat) * mgx);
      }
    }
    CHECK(outside(download(d_dx), dx, sum_tolerance(dx_abs, hidden)) == 0);
    std::vector<double> dgamma_abs(hidden), dbeta_abs(hidden);
    for (std::size_t j = 0; j < hidden; ++j) {
      dgamma_abs[j] = std::abs(dgamma0[j]);
      dbeta_abs[j] = std::abs(dbeta0[j]);
      for (std::size_t r = 0; r < rows; ++r) {
        const double xhat = (x[r * hidden + j] - mean[r]) * static_cast<double>(rstd[r]);
        dgamma_abs[j] += std::abs(dy[r * hidden + j] * xhat);
        dbeta_abs[j] += std::abs(dy[r * hidden + j]);
      }
    }
    CHECK(outside(download(d_dgamma), dgamma, sum_tolerance(dgamma_abs, rows)) == 0);
    CHECK(outside(download(d_dbeta), dbeta, sum_tolerance(dbeta_abs, rows)) == 0);
  }
}

// ---- pointwise and layout

TEST_CASE("cuda gelu_tanh_backward matches the float64 reference", "[cuda_training][gpu]") {
  const std::size_t n = 10007;
  const auto x = random_vector(n, 7, -5.0f, 5.0f);
  const auto dy = random_vector(n, 8);
  std::vector<float> want(n);
  cpu::gelu_tanh_backward_reference(x.data(), dy.data(), want.data(), n);
  auto d_x = upload(x), d_dy = upload(dy);
  auto d_dx = upload(std::vector<float>(n, NAN));
  gpu::gelu_tanh_backward(d_x.data(), d_dy.data(), d_dx.data(), n, nullptr);
  // tanhf is within 2 ulp, its argument within 4 roundings of exact (relative, and the tanh's
  // slope is at most 1); gelu' = 0.5(1 + t) + 0.5·x·(1 − t²)·k·(1 + 3c·x²) propagates an error
  // δ in t by at most 1 + |x|·(1 + 3c·x²)·k·|t| and δ in the argument by |x|·(1 + 3c·x²)·k; with
  // 8 more roundings: 32·u·(1 + x²)·(1 + |x|)·|dy| covers both for |x| <= 5.
  std::vector<double> tol(n);
  for (std::size_t i = 0; i < n; ++i)
    tol[i] = 32.0 * u * (1.0 + x[i] * x[i]) * (1.0 + std::abs(x[i])) * std::abs(dy[i]) + 1e-30;
  CHECK(outside(download(d_dx), want, tol) == 0);
}

TEST_CASE("cuda merge_qkv and split_heads equal the CPU's, bit for bit", "[cuda_training][gpu]") {
  struct Shape {
    std::size_t batch, len, heads, head_dim;
  };
  for (const Shape& s : {Shape{2, 7, 3, 16}, Shape{1, 5, 2, 37}, Shape{2, 3, 4, 128}}) {
    INFO("batch " << s.batch << " len " << s.len << " heads " << s.heads << " head_dim " << s.head_dim);
    const std::size_t size = s.batch * s.heads * s.len * s.head_dim;
    const auto q = random_vector(size, 10), k = random_vector(size, 11), v = random_vector(size, 12);
    std::vector<float> qkv(3 * size);
    cpu::merge_qkv(q.data(), k.data(), v.data(), qkv.data(), s.batch, s.len, s.heads, s.head_dim);
    auto d_q = upload(q), d_k = upload(k), d_v = upload(v);
    auto d_qkv = upload(std::vector<float>(qkv.size(), NAN));
    gpu::merge_qkv(d_q.data(), d_k.data(), d_v.data(), d_qkv.data(), s.batch, s.len, s.heads, s.head_dim, nullptr);
    CHECK(differing(download(d_qkv), qkv) == 0);

    const auto x = random_vector(size, 13);
    std::vector<float> y(size);
    cpu::split_heads(x.data(), y.data(), s.batch, s.len, s.heads, s.head_dim);
    auto d_x = upload(x);
    auto d_y = upload(std::vector<float>(size, NAN));
    gpu::split_heads(d_x.data(), d_y.data(), s.batch, s.len, s.heads, s.head_dim, nullptr);
    CHECK(differing(download(d_y), y) == 0);
  }
}

TEST_CASE("cuda embedding_backward equals the CPU's, bit for bit", "[cuda_training][gpu]") {
  // 600 tokens over a vocabulary of 50: every row repeats many times, across several 256-token
  // scan chunks; channels 33 (scalar tail) and 300 (more channels than threads).
  const std::size_t batch = 4, len = 150, vocab = 50;
  for (std::size_t channels : {std::size_t{33}, std::size_t{300}}) {
    INFO("channels " << channels);
    const auto tokens = random_tokens(batch * len, vocab, 20);
    const auto dy = random_vector(batch * len * channels, 21);
    auto dwte = random_vector(vocab * channels, 22);
    auto dwpe = random_vector(len * channels, 23);
    auto d_tokens = upload(tokens);
    auto d_dy = upload(dy), d_dwte = upload(dwte), d_dwpe = upload(dwpe);
    cpu::embedding_backward(tokens.data(), dy.data(), dwte.data(), dwpe.data(), batch, len, vocab, channels);
    gpu::embedding_backward(d_tokens.data(), d_dy.data(), d_dwte.data(), d_dwpe.data(), batch, len, vocab, channels,
                            nullptr);
    CHECK(differing(download(d_dwte), dwte) == 0);
    CHECK(differing(download(d_dwpe), dwpe) == 0);
  }
}

TEST_CASE("cuda softmax_cross_entropy matches the float64 reference, in place too", "[cuda_training][gpu]") {
  const std::size_t rows = 37, vocab = 1000;
  const float grad_scale = 0.25f;
  const auto logits = random_vector(rows * vocab, 30, -6.0f, 6.0f);
  auto targets = random_tokens(rows, vocab, 31);
  targets[3] = -1;  // ignored rows: loss 0, gradient 0
  targets[20] = -100;
  std::vector<float> losses(rows), dlogits(rows * vocab);
  cpu::softmax_cross_entropy_reference(logits.data(), targets.data(), losses.data(), dlogits.data(), rows, vocab,
                                       grad_scale);
  // loss = log Σ e^(x − max) + max − x_t: the sum of `vocab` terms <= 1 (each within 2 ulp),
  // its log within 1 ulp plus the relative error of the sum, and two additions of values <= 6
  // plus the log (<= log vocab + 12).
  const double loss_tol = 4.0 * (vocab + 4) * u + 8.0 * u * 24.0;
  // dlogits = (p − onehot)·grad_scale, p = e^(x − max)/Σ: relative error of p within
  // (vocab + 8)·u; the difference with 1 and the scaling add 2 roundings of values <= 1.
  const double grad_tol = (4.0 * (vocab + 8) * u + 4.0 * u) * grad_scale;

  auto d_logits = upload(logits);
  auto d_targets = upload(targets);
  auto d_losses = upload(std::vector<float>(rows, NAN));
  auto d_dlogits = upload(std::vector<float>(rows * vocab, NAN));
  gpu::softmax_cross_entropy(d_logits.data(), d_targets.data(), d_losses.data(), d_dlogits.data(), rows, vocab,
                             grad_scale, nullptr);
  const auto got_losses = download(d_losses);
  CHECK(outside(got_losses, losses, loss_tol) == 0);
  CHECK(got_losses[3] == 0.0f);
  CHECK(outside(download(d_dlogits), dlogits, grad_tol) == 0);

  // dlogits aliasing logits: the same results, the logits overwritten by their gradient.
  auto d_losses2 = upload(std::vector<float>(rows, NAN));
  gpu::softmax_cross_entropy(d_logits.data(), d_targets.data(), d_losses2.data(), d_logits.data(), rows, vocab,
                             grad_scale, nullptr);
  CHECK(differing(download(d_losses2), got_losses) == 0);
  CHECK(differing(download(d_logits), download(d_dlogits)) == 0);

  // Losses alone: dlogits null.
  auto d_logits3 = upload(logits);
  auto d_losses3 = upload(std::vector<float>(rows, NAN));
  gpu::softmax_cross_entropy(d_logits3.data(), d_targets.data(), d_losses3.data(), nullptr, rows, vocab, grad_scale,
                             nullptr);
  CHECK(differing(download(d_losses3), got_losses) == 0);
  CHECK(differing(download(d_logits3), logits) == 0);
}

TEST_CASE("cuda round_through and value_census equal the CPU's", "[cuda_training][gpu]") {
  auto x = random_vector(5000, 40, -80000.0f, 80000.0f);  // beyond f16's 65504: overflow to inf
  const auto small = random_vector(1000, 41, -1e-6f, 1e-6f);  // f16 subnormals and underflow
  std::copy(small.begin(), small.end(), x.begin());
  x[1000] = 0.0f;
  x[1001] = -0.0f;
  x[1002] = std::numeric_limits<float>::infinity();
  x[1003] = -std::numeric_limits<float>::infinity();
  x[1004] = std::numeric_limits<float>::quiet_NaN();
  x[1005] = 65519.0f;  // rounds to 65504 in f16
  x[1006] = 65520.0f;  // the tie that rounds to inf in f16
  x[1007] = 3.4e38f;   // past bf16's largest finite value (3.39e38) by over half a step: inf
  x[1008] = 1.0f + 1.0f / 256.0f;  // a bf16 tie, to even
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    INFO("dtype " << to_string(dtype));
    auto want = x;
    cpu::round_through(dtype, want.data(), want.size());
    auto d_x = upload(x);
    gpu::round_through(dtype, d_x.data(), x.size(), nullptr);
    const auto got = download(d_x);
    CHECK(differing_nan_equal(got, want) == 0);

    const cpu::ValueCensus census = cpu::value_census(want.data(), want.size());
    // Counts accumulate onto what is there.
    auto d_counts = upload(std::vector<unsigned long long>{5, 7});
    gpu::value_census(d_x.data(), got.size(), d_counts.data(), nullptr);
    const auto counts = download(d_counts);
    CHECK(counts[0] == 5 + census.zeros);
    CHECK(counts[1] == 7 + census.nonfinite);
  }
  auto d_x = upload(x);
  CHECK_THROWS_AS(gpu::round_through(DType::i8, d_x.data(), x.size(), nullptr), std::invalid_argument);
}

// ---- sums over rows

TEST_CASE("cuda bias_backward and linear_backward match the CPU", "[cuda_training][gpu]") {
  const std::size_t m = 150, k = 70, n = 45;
  const auto x = random_vector(m * k, 50), w = random_vector(n * k, 51), dy = random_vector(m * n, 52);
  const auto dw0 = random_vector(n * k, 53), db0 = random_vector(n, 54);
  // Σ|terms| of each output, from the absolute values.
  std::vector<double> dx_abs(m * k, 0.0), dw_abs(n * k), db_abs(n);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t c = 0; c < k; ++c)
      for (std::size_t o = 0; o < n; ++o) dx_abs[i * k + c] += std::abs(dy[i * n + o] * w[o * k + c]);
  for (std::size_t o = 0; o < n; ++o) {
    db_abs[o] = std::abs(db0[o]);
    for (std::size_t i = 0; i < m; ++i) db_abs[o] += std::abs(dy[i * n + o]);
    for (std::size_t c = 0; c < k; ++c) {
      dw_abs[o * k + c] = std::abs(dw0[o * k + c]);
      for (std::size_t i = 0; i < m; ++i) dw_abs[o * k + c] += std::abs(dy[i * n + o] * x[i * k + c]);
    }
  }
  std::vector<float> dx(m * k), dw = dw0, db = db0;
  cpu::linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), m, k, n);

  auto d_x = upload(x), d_w = upload(w), d_dy = upload(dy);
  auto d_dx = upload(std::vector<float>(m * k, NAN));
  auto d_dw = upload(dw0), d_db = upload(db0);
  gpu::linear_backward(d_x.data(), d_w.data(), d_dy.data(), d_dx.data(), d_dw.data(), d_db.data(), m, k, n, nullptr);
  CHECK(outside(download(d_dx), dx, sum_tolerance(dx_abs, n)) == 0);
  CHECK(outside(download(d_dw), dw, sum_tolerance(dw_abs, m + 1)) == 0);
  CHECK(outside(download(d_db), db, sum_tolerance(db_abs, m + 1)) == 0);

  // bias_backward alone, and linear_backward with dx and db skipped.
  auto d_db2 = upload(db0);
  gpu::bias_backward(d_dy.data(), d_db2.data(), m, n, nullptr);
  CHECK(differing(download(d_db2), download(d_db)) == 0);
  auto d_dw2 = upload(dw0);
  gpu::linear_backward(d_x.data(), d_w.data(), d_dy.data(), nullptr, d_dw2.data(), nullptr, m, k, n, nullptr);
  CHECK(differing(download(d_dw2), download(d_dw)) == 0);
}

TEST_CASE("cuda linear_half and linear_backward_half give the fp32 products of 16-bit operands", "[cuda_training][gpu]") {
  const std::size_t m = 130, k = 96, n = 72;
  for (const DType dtype : {DType::f16, DType::bf16}) {
    INFO(to_string(dtype));
    // Operands already holding values of the format, as mixed-precision training leaves them.
    auto x = random_vector(m * k, 80), w = random_vector(n * k, 81), dy = random_vector(m * n, 82);
    const auto b = random_vector(n, 83), dw0 = random_vector(n * k, 84);
    for (auto* v : {&x, &w, &dy}) cpu::round_through(dtype, v->data(), v->size());
    std::vector<float> y(m * n), dx(m * k), dw = dw0;
    cpu::linear(x.data(), w.data(), b.data(), y.data(), m, k, n);
    cpu::linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), nullptr, m, k, n);
    // The product of two f16 (11-bit) or bf16 (8-bit) significands is exact in fp32, so the
    // tensor cores' fp32 sums differ from the CPU's only in order: the fp32 sum bound of
    // sum_tolerance, with the same Σ|terms|.
    std::vector<double> y_abs(m * n, 0.0), dx_abs(m * k, 0.0), dw_abs(n * k, 0.0);
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t o = 0; o < n; ++o)
        for (std::size_t c = 0; c < k; ++c) {
          y_abs[i * n + o] += std::abs(x[i * k + c] * w[o * k + c]);
          dx_abs[i * k + c] += std::abs(dy[i * n + o] * w[o * k + c]);
          dw_abs[o * k + c] += std::abs(dy[i * n + o] * x[i * k + c]);
        }
    for (std::size_t o = 0; o < n; ++o) {
      for (std::size_t i = 0; i < m; ++i) y_abs[i * n + o] += std::abs(b[o]);
      for (std::size_t c = 0; c < k; ++c) dw_abs[o * k + c] += std::abs(dw0[o * k + c]);
    }
    auto d_x = upload(x), d_w = upload(w), d_b = upload(b), d_dy = upload(dy);
    auto d_y = upload(std::vector<float>(m * n, NAN)), d_dx = upload(std::vector<float>(m * k, NAN));
    auto d_dw = upload(dw0);
    gpu::linear_half(d_x.data(), d_w.data(), d_b.data(), d_y.data(), m, k, n, dtype, nullptr);
    gpu::linear_backward_half(d_x.data(), d_w.data(), d_dy.data(), d_dx.data(), d_dw.data(), nullptr, m, k, n, dtype,
                              nullptr);
    CHECK(outside(download(d_y), y, sum_tolerance(y_abs, k + 1)) == 0);
    CHECK(outside(download(d_dx), dx, sum_tolerance(dx_abs, n)) == 0);
    CHECK(outside(download(d_dw), dw, sum_tolerance(dw_abs, m + 1)) == 0);
  }
  CHECK_THROWS_AS(gpu::linear_half(nullptr, nullptr, nullptr, nullptr, 1, 1, 1, DType::f32, nullptr),
                  std::invalid_argument);
}

// ---- optimizers

TEST_CASE("cuda adamw_update, sgd_update and sum_of_squares match the CPU", "[cuda_training][gpu]") {
  const std::size_t n = 10000;
  const auto p0 = random_vector(n, 60), g = random_vector(n, 61), m0 = random_vector(n, 62);
  const auto v0 = random_vector(n, 63, 0.01f, 1.0f);
  const float grad_scale = 0.5f;
  cpu::AdamW h;
  h.lr = 3e-3f;
  h.weight_decay = 0.1f;
  h.step = 7;

  auto p = p0, m = m0, v = v0;
  cpu::adamw_update_reference(p.data(), g.data(), m.data(), v.data(), n, h, grad_scale);
  auto d_p = upload(p0), d_g = upload(g), d_m = upload(m0), d_v = upload(v0);
  gpu::adamw_update(d_p.data(), d_g.data(), d_m.data(), d_v.data(), n, h, grad_scale, nullptr);
  // m, v: two products and a sum (fp32, maybe fused): 4u of |b·m| + |(1 − b)·g|. p: the update
  // ratio m̂/(√v̂ + eps) within 16u of its absolute terms (m's and v's errors, two divisions by the
  // corrections, rounded from double on the host, a sqrtf and a division), times lr, plus the
  // final subtraction's 2u of |p|.
  std::vector<double> m_tol(n), v_tol(n), p_tol(n);
  const double bc1 = 1.0 - std::pow(double{h.beta1}, 7.0), bc2 = 1.0 - std::pow(double{h.beta2}, 7.0);
  for (std::size_t i = 0; i < n; ++i) {
    const double gi = grad_scale * g[i];
    const double m_abs = h.beta1 * std::abs(m0[i]) + (1.0 - h.beta1) * std::abs(gi);
    const double v_abs = h.beta2 * v0[i] + (1.0 - h.beta2) * gi * gi;
    m_tol[i] = 4.0 * u * m_abs;
    v_tol[i] = 4.0 * u * v_abs;
    const double ratio_abs = (m_abs / bc1) / (std::sqrt(v[i] / bc2) + h.eps);
    p_tol[i] = 4.0 * u * std::abs(p0[i]) + 16.0 * u * h.lr * (ratio_abs + h.weight_decay * std::abs(p0[i]));
  }
  CHECK(outside(download(d_m), m, m_tol) == 0);
  CHECK(outside(download(d_v), v, v_tol) == 0);
  CHECK(outside(download(d_p), p, p_tol) == 0);

  const float lr = 0.05f, momentum = 0.9f, wd = 0.01f;
  auto sp = p0, buf = m0;
  cpu::sgd_update(sp.data(), g.data(), buf.data(), n, lr, momentum, wd, grad_scale);
  auto d_sp = upload(p0), d_buf = upload(m0);
  gpu::sgd_update(d_sp.data(), d_g.data(), d_buf.data(), n, lr, momentum, wd, grad_scale, nullptr);
  // buf: two products and a sum, fused or not, either side: 4u of the absolute terms. p: the
  // update lr·(buf + wd·p) grouped differently on the two sides: 4u of its absolute terms, plus
  // 2u of |p| for the subtraction.
  std::vector<double> buf_tol(n), sp_tol(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double b_abs = momentum * std::abs(m0[i]) + grad_scale * std::abs(g[i]);
    buf_tol[i] = 4.0 * u * b_abs;
    sp_tol[i] = 4.0 * u * std::abs(p0[i]) + 8.0 * u * lr * (b_abs + wd * std::abs(p0[i]));
  }
  CHECK(outside(download(d_buf), buf, buf_tol) == 0);
  CHECK(outside(download(d_sp), sp, sp_tol) == 0);

  // Squares of floats are exact in double; two double sums of `count` nonnegative terms in
  // different orders differ by at most 2·count·2^-53 of the total.
  for (std::size_t count : {std::size_t{1}, std::size_t{1000}, std::size_t{300001}}) {
    INFO("count " << count);
    const auto x = random_vector(count, 64, -3.0f, 3.0f);
    const double want = cpu::sum_of_squares(x.data(), count);
    auto d_x = upload(x);
    const double got = gpu::sum_of_squares(d_x.data(), count, nullptr);
    CHECK(std::abs(got - want) <= 2.0 * static_cast<double>(count) * std::ldexp(1.0, -53) * want);
  }
}

// ---- attention

namespace {

struct AttentionCase {
  std::size_t batch, heads, n, head_dim;
  bool causal;
};
// n not a multiple of the 32-row tiles; head_dim at each kernel width and between them.
const std::vector<AttentionCase> attention_cases = {
    {2, 3, 77, 64, true}, {2, 3, 77, 64, false}, {1, 2, 64, 32, true},
    {1, 2, 33, 40, false}, {1, 1, 100, 128, true}, {2, 2, 5, 16, true}};

struct AttentionInputs {
  AttentionShape shape;
  std::vector<float> q, k, v, dout;
  explicit AttentionInputs(const AttentionCase& c)
      : shape(AttentionShape::self(c.batch, c.heads, c.n, c.head_dim, c.causal)) {
    const std::size_t size = c.batch * c.heads * c.n * c.head_dim;
    q = random_vector(size, 70 + c.n);
    k = random_vector(size, 71 + c.n);
    v = random_vector(size, 72 + c.n);
    dout = random_vector(size, 73 + c.n);
  }
  double tolerance(double reference_max) const {
    return 32.0 * static_cast<double>(shape.q_len + shape.head_dim + 8) * u * reference_max;
  }
};

}  // namespace

TEST_CASE("cuda attention_flash with lse matches the CPU flash forward and its lse", "[cuda_training][gpu]") {
  for (const AttentionCase& c : attention_cases) {
    INFO("batch " << c.batch << " heads " << c.heads << " n " << c.n << " d " << c.head_dim << " causal " << c.causal);
    const AttentionInputs in(c);
    std::vector<float> out(in.q.size()), lse(c.batch * c.heads * c.n);
    cpu::attention_flash(in.q.data(), in.k.data(), in.v.data(), out.data(), lse.data(), in.shape);
    auto d_q = upload(in.q), d_k = upload(in.k), d_v = upload(in.v);
    auto d_out = upload(std::vector<float>(out.size(), NAN));
    auto d_lse = upload(std::vector<float>(lse.size(), NAN));
    gpu::attention_flash(d_q.data(), d_k.data(), d_v.data(), d_out.data(), d_lse.data(), in.shape, nullptr);
    // out: a convex combination of v rows (|v| <= 1), as the attention bound in the header.
    CHECK(outside(download(d_out), out, in.tolerance(1.0)) == 0);
    // lse = max + log Σ: the scores (|s| <= √d) within (d + 4)·u·√d each; the log of the sum
    // within (n + 4)·u relative, plus 2 ulp.
    const double sd = std::sqrt(static_cast<double>(c.head_dim));
    CHECK(outside(download(d_lse), lse, 4.0 * (c.head_dim + c.n + 8) * u * (sd + 8.0)) == 0);
  }
}

TEST_CASE("cuda attention backward, flash and naive, match the float64 reference", "[cuda_training][gpu]") {
  for (const AttentionCase& c : attention_cases) {
    INFO("batch " << c.batch << " heads " << c.heads << " n " << c.n << " d " << c.head_dim << " causal " << c.causal);
    const AttentionInputs in(c);
    const std::size_t size = in.q.size();
    std::vector<double> dq(size), dk(size), dv(size);
    cpu::attention_backward_reference(in.q.data(), in.k.data(), in.v.data(), in.dout.data(), dq.data(), dk.data(),
                                      dv.data(), in.shape);
    auto d_q = upload(in.q), d_k = upload(in.k), d_v = upload(in.v), d_dout = upload(in.dout);
    auto d_out = upload(std::vector<float>(size, NAN));
    auto d_lse = upload(std::vector<float>(c.batch * c.heads * c.n, NAN));
    gpu::attention_flash(d_q.data(), d_k.data(), d_v.data(), d_out.data(), d_lse.data(), in.shape, nullptr);

    auto d_dq = upload(std::vector<float>(size, NAN)), d_dk = upload(std::vector<float>(size, NAN)),
         d_dv = upload(std::vector<float>(size, NAN));
    gpu::attention_flash_backward(d_q.data(), d_k.data(), d_v.data(), d_out.data(), d_dout.data(), d_lse.data(),
                                  d_dq.data(), d_dk.data(), d_dv.data(), in.shape, nullptr);
    const auto flash_dq = download(d_dq), flash_dk = download(d_dk), flash_dv = download(d_dv);
    CHECK(outside(flash_dq, dq, in.tolerance(max_abs(dq))) == 0);
    CHECK(outside(flash_dk, dk, in.tolerance(max_abs(dk))) == 0);
    CHECK(outside(flash_dv, dv, in.tolerance(max_abs(dv))) == 0);

    auto n_dq = upload(std::vector<float>(size, NAN)), n_dk = upload(std::vector<float>(size, NAN)),
         n_dv = upload(std::vector<float>(size, NAN));
    auto scores = upload(std::vector<float>(c.batch * c.heads * c.n * c.n, NAN));
    gpu::attention_naive_backward(d_q.data(), d_k.data(), d_v.data(), d_out.data(), d_dout.data(), n_dq.data(),
                                  n_dk.data(), n_dv.data(), scores.data(), in.shape, nullptr);
    const auto naive_dq = download(n_dq), naive_dk = download(n_dk), naive_dv = download(n_dv);
    CHECK(outside(naive_dq, dq, in.tolerance(max_abs(dq))) == 0);
    CHECK(outside(naive_dk, dk, in.tolerance(max_abs(dk))) == 0);
    CHECK(outside(naive_dv, dv, in.tolerance(max_abs(dv))) == 0);

    // Flash against naive: each within the bound of the reference, so within twice it of each other.
    CHECK(outside(flash_dq, naive_dq, 2.0 * in.tolerance(max_abs(dq))) == 0);
    CHECK(outside(flash_dk, naive_dk, 2.0 * in.tolerance(max_abs(dk))) == 0);
    CHECK(outside(flash_dv, naive_dv, 2.0 * in.tolerance(max_abs(dv))) == 0);
  }
}

TEST_CASE("cuda attention backward rejects shapes other than self-attention", "[cuda_training][gpu]") {
  AttentionShape s = AttentionShape::self(1, 1, 8, 16, true);
  s.kv_capacity = 16;  // a cache layout
  auto buf = upload(std::vector<float>(16 * 16 * 4, 0.5f));
  float* p = buf.data();
  CHECK_THROWS_AS(gpu::attention_flash_backward(p, p, p, p, p, p, p, p, p, s, nullptr), std::invalid_argument);
  CHECK_THROWS_AS(gpu::attention_naive_backward(p, p, p, p, p, p, p, p, p, s, nullptr), std::invalid_argument);
  AttentionShape decode = AttentionShape::self(1, 1, 8, 16, true);
  decode.q_len = 1;
  decode.q_offset = 7;
  CHECK_THROWS_AS(gpu::attention_flash_backward(p, p, p, p, p, p, p, p, p, decode, nullptr), std::invalid_argument);
}

// ---- determinism

TEST_CASE("cuda training kernels repeat bit for bit", "[cuda_training][gpu]") {
  // Sizes large enough for many blocks, so that any order depending on scheduling would show.
  const std::size_t rows = 2048, hidden = 768;
  const auto x = random_vector(rows * hidden, 80), dy = random_vector(rows * hidden, 81);
  const auto gamma = random_vector(hidden, 82), zeros = std::vector<float>(hidden, 0.0f);
  std::vector<float> mean(rows), rstd(rows), y(rows * hidden);
  cpu::layernorm_forward(x.data(), gamma.data(), zeros.data(), y.data(), mean.data(), rstd.data(), rows, hidden,
                         1e-5f);
  auto d_x = upload(x), d_dy = upload(dy), d_gamma = upload(gamma), d_mean = upload(mean), d_rstd = upload(rstd);
  const auto tokens = random_tokens(rows, 64, 83);
  auto d_tokens = upload(tokens);

  struct Results {
    std::vector<float> dx, dgamma, dbeta, db, dwte, dwpe, dq, dk, dv;
    double norm;
  };
  const AttentionInputs attn({4, 4, 256, 64, true});
  auto d_q = upload(attn.q), d_k = upload(attn.k), d_v = upload(attn.v), d_dout = upload(attn.dout);
  auto run = [&]() {
    Results r;
    auto d_dx = upload(std::vector<float>(rows * hidden, NAN));
    auto d_dgamma = upload(zeros), d_dbeta = upload(zeros), d_db = upload(zeros);
    gpu::layernorm_backward(d_dy.data(), d_x.data(), d_gamma.data(), d_mean.data(), d_rstd.data(), d_dx.data(),
                            d_dgamma.data(), d_dbeta.data(), rows, hidden, nullptr);
    gpu::bias_backward(d_dy.data(), d_db.data(), rows, hidden, nullptr);
    // 2048 tokens as (batch 8, len 256), 64 vocabulary rows.
    auto d_dwte = upload(std::vector<float>(64 * hidden, 0.0f)), d_dwpe = upload(std::vector<float>(256 * hidden, 0.0f));
    gpu::embedding_backward(d_tokens.data(), d_dy.data(), d_dwte.data(), d_dwpe.data(), 8, 256, 64, hidden, nullptr);
    auto d_out = upload(std::vector<float>(attn.q.size(), NAN));
    auto d_lse = upload(std::vector<float>(4 * 4 * 256, NAN));
    gpu::attention_flash(d_q.data(), d_k.data(), d_v.data(), d_out.data(), d_lse.data(), attn.shape, nullptr);
    auto d_dq = upload(std::vector<float>(attn.q.size(), NAN)), d_dk = upload(std::vector<float>(attn.q.size(), NAN)),
         d_dv = upload(std::vector<float>(attn.q.size(), NAN));
    gpu::attention_flash_backward(d_q.data(), d_k.data(), d_v.data(), d_out.data(), d_dout.data(), d_lse.data(),
                                  d_dq.data(), d_dk.data(), d_dv.data(), attn.shape, nullptr);
    r.norm = gpu::sum_of_squares(d_dy.data(), rows * hidden, nullptr);
    r.dx = download(d_dx);
    r.dgamma = download(d_dgamma);
    r.dbeta = download(d_dbeta);
    r.db = download(d_db);
    r.dwte = download(d_dwte);
    r.dwpe = download(d_dwpe);
    r.dq = download(d_dq);
    r.dk = download(d_dk);
    r.dv = download(d_dv);
    return r;
  };
  const Results a = run(), b = run();
  CHECK(differing(a.dx, b.dx) == 0);
  CHECK(differing(a.dgamma, b.dgamma) == 0);
  CHECK(differing(a.dbeta, b.dbeta) == 0);
  CHECK(differing(a.db, b.db) == 0);
  CHECK(differing(a.dwte, b.dwte) == 0);
  CHECK(differing(a.dwpe, b.dwpe) == 0);
  CHECK(differing(a.dq, b.dq) == 0);
  CHECK(differing(a.dk, b.dk) == 0);
  CHECK(differing(a.dv, b.dv) == 0);
  CHECK(a.norm == b.norm);
  CHECK(std::isfinite(a.norm));
  // The results are not all zero (a kernel that wrote nothing would repeat too).
  CHECK(max_abs(a.dgamma) > 0.0);
  CHECK(max_abs(a.dq) > 0.0);
  CHECK(max_abs(a.dwte) > 0.0);
}

#endif  // AIOPT_HAVE_CUDA
