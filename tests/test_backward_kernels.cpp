// The training kernels: every CPU backward (layernorm, GELU, embedding, linear, softmax
// cross-entropy, attention naive and flash) against its plain reference on random inputs, and
// against central finite differences of a float64 re-implementation of its forward; the flash
// forward's log-sum-exp; bit-identical results for 1 and 2 threads where the contract promises
// them; the head layout moves; reduced-precision rounding and the value census. And ([gpu]) the
// CUDA twins (kernels/cuda/ of the same names, attention_backward.hpp, gemm.hpp's linear_backward) against
// the CPU ones, the CUDA flash backward against the naive one with its O(N·d) workspace bound,
// and their determinism.
//
// CPU tolerances, with inputs uniform in [-1, 1) (so every term is O(1)):
// - fast vs reference: fp32 sums of at most a few hundred O(1) terms carry about
//   n·2^-24 ≈ 1e-5 relative error at worst (random-signed rounding is far smaller); exp_poly and
//   tanh_poly add about 2e-7. Errors are measured relative to the largest reference magnitude of
//   the tensor (gradients cancel, so elementwise relative error is meaningless near zero):
//   1e-5 for elementwise kernels, 5e-5 for reductions and attention.
// - finite differences: central differences in float64 with h = 1e-5 have truncation error
//   O(h²) ≈ 1e-10 and cancellation error ≈ 1e-16·|L|/h ≈ 1e-9; the analytic gradients are fp32
//   (about 1e-6 relative here), so the comparison is at 2e-5 of the largest gradient magnitude,
//   far below the O(1e-2..1) relative error of a wrong term or coefficient.
// Every comparison fails on a NaN or an infinity in either operand (max_error returns +inf).
//
// CUDA tolerances, with u = 2^-24 the unit roundoff of fp32:
//   merge_qkv, split_heads, round_through, value_census, embedding_backward: exact. The first
//   three are copies or one IEEE rounding to nearest even; the census counts; the embedding
//   gradient adds the same dy rows in the same (token) order as the CPU, on the same start values.
//   Sums (bias_backward, dgamma/dbeta, linear_backward, cross-entropy): a recursive fp32 sum of
//   t terms is within (t + 1)·u·Σ|terms| of exact in any order, each term carrying a few more
//   u of its own; two sides: |gpu − cpu| <= 4·(t + 4)·u·Σ|terms|, with Σ|terms| computed here in
//   double from the absolute values.
//   Pointwise math (gelu backward): a handful of roundings and one tanhf/sqrtf (2
//   ulp), stated at each case.
//   Attention: every output is a sum over at most N keys or queries of products of softmax
//   weights (relative error about (d + 8)·u from the score dot products and expf) with fp32
//   dot products over d; first order that is (N + d + 8)·u relative to the sum of absolute
//   terms, which for these inputs (uniform in [-1, 1], scale 1/√d) is within a few times max|ref|;
//   the checks allow 32·(N + d + 8)·u·max|ref| against the float64 reference. A wrong index or
//   mask gives errors of order max|ref|, thousands of times that.
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <vector>

#include "core/dtype.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "core/threads.hpp"
#include "kernels/attention_shape.hpp"
#include "kernels/cpu/activation.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/attention_backward.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/heads.hpp"
#include "kernels/cpu/layernorm.hpp"
#include "kernels/cpu/precision.hpp"
#include "support/error_metric.hpp"
#include "support/numeric_gradient.hpp"
#include "support/random.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "core/cuda_check.hpp"
#include "core/device.hpp"
#include "core/memory.hpp"
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
#endif

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
using kernels::AttentionShape;

using aiopt::test::numeric_gradient;

namespace {

using aiopt::test::random_vector;

constexpr double inf = std::numeric_limits<double>::infinity();

// max |a − b| / max(1e-3, max |b|): +inf when any element of either is not finite, so a NaN
// fails every `<= tolerance` check. The floor keeps an all-tiny reference from inflating noise.
template <class A, class B>
double max_error(const std::vector<A>& a, const std::vector<B>& b) {
  return aiopt::test::max_relative_error(a, b, 1e-3);
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

struct ThreadsRestored {
  int saved = threads();
  ~ThreadsRestored() { set_threads(saved); }
};

// ---- float64 forwards for the finite differences

std::vector<double> layernorm_f64(const std::vector<double>& x, const std::vector<double>& gamma,
                                  const std::vector<double>& beta, std::size_t rows, std::size_t hidden, double eps) {
  std::vector<double> y(rows * hidden);
  for (std::size_t r = 0; r < rows; ++r) {
    double mean = 0.0, var = 0.0;
    for (std::size_t j = 0; j < hidden; ++j) mean += x[r * hidden + j];
    mean /= static_cast<double>(hidden);
    for (std::size_t j = 0; j < hidden; ++j) var += (x[r * hidden + j] - mean) * (x[r * hidden + j] - mean);
    const double rstd = 1.0 / std::sqrt(var / static_cast<double>(hidden) + eps);
    for (std::size_t j = 0; j < hidden; ++j) y[r * hidden + j] = (x[r * hidden + j] - mean) * rstd * gamma[j] + beta[j];
  }
  return y;
}

double gelu_f64(double v) {
  return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (v + 0.044715 * v * v * v)));
}

// y = x·Wᵀ + b: x (m, k), w (n, k), b (n).
std::vector<double> linear_f64(const std::vector<double>& x, const std::vector<double>& w,
                               const std::vector<double>& b, std::size_t m, std::size_t k, std::size_t n) {
  std::vector<double> y(m * n);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      double s = b[j];
      for (std::size_t p = 0; p < k; ++p) s += x[i * k + p] * w[j * k + p];
      y[i * n + j] = s;
    }
  return y;
}

// scale · Σ_r (logsumexp(logits_r) − logits_r[target_r]) over rows with a target.
double cross_entropy_f64(const std::vector<double>& logits, const std::vector<std::int32_t>& targets,
                         std::size_t vocab, double scale) {
  double total = 0.0;
  for (std::size_t r = 0; r < targets.size(); ++r) {
    if (targets[r] < 0) continue;
    const double* x = logits.data() + r * vocab;
    const double max = *std::max_element(x, x + vocab);
    double sum = 0.0;
    for (std::size_t j = 0; j < vocab; ++j) sum += std::exp(x[j] - max);
    total += std::log(sum) + max - x[targets[r]];
  }
  return scale * total;
}

// Self-attention from the definition; q, k, v, out: (B, H, N, d).
std::vector<double> attention_f64(const std::vector<double>& q, const std::vector<double>& k,
                                  const std::vector<double>& v, const AttentionShape& s) {
  const std::size_t n = s.q_len, d = s.head_dim;
  std::vector<double> out(q.size(), 0.0), p(n);
  for (std::size_t head = 0; head < s.batch * s.heads; ++head) {
    const std::size_t off = head * n * d;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t seen = s.causal ? i + 1 : n;
      double max = -inf, sum = 0.0;
      for (std::size_t j = 0; j < seen; ++j) {
        double dt = 0.0;
        for (std::size_t t = 0; t < d; ++t) dt += q[off + i * d + t] * k[off + j * d + t];
        p[j] = static_cast<double>(s.scale) * dt;
        max = std::max(max, p[j]);
      }
      for (std::size_t j = 0; j < seen; ++j) sum += (p[j] = std::exp(p[j] - max));
      for (std::size_t j = 0; j < seen; ++j)
        for (std::size_t t = 0; t < d; ++t) out[off + i * d + t] += p[j] / sum * v[off + j * d + t];
    }
  }
  return out;
}

std::vector<std::int32_t> random_tokens(std::size_t count, std::size_t vocab, std::uint64_t seed) {
  std::vector<std::int32_t> t(count);
  for (std::size_t i = 0; i < count; ++i) t[i] = static_cast<std::int32_t>(rng::bits(seed, i) % vocab);
  return t;
}

}  // namespace

// ---- the comparison helpers themselves

TEST_CASE("max_error fails on a NaN or an infinity", "[backward_kernels]") {
  std::vector<float> a{1.0f, 2.0f}, b{1.0f, 2.0f};
  CHECK(max_error(a, b) == 0.0);
  a[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_FALSE(max_error(a, b) <= 1.0);
  a[1] = 2.0f;
  b[0] = std::numeric_limits<float>::infinity();
  CHECK_FALSE(max_error(a, b) <= 1.0);
}

// ---- layernorm

TEST_CASE("layernorm_forward matches the reference and saves mean and rstd", "[backward_kernels]") {
  const std::size_t rows = 37, hidden = 96;
  const float eps = 1e-5f;
  const auto x = random_vector(rows * hidden, 11), gamma = random_vector(hidden, 12), beta = random_vector(hidden, 13);
  std::vector<float> y(rows * hidden), y_ref(rows * hidden), mean(rows), rstd(rows);
  cpu::layernorm_forward(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(), rows, hidden, eps);
  cpu::layernorm_reference(x.data(), gamma.data(), beta.data(), y_ref.data(), rows, hidden, eps);
  CHECK(max_error(y, y_ref) <= 1e-5);
  std::vector<double> mean_ref(rows), rstd_ref(rows);
  for (std::size_t r = 0; r < rows; ++r) {
    double m = 0.0, var = 0.0;
    for (std::size_t j = 0; j < hidden; ++j) m += x[r * hidden + j];
    m /= hidden;
    for (std::size_t j = 0; j < hidden; ++j) var += (x[r * hidden + j] - m) * (x[r * hidden + j] - m);
    mean_ref[r] = m;
    rstd_ref[r] = 1.0 / std::sqrt(var / hidden + eps);
  }
  CHECK(max_error(mean, mean_ref) <= 1e-5);
  CHECK(max_error(rstd, rstd_ref) <= 1e-5);
}

TEST_CASE("layernorm_backward matches its reference and accumulates dgamma and dbeta", "[backward_kernels]") {
  const std::size_t rows = 53, hidden = 80;
  const auto x = random_vector(rows * hidden, 21), gamma = random_vector(hidden, 22), beta = random_vector(hidden, 23);
  const auto dy = random_vector(rows * hidden, 24);
  std::vector<float> y(rows * hidden), mean(rows), rstd(rows);
  cpu::layernorm_forward(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(), rows, hidden, 1e-5f);
  // Parameter gradients start from earlier micro-batches' sums: += must keep them.
  const auto dgamma0 = random_vector(hidden, 25), dbeta0 = random_vector(hidden, 26);
  std::vector<float> dx(rows * hidden), dgamma = dgamma0, dbeta = dbeta0;
  std::vector<float> dx_ref(rows * hidden), dgamma_ref = dgamma0, dbeta_ref = dbeta0;
  cpu::layernorm_backward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), dx.data(), dgamma.data(),
                          dbeta.data(), rows, hidden);
  cpu::layernorm_backward_reference(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), dx_ref.data(),
                                    dgamma_ref.data(), dbeta_ref.data(), rows, hidden);
  CHECK(max_error(dx, dx_ref) <= 1e-5);
  CHECK(max_error(dgamma, dgamma_ref) <= 5e-5);
  CHECK(max_error(dbeta, dbeta_ref) <= 5e-5);

  // The parameter sums split channels over threads and walk the rows in order.
  ThreadsRestored restore;
  std::vector<float> dx2(rows * hidden), dgamma1 = dgamma0, dbeta1 = dbeta0, dgamma2 = dgamma0, dbeta2 = dbeta0;
  set_threads(1);
  cpu::layernorm_backward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), dx2.data(), dgamma1.data(),
                          dbeta1.data(), rows, hidden);
  set_threads(2);
  cpu::layernorm_backward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), dx2.data(), dgamma2.data(),
                          dbeta2.data(), rows, hidden);
  CHECK(bit_equal(dgamma1, dgamma2));
  CHECK(bit_equal(dbeta1, dbeta2));
}

TEST_CASE("layernorm_backward agrees with finite differences", "[backward_kernels][finite_difference]") {
  const std::size_t rows = 5, hidden = 12;
  const double eps = 1e-5;
  const auto x = random_vector(rows * hidden, 31), gamma = random_vector(hidden, 32), beta = random_vector(hidden, 33);
  const auto dy = random_vector(rows * hidden, 34);
  std::vector<float> y(rows * hidden), mean(rows), rstd(rows), dx(rows * hidden), dgamma(hidden, 0.0f),
      dbeta(hidden, 0.0f);
  cpu::layernorm_forward(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(), rows, hidden,
                         static_cast<float>(eps));
  cpu::layernorm_backward(dy.data(), x.data(), gamma.data(), mean.data(), rstd.data(), dx.data(), dgamma.data(),
                          dbeta.data(), rows, hidden);
  const auto xd = to_double(x), gd = to_double(gamma), bd = to_double(beta), dyd = to_double(dy);
  CHECK(max_error(dx, numeric_gradient(xd, [&](const auto& v) {
                    return dot(dyd, layernorm_f64(v, gd, bd, rows, hidden, eps));
                  })) <= 2e-5);
  CHECK(max_error(dgamma, numeric_gradient(gd, [&](const auto& v) {
                    return dot(dyd, layernorm_f64(xd, v, bd, rows, hidden, eps));
                  })) <= 2e-5);
  CHECK(max_error(dbeta, numeric_gradient(bd, [&](const auto& v) {
                    return dot(dyd, layernorm_f64(xd, gd, v, rows, hidden, eps));
                  })) <= 2e-5);
}

// ---- GELU

TEST_CASE("gelu_tanh_backward matches its reference", "[backward_kernels]") {
  // [-6, 6) reaches the saturated tails, where tanh_poly's exact ±1 limits matter.
  const std::size_t n = 10007;
  const auto x = random_vector(n, 41, -6.0f, 6.0f), dy = random_vector(n, 42);
  std::vector<float> dx(n), dx_ref(n);
  cpu::gelu_tanh_backward(x.data(), dy.data(), dx.data(), n);
  cpu::gelu_tanh_backward_reference(x.data(), dy.data(), dx_ref.data(), n);
  CHECK(max_error(dx, dx_ref) <= 1e-5);
}

TEST_CASE("gelu_tanh_backward agrees with finite differences", "[backward_kernels][finite_difference]") {
  const std::size_t n = 200;
  const auto x = random_vector(n, 43, -4.0f, 4.0f), dy = random_vector(n, 44);
  std::vector<float> dx(n);
  cpu::gelu_tanh_backward(x.data(), dy.data(), dx.data(), n);
  const auto dyd = to_double(dy);
  CHECK(max_error(dx, numeric_gradient(to_double(x), [&](const auto& v) {
                    double s = 0.0;
                    for (std::size_t i = 0; i < n; ++i) s += dyd[i] * gelu_f64(v[i]);
                    return s;
                  })) <= 2e-5);
}

// ---- embedding

TEST_CASE("embedding_backward accumulates token and position rows, the same for any thread count",
          "[backward_kernels]") {
  // A small vocabulary so that tokens repeat and rows of dwte collect many positions.
  const std::size_t B = 3, T = 17, V = 7, P = 20, C = 70;
  const auto tokens = random_tokens(B * T, V, 51);
  const auto dy = random_vector(B * T * C, 52);
  const auto dwte0 = random_vector(V * C, 53), dwpe0 = random_vector(P * C, 54);
  std::vector<float> dwte = dwte0, dwpe = dwpe0;
  cpu::embedding_backward(tokens.data(), dy.data(), dwte.data(), dwpe.data(), B, T, V, C);
  std::vector<double> dwte_ref(dwte0.begin(), dwte0.end()), dwpe_ref(dwpe0.begin(), dwpe0.end());
  for (std::size_t row = 0; row < B * T; ++row)
    for (std::size_t c = 0; c < C; ++c) {
      dwte_ref[tokens[row] * C + c] += dy[row * C + c];
      dwpe_ref[(row % T) * C + c] += dy[row * C + c];
    }
  CHECK(max_error(dwte, dwte_ref) <= 1e-5);
  CHECK(max_error(dwpe, dwpe_ref) <= 1e-5);
  for (std::size_t i = T * C; i < P * C; ++i) REQUIRE(dwpe[i] == dwpe0[i]);  // positions past len untouched

  ThreadsRestored restore;
  std::vector<float> dwte1 = dwte0, dwpe1 = dwpe0, dwte2 = dwte0, dwpe2 = dwpe0;
  set_threads(1);
  cpu::embedding_backward(tokens.data(), dy.data(), dwte1.data(), dwpe1.data(), B, T, V, C);
  set_threads(2);
  cpu::embedding_backward(tokens.data(), dy.data(), dwte2.data(), dwpe2.data(), B, T, V, C);
  CHECK(bit_equal(dwte1, dwte2));
  CHECK(bit_equal(dwpe1, dwpe2));

  auto bad = tokens;
  bad[5] = static_cast<std::int32_t>(V);
  std::vector<float> untouched = dwte0;
  CHECK_THROWS_AS(cpu::embedding_backward(bad.data(), dy.data(), untouched.data(), dwpe1.data(), B, T, V, C),
                  std::out_of_range);
  bad[5] = -1;
  CHECK_THROWS_AS(cpu::embedding_backward(bad.data(), dy.data(), untouched.data(), dwpe1.data(), B, T, V, C),
                  std::out_of_range);
  CHECK(bit_equal(untouched, dwte0));
}

TEST_CASE("embedding_backward agrees with finite differences", "[backward_kernels][finite_difference]") {
  const std::size_t B = 2, T = 5, V = 4, P = 6, C = 3;
  const auto tokens = random_tokens(B * T, V, 55);
  const auto wte = random_vector(V * C, 56), wpe = random_vector(P * C, 57), dy = random_vector(B * T * C, 58);
  std::vector<float> dwte(V * C, 0.0f), dwpe(P * C, 0.0f);
  cpu::embedding_backward(tokens.data(), dy.data(), dwte.data(), dwpe.data(), B, T, V, C);
  const auto dyd = to_double(dy), wted = to_double(wte), wped = to_double(wpe);
  auto loss = [&](const std::vector<double>& te, const std::vector<double>& pe) {
    double s = 0.0;
    for (std::size_t row = 0; row < B * T; ++row)
      for (std::size_t c = 0; c < C; ++c)
        s += dyd[row * C + c] * (te[tokens[row] * C + c] + pe[(row % T) * C + c]);
    return s;
  };
  CHECK(max_error(dwte, numeric_gradient(wted, [&](const auto& v) { return loss(v, wped); })) <= 2e-5);
  CHECK(max_error(dwpe, numeric_gradient(wped, [&](const auto& v) { return loss(wted, v); })) <= 2e-5);
}

// ---- head layouts

TEST_CASE("merge_qkv undoes split_qkv and split_heads undoes merge_heads", "[backward_kernels]") {
  const std::size_t B = 2, T = 5, H = 3, d = 4, C = H * d;
  const auto qkv = random_vector(B * T * 3 * C, 61);
  std::vector<float> q(B * H * T * d), k(B * H * T * d), v(B * H * T * d), back(qkv.size(), -9.0f);
  cpu::split_qkv(qkv.data(), q.data(), k.data(), v.data(), B, T, H, d, T, 0);
  cpu::merge_qkv(q.data(), k.data(), v.data(), back.data(), B, T, H, d);
  CHECK(bit_equal(back, qkv));

  const auto x = random_vector(B * H * T * d, 62);
  std::vector<float> merged(B * T * C), split(x.size(), -9.0f);
  cpu::merge_heads(x.data(), merged.data(), B, T, H, d);
  cpu::split_heads(merged.data(), split.data(), B, T, H, d);
  CHECK(bit_equal(split, x));
}

// ---- linear

TEST_CASE("linear_backward matches a float64 reference, and db is the same for any thread count",
          "[backward_kernels]") {
  const std::size_t m = 67, k = 45, n = 83;
  const auto x = random_vector(m * k, 71), w = random_vector(n * k, 72), dy = random_vector(m * n, 73);
  const auto dw0 = random_vector(n * k, 74), db0 = random_vector(n, 75);
  std::vector<float> dx(m * k), dw = dw0, db = db0;
  cpu::linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), m, k, n);
  std::vector<double> dx_ref(m * k, 0.0), dw_ref(dw0.begin(), dw0.end()), db_ref(db0.begin(), db0.end());
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      const double g = dy[i * n + j];
      db_ref[j] += g;
      for (std::size_t p = 0; p < k; ++p) {
        dx_ref[i * k + p] += g * w[j * k + p];
        dw_ref[j * k + p] += g * x[i * k + p];
      }
    }
  CHECK(max_error(dx, dx_ref) <= 5e-5);
  CHECK(max_error(dw, dw_ref) <= 5e-5);
  CHECK(max_error(db, db_ref) <= 5e-5);

  // dx and db are optional, and so is dW (a frozen weight): the others are then what they were.
  std::vector<float> dw_only = dw0;
  cpu::linear_backward(x.data(), w.data(), dy.data(), nullptr, dw_only.data(), nullptr, m, k, n);
  CHECK(max_error(dw_only, dw_ref) <= 5e-5);
  std::vector<float> dx_frozen(m * k), db_frozen = db0;
  cpu::linear_backward(x.data(), w.data(), dy.data(), dx_frozen.data(), nullptr, db_frozen.data(), m, k, n);
  CHECK(bit_equal(dx_frozen, dx));
  CHECK(bit_equal(db_frozen, db));

  ThreadsRestored restore;
  std::vector<float> dw1 = dw0, db1 = db0, dw2 = dw0, db2 = db0;
  set_threads(1);
  cpu::linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw1.data(), db1.data(), m, k, n);
  set_threads(2);
  cpu::linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw2.data(), db2.data(), m, k, n);
  CHECK(bit_equal(db1, db2));
}

TEST_CASE("linear_backward agrees with finite differences", "[backward_kernels][finite_difference]") {
  const std::size_t m = 6, k = 5, n = 7;
  const auto x = random_vector(m * k, 76), w = random_vector(n * k, 77), b = random_vector(n, 78);
  const auto dy = random_vector(m * n, 79);
  std::vector<float> dx(m * k), dw(n * k, 0.0f), db(n, 0.0f);
  cpu::linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), db.data(), m, k, n);
  const auto xd = to_double(x), wd = to_double(w), bd = to_double(b), dyd = to_double(dy);
  CHECK(max_error(dx, numeric_gradient(xd, [&](const auto& v) { return dot(dyd, linear_f64(v, wd, bd, m, k, n)); })) <=
        2e-5);
  CHECK(max_error(dw, numeric_gradient(wd, [&](const auto& v) { return dot(dyd, linear_f64(xd, v, bd, m, k, n)); })) <=
        2e-5);
  CHECK(max_error(db, numeric_gradient(bd, [&](const auto& v) { return dot(dyd, linear_f64(xd, wd, v, m, k, n)); })) <=
        2e-5);
}

// ---- softmax cross-entropy

TEST_CASE("softmax_cross_entropy matches its reference, in place or not", "[backward_kernels]") {
  const std::size_t rows = 29, vocab = 1003;
  // Logits in [-8, 8): a spread of probabilities, some far from uniform.
  const auto logits = random_vector(rows * vocab, 81, -8.0f, 8.0f);
  auto targets = random_tokens(rows, vocab, 82);
  targets[3] = -1;  // ignored rows: padding
  targets[17] = -100;
  const float grad_scale = 1.0f / 27.0f;
  std::vector<float> losses(rows), dlogits(rows * vocab), losses_ref(rows), dlogits_ref(rows * vocab);
  cpu::softmax_cross_entropy(logits.data(), targets.data(), losses.data(), dlogits.data(), rows, vocab, grad_scale);
  cpu::softmax_cross_entropy_reference(logits.data(), targets.data(), losses_ref.data(), dlogits_ref.data(), rows,
                                       vocab, grad_scale);
  CHECK(max_error(losses, losses_ref) <= 1e-5);
  CHECK(max_error(dlogits, dlogits_ref) <= 1e-5);
  for (std::size_t r : {std::size_t{3}, std::size_t{17}}) {
    CHECK(losses[r] == 0.0f);
    for (std::size_t j = 0; j < vocab; ++j) REQUIRE(dlogits[r * vocab + j] == 0.0f);
  }
  // Each gradient row sums to 0 (softmax sums to 1, minus the one-hot).
  double row_sum = 0.0;
  for (std::size_t j = 0; j < vocab; ++j) row_sum += dlogits[vocab + j];
  CHECK(std::abs(row_sum) <= 1e-6);

  auto in_place = logits;
  std::vector<float> losses_in_place(rows);
  cpu::softmax_cross_entropy(in_place.data(), targets.data(), losses_in_place.data(), in_place.data(), rows, vocab,
                             grad_scale);
  CHECK(bit_equal(in_place, dlogits));
  CHECK(bit_equal(losses_in_place, losses));

  // Losses only, no gradient.
  std::vector<float> losses_only(rows);
  cpu::softmax_cross_entropy(logits.data(), targets.data(), losses_only.data(), nullptr, rows, vocab, grad_scale);
  CHECK(bit_equal(losses_only, losses));
}

TEST_CASE("softmax_cross_entropy rejects a target past the vocabulary before writing", "[backward_kernels]") {
  const std::size_t rows = 4, vocab = 9;
  const auto logits = random_vector(rows * vocab, 83);
  std::vector<std::int32_t> targets{1, 2, static_cast<std::int32_t>(vocab), 0};
  std::vector<float> losses(rows, 7.0f), dlogits(rows * vocab, 7.0f);
  CHECK_THROWS_AS(cpu::softmax_cross_entropy(logits.data(), targets.data(), losses.data(), dlogits.data(), rows,
                                             vocab, 1.0f),
                  std::out_of_range);
  CHECK_THROWS_AS(cpu::softmax_cross_entropy_reference(logits.data(), targets.data(), losses.data(), dlogits.data(),
                                                       rows, vocab, 1.0f),
                  std::out_of_range);
  for (float v : losses) REQUIRE(v == 7.0f);
  for (float v : dlogits) REQUIRE(v == 7.0f);
}

TEST_CASE("softmax_cross_entropy's gradient agrees with finite differences", "[backward_kernels][finite_difference]") {
  const std::size_t rows = 4, vocab = 11;
  const auto logits = random_vector(rows * vocab, 84, -3.0f, 3.0f);
  auto targets = random_tokens(rows, vocab, 85);
  targets[2] = -1;
  const float grad_scale = 0.25f;
  std::vector<float> losses(rows), dlogits(rows * vocab);
  cpu::softmax_cross_entropy(logits.data(), targets.data(), losses.data(), dlogits.data(), rows, vocab, grad_scale);
  CHECK(max_error(dlogits, numeric_gradient(to_double(logits), [&](const auto& v) {
                    return cross_entropy_f64(v, targets, vocab, grad_scale);
                  })) <= 2e-5);
}

// ---- attention

TEST_CASE("attention_flash's lse is the log-sum-exp of the scaled, masked scores", "[backward_kernels]") {
  for (bool causal : {false, true}) {
    const auto s = AttentionShape::self(2, 3, 45, 16, causal);
    const std::size_t n = s.q_len, d = s.head_dim, bh = s.batch * s.heads;
    const auto q = random_vector(bh * n * d, 91), k = random_vector(bh * n * d, 92), v = random_vector(bh * n * d, 93);
    std::vector<float> out(q.size()), out_plain(q.size()), lse(bh * n);
    cpu::attention_flash(q.data(), k.data(), v.data(), out.data(), lse.data(), s, {16, 32});
    cpu::attention_flash(q.data(), k.data(), v.data(), out_plain.data(), s, {16, 32});
    CHECK(bit_equal(out, out_plain));  // the lse overload computes the same output
    std::vector<double> lse_ref(bh * n);
    for (std::size_t head = 0; head < bh; ++head)
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t seen = causal ? i + 1 : n;
        std::vector<double> sc(seen);
        for (std::size_t j = 0; j < seen; ++j) {
          double dt = 0.0;
          for (std::size_t t = 0; t < d; ++t)
            dt += static_cast<double>(q[(head * n + i) * d + t]) * k[(head * n + j) * d + t];
          sc[j] = s.scale * dt;
        }
        const double max = *std::max_element(sc.begin(), sc.end());
        double sum = 0.0;
        for (double x : sc) sum += std::exp(x - max);
        lse_ref[head * n + i] = max + std::log(sum);
      }
    // lse is O(log N + max score) ≈ 5; fp32 scores and exp_poly give ~1e-6 absolute.
    CHECK(max_error(lse, lse_ref) <= 1e-5);
  }
}

namespace {

struct AttentionGradients {
  std::vector<float> dq, dk, dv;
};

struct AttentionInputs {
  AttentionShape shape;
  std::vector<float> q, k, v, dout, out, lse;
  AttentionInputs(const AttentionShape& s, std::uint64_t seed) : shape(s) {
    const std::size_t size = s.batch * s.heads * s.q_len * s.head_dim;
    q = random_vector(size, seed);
    k = random_vector(size, seed + 1);
    v = random_vector(size, seed + 2);
    dout = random_vector(size, seed + 3);
    out.resize(size);
    lse.resize(s.batch * s.heads * s.q_len);
  }
  AttentionGradients flash(cpu::FlashTiles tiles) {
    cpu::attention_flash(q.data(), k.data(), v.data(), out.data(), lse.data(), shape, tiles);
    AttentionGradients g{std::vector<float>(q.size()), std::vector<float>(q.size()), std::vector<float>(q.size())};
    cpu::attention_flash_backward(q.data(), k.data(), v.data(), out.data(), dout.data(), lse.data(), g.dq.data(),
                                  g.dk.data(), g.dv.data(), shape, tiles);
    return g;
  }
  AttentionGradients naive() {
    std::vector<float> scores(cpu::naive_workspace_elements(shape));
    cpu::attention_naive(q.data(), k.data(), v.data(), out.data(), scores.data(), shape);
    AttentionGradients g{std::vector<float>(q.size()), std::vector<float>(q.size()), std::vector<float>(q.size())};
    cpu::attention_naive_backward(q.data(), k.data(), v.data(), out.data(), dout.data(), g.dq.data(), g.dk.data(),
                                  g.dv.data(), scores.data(), shape);
    return g;
  }
  void reference(std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv) {
    dq.assign(q.size(), 0.0);
    dk.assign(q.size(), 0.0);
    dv.assign(q.size(), 0.0);
    cpu::attention_backward_reference(q.data(), k.data(), v.data(), dout.data(), dq.data(), dk.data(), dv.data(),
                                      shape);
  }
};

}  // namespace

TEST_CASE("attention backward, naive and flash, matches the float64 reference", "[backward_kernels]") {
  struct Setup {
    std::size_t batch, heads, n, d;
    cpu::FlashTiles tiles;
  };
  // N = 45 and 100 are not multiples of the tiles; 300 with the default tiles has two key tiles,
  // the second partial.
  for (const Setup& setup : {Setup{2, 3, 45, 16, {16, 32}}, Setup{1, 2, 100, 32, {32, 16}},
                             Setup{1, 2, 300, 64, cpu::FlashTiles{}}}) {
    for (bool causal : {false, true}) {
      INFO("N " << setup.n << " d " << setup.d << " tiles " << setup.tiles.q_tile << "x" << setup.tiles.kv_tile
                << " causal " << causal);
      AttentionInputs in(AttentionShape::self(setup.batch, setup.heads, setup.n, setup.d, causal), 100 + setup.n);
      std::vector<double> dq, dk, dv;
      in.reference(dq, dk, dv);
      const auto flash = in.flash(setup.tiles);
      CHECK(max_error(flash.dq, dq) <= 5e-5);
      CHECK(max_error(flash.dk, dk) <= 5e-5);
      CHECK(max_error(flash.dv, dv) <= 5e-5);
      const auto naive = in.naive();
      CHECK(max_error(naive.dq, dq) <= 5e-5);
      CHECK(max_error(naive.dk, dk) <= 5e-5);
      CHECK(max_error(naive.dv, dv) <= 5e-5);
    }
  }
}

TEST_CASE("attention backward agrees with finite differences", "[backward_kernels][finite_difference]") {
  for (bool causal : {false, true}) {
    INFO("causal " << causal);
    AttentionInputs in(AttentionShape::self(1, 2, 45, 8, causal), 200);
    const auto& s = in.shape;
    const auto qd = to_double(in.q), kd = to_double(in.k), vd = to_double(in.v), dod = to_double(in.dout);
    const auto fd_q = numeric_gradient(qd, [&](const auto& x) { return dot(dod, attention_f64(x, kd, vd, s)); });
    const auto fd_k = numeric_gradient(kd, [&](const auto& x) { return dot(dod, attention_f64(qd, x, vd, s)); });
    const auto fd_v = numeric_gradient(vd, [&](const auto& x) { return dot(dod, attention_f64(qd, kd, x, s)); });
    for (const auto& g : {in.flash({16, 32}), in.naive()}) {
      CHECK(max_error(g.dq, fd_q) <= 2e-5);
      CHECK(max_error(g.dk, fd_k) <= 2e-5);
      CHECK(max_error(g.dv, fd_v) <= 2e-5);
    }
    std::vector<double> dq, dk, dv;
    in.reference(dq, dk, dv);
    CHECK(max_error(dq, fd_q) <= 1e-6);  // the reference is float64 throughout
    CHECK(max_error(dk, fd_k) <= 1e-6);
    CHECK(max_error(dv, fd_v) <= 1e-6);
  }
}

TEST_CASE("attention_flash_backward is bit-identical for 1 and 2 threads", "[backward_kernels]") {
  ThreadsRestored restore;
  for (bool causal : {false, true}) {
    AttentionInputs in(AttentionShape::self(2, 2, 77, 16, causal), 300);
    set_threads(1);
    const auto one = in.flash({16, 32});
    set_threads(2);
    const auto two = in.flash({16, 32});
    CHECK(bit_equal(one.dq, two.dq));
    CHECK(bit_equal(one.dk, two.dk));
    CHECK(bit_equal(one.dv, two.dv));
  }
}

TEST_CASE("attention backward rejects shapes other than self-attention", "[backward_kernels]") {
  auto s = AttentionShape::self(1, 1, 8, 4, true);
  s.kv_capacity = 16;  // a KV cache
  const std::vector<float> x(16 * 4, 0.5f), lse(8, 0.0f);
  std::vector<float> g(16 * 4), scores(8 * 8);
  CHECK_THROWS_AS(cpu::attention_flash_backward(x.data(), x.data(), x.data(), x.data(), x.data(), lse.data(),
                                                g.data(), g.data(), g.data(), s),
                  std::invalid_argument);
  CHECK_THROWS_AS(cpu::attention_naive_backward(x.data(), x.data(), x.data(), x.data(), x.data(), g.data(), g.data(),
                                                g.data(), scores.data(), s),
                  std::invalid_argument);
}

// ---- reduced precision

TEST_CASE("round_through rounds as f16 and bf16 storage would", "[backward_kernels]") {
  const float tiny = 1e-8f, huge = 1e5f, very_small = 1e-30f;
  std::vector<float> f16{tiny, huge, -huge, 1.0f + 1.0f / 4096.0f, 65504.0f, 6e-8f};
  cpu::round_through(DType::f16, f16.data(), f16.size());
  CHECK(f16[0] == 0.0f);  // below half the smallest subnormal (2^-25 ≈ 3e-8)
  CHECK(f16[1] == std::numeric_limits<float>::infinity());
  CHECK(f16[2] == -std::numeric_limits<float>::infinity());
  CHECK(f16[3] == 1.0f);  // half an ulp of 1 (2^-11): a tie, to even
  CHECK(f16[4] == 65504.0f);
  CHECK(f16[5] == std::ldexp(1.0f, -24));  // the smallest subnormal

  std::vector<float> bf16{very_small, huge, 1.0f + 1.0f / 256.0f};
  cpu::round_through(DType::bf16, bf16.data(), bf16.size());
  CHECK(bf16[0] != 0.0f);
  CHECK(std::abs(bf16[0] - very_small) <= very_small / 128.0f);  // 8 significant bits
  CHECK(bf16[1] == 99840.0f);  // 1e5 to 8 significant bits
  CHECK(bf16[2] == 1.0f);      // a tie, to even

  // A larger array through the OpenMP loops: every value is its own f16 rounding.
  auto x = random_vector(4099, 94, -70000.0f, 70000.0f);
  auto rounded = x;
  cpu::round_through(DType::f16, rounded.data(), rounded.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    REQUIRE(std::bit_cast<std::uint32_t>(rounded[i]) ==
            std::bit_cast<std::uint32_t>(f16_to_float(float_to_f16(x[i]))));

  auto same = x;
  cpu::round_through(DType::f32, same.data(), same.size());
  CHECK(bit_equal(same, x));
  CHECK_THROWS_AS(cpu::round_through(DType::i8, same.data(), same.size()), std::invalid_argument);
}

TEST_CASE("value_census counts zeros and non-finite values", "[backward_kernels]") {
  auto x = random_vector(1000, 95, 0.5f, 1.0f);
  x[3] = 0.0f;
  x[400] = -0.0f;
  x[500] = std::numeric_limits<float>::quiet_NaN();
  x[999] = -std::numeric_limits<float>::infinity();
  const auto census = cpu::value_census(x.data(), x.size());
  CHECK(census.zeros == 2);
  CHECK(census.nonfinite == 2);
}

// ---- the CUDA twins against the CPU kernels

#ifdef AIOPT_HAVE_CUDA

using aiopt::test::download, aiopt::test::upload;

namespace gpu = aiopt::kernels::cuda;

namespace {

using aiopt::test::differing;
using aiopt::test::max_abs;
using aiopt::test::outside;

constexpr double u = aiopt::test::fp32_unit_roundoff;

// Tolerance of a sum of t terms on both sides, per element, from Σ|terms|.
std::vector<double> sum_tolerance(const std::vector<double>& abs_sums, std::size_t terms) {
  std::vector<double> tol(abs_sums.size());
  for (std::size_t i = 0; i < tol.size(); ++i) tol[i] = 4.0 * static_cast<double>(terms + 4) * u * abs_sums[i];
  return tol;
}

}  // namespace

// ---- layernorm

TEST_CASE("cuda layernorm_forward and layernorm_backward match the CPU", "[backward_kernels][gpu]") {
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

TEST_CASE("cuda gelu_tanh_backward matches the float64 reference", "[backward_kernels][gpu]") {
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

TEST_CASE("cuda merge_qkv and split_heads equal the CPU's, bit for bit", "[backward_kernels][gpu]") {
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

TEST_CASE("cuda embedding_backward equals the CPU's, bit for bit", "[backward_kernels][gpu]") {
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

TEST_CASE("cuda softmax_cross_entropy matches the float64 reference, in place too", "[backward_kernels][gpu]") {
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

TEST_CASE("cuda round_through and value_census equal the CPU's", "[backward_kernels][gpu]") {
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
    CHECK(differing(got, want, true) == 0);

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

TEST_CASE("cuda bias_backward and linear_backward match the CPU", "[backward_kernels][gpu]") {
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
  // A frozen weight: dW skipped, dx and db as before.
  auto d_dx3 = upload(std::vector<float>(m * k, NAN));
  auto d_db3 = upload(db0);
  gpu::linear_backward(d_x.data(), d_w.data(), d_dy.data(), d_dx3.data(), nullptr, d_db3.data(), m, k, n, nullptr);
  CHECK(differing(download(d_dx3), download(d_dx)) == 0);
  CHECK(differing(download(d_db3), download(d_db)) == 0);
}

TEST_CASE("cuda linear_half and linear_backward_half give the fp32 products of 16-bit operands", "[backward_kernels][gpu]") {
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
    // A frozen weight: dW skipped, dx the same bits.
    auto d_dx2 = upload(std::vector<float>(m * k, NAN));
    gpu::linear_backward_half(d_x.data(), d_w.data(), d_dy.data(), d_dx2.data(), nullptr, nullptr, m, k, n, dtype,
                              nullptr);
    CHECK(differing(download(d_dx2), download(d_dx)) == 0);
  }
  CHECK_THROWS_AS(gpu::linear_half(nullptr, nullptr, nullptr, nullptr, 1, 1, 1, DType::f32, nullptr),
                  std::invalid_argument);
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

struct CudaAttentionInputs {
  AttentionShape shape;
  std::vector<float> q, k, v, dout;
  explicit CudaAttentionInputs(const AttentionCase& c)
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

TEST_CASE("cuda attention_flash with lse matches the CPU flash forward and its lse", "[backward_kernels][gpu]") {
  for (const AttentionCase& c : attention_cases) {
    INFO("batch " << c.batch << " heads " << c.heads << " n " << c.n << " d " << c.head_dim << " causal " << c.causal);
    const CudaAttentionInputs in(c);
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

TEST_CASE("cuda attention backward, flash and naive, match the float64 reference", "[backward_kernels][gpu]") {
  for (const AttentionCase& c : attention_cases) {
    INFO("batch " << c.batch << " heads " << c.heads << " n " << c.n << " d " << c.head_dim << " causal " << c.causal);
    const CudaAttentionInputs in(c);
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

TEST_CASE("cuda attention backward rejects shapes other than self-attention", "[backward_kernels][gpu]") {
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

TEST_CASE("cuda training kernels repeat bit for bit", "[backward_kernels][gpu]") {
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
  const CudaAttentionInputs attn({4, 4, 256, 64, true});
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

// The CUDA flash backward keeps its workspace O(B·H·N·d) (FlashAttention-2's point): measured by
// the tracked allocator, at most one (B, H, N, d) tensor, where a dQ share per key tile would
// take N/32 of them; and its gradients match the naive backward's (5e-5, as the CPU attention).
TEST_CASE("cuda flash backward needs O(N·d) workspace and matches the naive backward", "[backward_kernels][gpu]") {
  for (const bool causal : {false, true})
    for (const std::size_t d : {std::size_t{64}, std::size_t{128}}) {
      INFO("causal " << causal << " head_dim " << d);
      const AttentionShape s = AttentionShape::self(2, 3, 256, d, causal);
      const std::size_t size = s.batch * s.heads * s.q_len * d;
      auto q = upload(random_vector(size, 301)), k = upload(random_vector(size, 302)),
           v = upload(random_vector(size, 303)), dout = upload(random_vector(size, 304));
      memory::Buffer<float> out(Device::cuda(), size), lse(Device::cuda(), s.batch * s.heads * s.q_len);
      gpu::attention_flash(q.data(), k.data(), v.data(), out.data(), lse.data(), s, nullptr);
      memory::Buffer<float> dq(Device::cuda(), size), dk(Device::cuda(), size), dv(Device::cuda(), size);
      std::size_t workspace = 0;
      {
        memory::Scope scope(Device::cuda());
        gpu::attention_flash_backward(q.data(), k.data(), v.data(), out.data(), dout.data(), lse.data(), dq.data(),
                                      dk.data(), dv.data(), s, nullptr);
        CUDA_CHECK(cudaDeviceSynchronize());
        workspace = scope.peak_bytes();
      }
      CHECK(workspace <= size * sizeof(float));

      memory::Buffer<float> scores(Device::cuda(), s.batch * s.heads * s.q_len * s.kv_len);
      memory::Buffer<float> ndq(Device::cuda(), size), ndk(Device::cuda(), size), ndv(Device::cuda(), size);
      gpu::attention_naive_backward(q.data(), k.data(), v.data(), out.data(), dout.data(), ndq.data(), ndk.data(),
                                    ndv.data(), scores.data(), s, nullptr);
      CHECK(max_error(download(dq), download(ndq)) <= 5e-5);
      CHECK(max_error(download(dk), download(ndk)) <= 5e-5);
      CHECK(max_error(download(dv), download(ndv)) <= 5e-5);
    }
}

#endif  // AIOPT_HAVE_CUDA
