// The low-rank adapter kernels (kernels/cpu/lora.hpp, kernels/cuda/lora.hpp): the forward
// against a float64 reference, the backward against float64 central finite differences, the
// zero-B start, merge and unmerge, the initialisation, argument checks, and ([gpu]) the CUDA
// kernels against the CPU ones.
//
// Tolerances, with u = 2^-24 the unit roundoff of fp32 and every input uniform in [-1, 1):
// - Sums: an fp32 sum of t rounded products is within about t·u·Σ|terms| of exact, in any order
//   (first order; Higham, Accuracy and Stability of Numerical Algorithms, 3.1). A product of
//   products (u = x·Aᵀ, then u·Bᵀ) carries the first product's error into the second, so its
//   t is the sum of both lengths. Each output is checked elementwise against
//   2·(t + 2)·u·Σ|terms|, with Σ|terms| computed in double from the absolute values (sum_bound).
//   The CUDA kernels are checked against the CPU ones at twice that (both sides err).
// - Finite differences: central differences in float64 with h = 1e-5 err by about 1e-9 relative;
//   the fp32 gradients by about 1e-6; they are compared at 2e-5 of the largest gradient
//   magnitude, far below the O(1e-2..1) error of a missing term or a wrong scale.
// - Merge: a merged linear layer and the adapter forward round differently (W + s·B·A is rounded
//   once more), about (in + r)·u relative to max |y|; checked at 1e-5 of max |y|.
// - Unmerge: W1 = fl(W + s·B·A), W2 = fl(W1 − s·B·A), each a sum of r + 1 terms, so
//   |W2 − W| <= (r + 2)·u·(2·|W| + 3·S) to first order, S = s·Σ_k |B_ik·A_kj|; checked at
//   2·(r + 2)·u·(|W| + 2·S).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.hpp"
#include "kernels/cpu/gemm.hpp"
#include "kernels/cpu/lora.hpp"
#include "support/error_metric.hpp"
#include "support/numeric_gradient.hpp"
#include "support/random.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "kernels/cuda/lora.hpp"
#include "support/device_copy.hpp"
#endif

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
using cpu::LoraShape;
using test::differing;
using test::fp32_unit_roundoff;
using test::max_abs;
using test::outside;
using test::numeric_gradient;
using test::random_vector;

namespace {

constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();
using Doubles = std::vector<double>;

Doubles to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// One adapted layer's inputs, fresh from `seed`: x, W, bias (empty when absent), A and B all
// uniform in [-1, 1), so that the adapter's part of y is as large as the frozen layer's.
struct Problem {
  LoraShape shape;
  float scale = 0.0f;
  std::vector<float> x, w, bias, a, b;
  const float* bias_ptr() const { return bias.empty() ? nullptr : bias.data(); }
};

Problem make_problem(const LoraShape& shape, float alpha, bool with_bias, std::uint64_t seed) {
  Problem p;
  p.shape = shape;
  p.scale = cpu::lora_scale(alpha, shape.rank);
  p.x = random_vector(shape.rows * shape.in, seed);
  p.w = random_vector(shape.out * shape.in, seed + 1);
  if (with_bias) p.bias = random_vector(shape.out, seed + 2);
  p.a = random_vector(shape.rank * shape.in, seed + 3);
  p.b = random_vector(shape.out * shape.rank, seed + 4);
  return p;
}

// ---- float64 references

// x·Aᵀ: (rows, rank).
Doubles u_f64(const Doubles& x, const Doubles& a, const LoraShape& s) {
  Doubles u(s.rows * s.rank, 0.0);
  for (std::size_t i = 0; i < s.rows; ++i)
    for (std::size_t k = 0; k < s.rank; ++k)
      for (std::size_t p = 0; p < s.in; ++p) u[i * s.rank + k] += x[i * s.in + p] * a[k * s.in + p];
  return u;
}

// y = x·Wᵀ + bias + scale·(x·Aᵀ)·Bᵀ; bias empty when absent.
Doubles forward_f64(const Doubles& x, const Doubles& w, const Doubles& bias, const Doubles& a, const Doubles& b,
                    double scale, const LoraShape& s) {
  const Doubles u = u_f64(x, a, s);
  Doubles y(s.rows * s.out);
  for (std::size_t i = 0; i < s.rows; ++i)
    for (std::size_t j = 0; j < s.out; ++j) {
      double frozen = bias.empty() ? 0.0 : bias[j], adapter = 0.0;
      for (std::size_t p = 0; p < s.in; ++p) frozen += x[i * s.in + p] * w[j * s.in + p];
      for (std::size_t k = 0; k < s.rank; ++k) adapter += u[i * s.rank + k] * b[j * s.rank + k];
      y[i * s.out + j] = frozen + scale * adapter;
    }
  return y;
}

Doubles forward_f64(const Problem& p) {
  return forward_f64(to_double(p.x), to_double(p.w), to_double(p.bias), to_double(p.a), to_double(p.b), p.scale,
                     p.shape);
}

// ---- Σ|terms| of each output, in double from the absolute values

std::vector<float> absolute(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = std::fabs(v[i]);
  return r;
}

// |x|·|A|ᵀ: (rows, rank).
Doubles u_abs(const Problem& p) { return u_f64(to_double(absolute(p.x)), to_double(absolute(p.a)), p.shape); }

// |bias| + |x|·|W|ᵀ + scale·(|x|·|A|ᵀ)·|B|ᵀ: y's, and (with W zero and no bias) the adapter's.
Doubles y_abs(const Problem& p) {
  return forward_f64(to_double(absolute(p.x)), to_double(absolute(p.w)), to_double(absolute(p.bias)),
                     to_double(absolute(p.a)), to_double(absolute(p.b)), p.scale, p.shape);
}

// The backward's: |dy|·|B| (rows, rank), then dA's, dB's and dx's, with the start values of the
// accumulated gradients (da0, db0) counted as terms.
struct BackwardAbs {
  Doubles da, db, dx;
};

BackwardAbs backward_abs(const Problem& p, const std::vector<float>& dy, const std::vector<float>& da0,
                         const std::vector<float>& db0) {
  const auto [m, in, out, r] = p.shape;
  const double s = p.scale;
  const Doubles ua = u_abs(p);
  Doubles va(m * r, 0.0);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t k = 0; k < r; ++k)
      for (std::size_t j = 0; j < out; ++j) va[i * r + k] += std::fabs(dy[i * out + j] * p.b[j * r + k]);
  BackwardAbs abs{Doubles(r * in), Doubles(out * r), Doubles(m * in, 0.0)};
  for (std::size_t k = 0; k < r; ++k)
    for (std::size_t q = 0; q < in; ++q) {
      double sum = 0.0;
      for (std::size_t i = 0; i < m; ++i) sum += va[i * r + k] * std::fabs(p.x[i * in + q]);
      abs.da[k * in + q] = std::fabs(da0[k * in + q]) + s * sum;
    }
  for (std::size_t j = 0; j < out; ++j)
    for (std::size_t k = 0; k < r; ++k) {
      double sum = 0.0;
      for (std::size_t i = 0; i < m; ++i) sum += std::fabs(dy[i * out + j]) * ua[i * r + k];
      abs.db[j * r + k] = std::fabs(db0[j * r + k]) + s * sum;
    }
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t q = 0; q < in; ++q) {
      double frozen = 0.0, adapter = 0.0;
      for (std::size_t j = 0; j < out; ++j) frozen += std::fabs(dy[i * out + j] * p.w[j * in + q]);
      for (std::size_t k = 0; k < r; ++k) adapter += va[i * r + k] * std::fabs(p.a[k * in + q]);
      abs.dx[i * in + q] = frozen + s * adapter;
    }
  return abs;
}

// The per-element bound 2·(terms + 2)·u·Σ|terms| of one fp32 computation against exact.
std::vector<double> sum_bound(const Doubles& abs_sums, std::size_t terms) {
  std::vector<double> tol(abs_sums.size());
  for (std::size_t i = 0; i < tol.size(); ++i)
    tol[i] = 2.0 * static_cast<double>(terms + 2) * fp32_unit_roundoff * abs_sums[i];
  return tol;
}

// s·Σ_k |B_ik·A_kj| (out, in): the magnitude of the merged product's terms.
Doubles merge_abs(const Problem& p) {
  const auto [m, in, out, r] = p.shape;
  Doubles abs(out * in, 0.0);
  for (std::size_t i = 0; i < out; ++i)
    for (std::size_t j = 0; j < in; ++j) {
      for (std::size_t k = 0; k < r; ++k) abs[i * in + j] += std::fabs(p.b[i * r + k] * p.a[k * in + j]);
      abs[i * in + j] *= p.scale;
    }
  return abs;
}

double dot(const Doubles& a, const Doubles& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

std::size_t nonzero(const std::vector<float>& v) {
  std::size_t n = 0;
  for (float x : v) n += x != 0.0f;
  return n;
}

// The message of the std::invalid_argument that f throws; any other exception fails the test case.
template <class F>
std::string invalid_argument_message(F f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no std::invalid_argument thrown)";
}

}  // namespace

// ---- forward

TEST_CASE("lora_forward matches a float64 reference for odd shapes and ranks 1 2 and 8", "[lora]") {
  std::uint64_t seed = 100;
  for (const LoraShape base : {LoraShape{7, 13, 11, 0}, LoraShape{1, 9, 17, 0}, LoraShape{33, 65, 31, 0}})
    for (const std::size_t rank : {1, 2, 8})
      for (const bool with_bias : {false, true}) {
        LoraShape shape = base;
        shape.rank = rank;
        CAPTURE(shape.rows, shape.in, shape.out, shape.rank, with_bias);
        const Problem p = make_problem(shape, 16.0f, with_bias, seed += 10);
        std::vector<float> y(shape.rows * shape.out, nan_f), u(shape.rows * rank, nan_f);
        cpu::lora_forward(p.x.data(), p.w.data(), p.bias_ptr(), p.a.data(), p.b.data(), p.scale, u.data(), y.data(),
                          shape);
        const Doubles y_ref = forward_f64(p);
        const auto y_tol = sum_bound(y_abs(p), shape.in + rank + 3);
        CHECK(outside(y, y_ref, y_tol) == 0);
        CHECK(outside(u, u_f64(to_double(p.x), to_double(p.a), shape), sum_bound(u_abs(p), shape.in)) == 0);

        // The check sees the adapter: the frozen layer alone falls outside the bound.
        std::vector<float> frozen(y.size());
        cpu::linear(p.x.data(), p.w.data(), p.bias_ptr(), frozen.data(), shape.rows, shape.in, shape.out);
        CHECK(outside(frozen, y_ref, y_tol) > 0);

        // Without a u buffer the same products run on scratch: the same bits.
        std::vector<float> y_scratch(y.size(), nan_f);
        cpu::lora_forward(p.x.data(), p.w.data(), p.bias_ptr(), p.a.data(), p.b.data(), p.scale, nullptr,
                          y_scratch.data(), shape);
        CHECK(differing(y_scratch, y) == 0);
      }
}

// ---- backward

TEST_CASE("lora_backward agrees with float64 central finite differences of the loss sum of y times g", "[lora]") {
  std::uint64_t seed = 300;
  for (const std::size_t rank : {1, 2, 8}) {
    const LoraShape shape{5, 9, 11, rank};
    CAPTURE(rank);
    const Problem p = make_problem(shape, 16.0f, true, seed += 10);
    const auto g = random_vector(shape.rows * shape.out, seed + 7);
    std::vector<float> y(shape.rows * shape.out), u(shape.rows * rank);
    cpu::lora_forward(p.x.data(), p.w.data(), p.bias_ptr(), p.a.data(), p.b.data(), p.scale, u.data(), y.data(),
                      shape);
    // dL/dy = g; dA and dB accumulate from zero, dx is written over NaN.
    std::vector<float> da(rank * shape.in, 0.0f), db(shape.out * rank, 0.0f), dx(shape.rows * shape.in, nan_f);
    cpu::lora_backward(p.x.data(), p.w.data(), p.a.data(), p.b.data(), u.data(), g.data(), p.scale, dx.data(),
                       da.data(), db.data(), shape);

    const Doubles xd = to_double(p.x), wd = to_double(p.w), biasd = to_double(p.bias), ad = to_double(p.a),
                  bd = to_double(p.b), gd = to_double(g);
    const double s = p.scale;
    const auto loss = [&](const Doubles& x, const Doubles& a, const Doubles& b) {
      return dot(gd, forward_f64(x, wd, biasd, a, b, s, shape));
    };
    const auto fd_x = numeric_gradient(xd, [&](const Doubles& v) { return loss(v, ad, bd); });
    const auto fd_a = numeric_gradient(ad, [&](const Doubles& v) { return loss(xd, v, bd); });
    const auto fd_b = numeric_gradient(bd, [&](const Doubles& v) { return loss(xd, ad, v); });
    CHECK(test::max_relative_error(dx, fd_x, 1e-3) <= 2e-5);
    CHECK(test::max_relative_error(da, fd_a, 1e-3) <= 2e-5);
    CHECK(test::max_relative_error(db, fd_b, 1e-3) <= 2e-5);

    // And elementwise against the formulas in float64, within the fp32 sum bound: finer than
    // the differences, it sees a scale off by 1e-5.
    const Doubles ud = u_f64(xd, ad, shape);
    Doubles v(shape.rows * rank, 0.0), da_ref(da.size(), 0.0), db_ref(db.size(), 0.0), dx_ref(dx.size(), 0.0);
    for (std::size_t i = 0; i < shape.rows; ++i)
      for (std::size_t k = 0; k < rank; ++k)
        for (std::size_t j = 0; j < shape.out; ++j)
          v[i * rank + k] += gd[i * shape.out + j] * bd[j * rank + k];
    for (std::size_t i = 0; i < shape.rows; ++i) {
      for (std::size_t k = 0; k < rank; ++k) {
        for (std::size_t q = 0; q < shape.in; ++q) {
          da_ref[k * shape.in + q] += s * v[i * rank + k] * xd[i * shape.in + q];
          dx_ref[i * shape.in + q] += s * v[i * rank + k] * ad[k * shape.in + q];
        }
        for (std::size_t j = 0; j < shape.out; ++j)
          db_ref[j * rank + k] += s * gd[i * shape.out + j] * ud[i * rank + k];
      }
      for (std::size_t j = 0; j < shape.out; ++j)
        for (std::size_t q = 0; q < shape.in; ++q)
          dx_ref[i * shape.in + q] += gd[i * shape.out + j] * wd[j * shape.in + q];
    }
    const std::vector<float> zero_a(da.size(), 0.0f), zero_b(db.size(), 0.0f);
    const auto sums = backward_abs(p, g, zero_a, zero_b);
    CHECK(outside(da, da_ref, sum_bound(sums.da, shape.out + shape.rows + 2)) == 0);
    CHECK(outside(db, db_ref, sum_bound(sums.db, shape.in + shape.rows + 2)) == 0);
    CHECK(outside(dx, dx_ref, sum_bound(sums.dx, shape.out + rank + 2)) == 0);

    // u not kept: recomputed from x and A by the forward's product, so the same bits.
    std::vector<float> da2(da.size(), 0.0f), db2(db.size(), 0.0f), dx2(dx.size(), nan_f);
    cpu::lora_backward(p.x.data(), p.w.data(), p.a.data(), p.b.data(), nullptr, g.data(), p.scale, dx2.data(),
                       da2.data(), db2.data(), shape);
    CHECK(differing(da2, da) == 0);
    CHECK(differing(db2, db) == 0);
    CHECK(differing(dx2, dx) == 0);

    // dx skipped (then W is not needed): the same parameter gradients.
    std::vector<float> da3(da.size(), 0.0f), db3(db.size(), 0.0f);
    cpu::lora_backward(p.x.data(), nullptr, p.a.data(), p.b.data(), u.data(), g.data(), p.scale, nullptr, da3.data(),
                       db3.data(), shape);
    CHECK(differing(da3, da) == 0);
    CHECK(differing(db3, db) == 0);

    // dA and dB accumulate onto what they hold, as linear_backward's dW does; dx is overwritten.
    const auto da0 = random_vector(da.size(), seed + 8), db0 = random_vector(db.size(), seed + 9);
    std::vector<float> da4 = da0, db4 = db0, dx4(dx.size(), 1e6f);
    cpu::lora_backward(p.x.data(), p.w.data(), p.a.data(), p.b.data(), u.data(), g.data(), p.scale, dx4.data(),
                       da4.data(), db4.data(), shape);
    Doubles da_sum(da.size()), db_sum(db.size());
    for (std::size_t i = 0; i < da.size(); ++i) da_sum[i] = static_cast<double>(da0[i]) + da[i];
    for (std::size_t i = 0; i < db.size(); ++i) db_sum[i] = static_cast<double>(db0[i]) + db[i];
    CHECK(test::max_relative_error(da4, da_sum, 1e-3) <= 1e-6);
    CHECK(test::max_relative_error(db4, db_sum, 1e-3) <= 1e-6);
    CHECK(differing(dx4, dx) == 0);
  }
}

// ---- the zero-B start

TEST_CASE("with B zero from lora_init the layer is the plain linear one and only dB gets a gradient", "[lora]") {
  const LoraShape shape{9, 21, 15, 4};
  Problem p = make_problem(shape, 8.0f, true, 500);
  p.b.assign(p.b.size(), nan_f);
  cpu::lora_init(p.a.data(), p.b.data(), 501, shape);
  REQUIRE(nonzero(p.b) == 0);

  std::vector<float> y(shape.rows * shape.out), u(shape.rows * shape.rank), plain(y.size());
  cpu::lora_forward(p.x.data(), p.w.data(), p.bias_ptr(), p.a.data(), p.b.data(), p.scale, u.data(), y.data(), shape);
  cpu::linear(p.x.data(), p.w.data(), p.bias_ptr(), plain.data(), shape.rows, shape.in, shape.out);
  CHECK(differing(y, plain) == 0);

  const auto dy = random_vector(y.size(), 502);
  std::vector<float> da(shape.rank * shape.in, 0.0f), db(shape.out * shape.rank, 0.0f), dx(shape.rows * shape.in);
  cpu::lora_backward(p.x.data(), p.w.data(), p.a.data(), p.b.data(), u.data(), dy.data(), p.scale, dx.data(),
                     da.data(), db.data(), shape);
  CHECK(nonzero(da) == 0);
  CHECK(nonzero(db) == db.size());
  // dB = scale·dyᵀ·(x·Aᵀ), against float64.
  const Doubles ud = u_f64(to_double(p.x), to_double(p.a), shape);
  Doubles db_ref(db.size(), 0.0);
  for (std::size_t j = 0; j < shape.out; ++j)
    for (std::size_t k = 0; k < shape.rank; ++k) {
      for (std::size_t i = 0; i < shape.rows; ++i)
        db_ref[j * shape.rank + k] += static_cast<double>(dy[i * shape.out + j]) * ud[i * shape.rank + k];
      db_ref[j * shape.rank + k] *= p.scale;
    }
  const auto sums = backward_abs(p, dy, da, std::vector<float>(db.size(), 0.0f));
  CHECK(outside(db, db_ref, sum_bound(sums.db, shape.in + shape.rows + 2)) == 0);
  // dx is the frozen layer's.
  std::vector<float> dx_plain(dx.size()), dw(shape.out * shape.in, 0.0f);
  cpu::linear_backward(p.x.data(), p.w.data(), dy.data(), dx_plain.data(), dw.data(), nullptr, shape.rows, shape.in,
                       shape.out);
  CHECK(differing(dx, dx_plain) == 0);
}

// ---- merge and unmerge

TEST_CASE("the adapter term on a slice of a wider output equals the whole layer's bit for bit", "[lora]") {
  // An adapter on output columns [off, off + out) of rows ld floats apart, as on the query or
  // value part of a fused QKV projection: the same products as lora_forward and lora_backward,
  // so the same bits, and every other column untouched.
  const LoraShape shape{37, 29, 23, 4};
  const std::size_t ld = 3 * shape.out + 5, off = 2 * shape.out;
  const Problem p = make_problem(shape, 8.0f, true, 77);
  const auto [m, in, out, r] = shape;
  std::vector<float> y(m * out), u(m * r);
  cpu::lora_forward(p.x.data(), p.w.data(), p.bias_ptr(), p.a.data(), p.b.data(), p.scale, u.data(), y.data(), shape);

  const std::vector<float> wide0 = random_vector(m * ld, 78);
  std::vector<float> wide = wide0, base(m * out);
  cpu::linear(p.x.data(), p.w.data(), p.bias_ptr(), base.data(), m, in, out);
  for (std::size_t i = 0; i < m; ++i) std::copy_n(base.data() + i * out, out, wide.data() + i * ld + off);
  cpu::lora_adapter_forward(p.x.data(), p.a.data(), p.b.data(), p.scale, nullptr, wide.data() + off, ld, shape);
  std::size_t slice_differs = 0, others_changed = 0;
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < ld; ++j) {
      const bool inside = j >= off && j < off + out;
      if (inside) slice_differs += wide[i * ld + j] != y[i * out + j - off];
      else others_changed += wide[i * ld + j] != wide0[i * ld + j];
    }
  CHECK(slice_differs == 0);
  CHECK(others_changed == 0);

  // Backward from a wide dy whose other columns are noise the adapter must not read.
  std::vector<float> dy_wide = random_vector(m * ld, 79), dy(m * out);
  for (std::size_t i = 0; i < m; ++i) std::copy_n(dy_wide.data() + i * ld + off, out, dy.data() + i * out);
  const auto da0 = random_vector(r * in, 80), db0 = random_vector(out * r, 81);
  std::vector<float> da = da0, db = db0, dx(m * in);
  cpu::lora_backward(p.x.data(), p.w.data(), p.a.data(), p.b.data(), nullptr, dy.data(), p.scale, dx.data(), da.data(),
                     db.data(), shape);
  std::vector<float> da2 = da0, db2 = db0, dx2(m * in);
  cpu::sgemm(false, false, m, in, out, 1.0f, dy.data(), out, p.w.data(), in, 0.0f, dx2.data(), in);  // dy·W
  cpu::lora_adapter_backward(p.x.data(), p.a.data(), p.b.data(), nullptr, dy_wide.data() + off, ld, p.scale,
                             dx2.data(), da2.data(), db2.data(), shape);
  CHECK(differing(da2, da) == 0);
  CHECK(differing(db2, db) == 0);
  CHECK(differing(dx2, dx) == 0);
  CHECK_THROWS_AS(cpu::lora_adapter_forward(p.x.data(), p.a.data(), p.b.data(), p.scale, nullptr, wide.data(), out - 1,
                                            shape),
                  std::invalid_argument);
}

TEST_CASE("lora_merge then a plain linear equals the adapter forward and lora_unmerge restores W", "[lora]") {
  std::uint64_t seed = 700;
  for (const std::size_t rank : {1, 2, 8}) {
    const LoraShape shape{17, 33, 29, rank};
    CAPTURE(rank);
    const Problem p = make_problem(shape, 16.0f, true, seed += 10);
    std::vector<float> y(shape.rows * shape.out), merged_y(y.size()), frozen_y(y.size());
    cpu::lora_forward(p.x.data(), p.w.data(), p.bias_ptr(), p.a.data(), p.b.data(), p.scale, nullptr, y.data(), shape);
    std::vector<float> w = p.w;
    cpu::lora_merge(w.data(), p.a.data(), p.b.data(), p.scale, shape);
    cpu::linear(p.x.data(), w.data(), p.bias_ptr(), merged_y.data(), shape.rows, shape.in, shape.out);
    CHECK(test::max_relative_error(merged_y, y) <= 1e-5);
    // Not vacuous: the adapter moves y by far more than that.
    cpu::linear(p.x.data(), p.w.data(), p.bias_ptr(), frozen_y.data(), shape.rows, shape.in, shape.out);
    CHECK(test::max_relative_error(frozen_y, y) > 1e-2);

    // The merged W against float64 W + s·B·A.
    const Doubles s_abs = merge_abs(p);
    Doubles merged_ref(w.size()), merged_abs(w.size());
    for (std::size_t i = 0; i < shape.out; ++i)
      for (std::size_t j = 0; j < shape.in; ++j) {
        double sum = 0.0;
        for (std::size_t k = 0; k < rank; ++k) sum += static_cast<double>(p.b[i * rank + k]) * p.a[k * shape.in + j];
        merged_ref[i * shape.in + j] = p.w[i * shape.in + j] + p.scale * sum;
        merged_abs[i * shape.in + j] = std::fabs(p.w[i * shape.in + j]) + s_abs[i * shape.in + j];
      }
    CHECK(outside(w, merged_ref, sum_bound(merged_abs, rank + 1)) == 0);

    // Not vacuous: merging moved (nearly) every element.
    REQUIRE(differing(w, p.w) >= w.size() - w.size() / 100);
    cpu::lora_unmerge(w.data(), p.a.data(), p.b.data(), p.scale, shape);
    std::vector<double> restore_tol(w.size());
    for (std::size_t i = 0; i < w.size(); ++i)
      restore_tol[i] = 2.0 * static_cast<double>(rank + 2) * fp32_unit_roundoff * (std::fabs(p.w[i]) + 2.0 * s_abs[i]);
    CHECK(outside(w, p.w, restore_tol) == 0);
  }
}

// ---- initialisation

TEST_CASE("lora_init draws A uniform within 1/sqrt(in) deterministically per seed and zeros B", "[lora]") {
  const LoraShape shape{0, 1001, 64, 8};
  const std::size_t n = shape.rank * shape.in;
  const float bound = cpu::lora_init_bound(shape.in);
  const double exact = 1.0 / std::sqrt(1001.0);
  CHECK(std::fabs(bound - exact) <= fp32_unit_roundoff * exact);

  std::vector<float> a(n, nan_f), b(shape.out * shape.rank, 1.0f);
  cpu::lora_init(a.data(), b.data(), 42, shape);
  CHECK(nonzero(b) == 0);
  double sum = 0.0, sum_sq = 0.0, lo = bound, hi = -bound;
  std::size_t outside_range = 0, off_formula = 0;
  for (std::size_t i = 0; i < n; ++i) {
    outside_range += !(a[i] >= -bound && a[i] < bound);
    off_formula += a[i] != bound * (2.0f * rng::uniform(42, i) - 1.0f);
    sum += a[i];
    sum_sq += static_cast<double>(a[i]) * a[i];
    lo = std::min<double>(lo, a[i]);
    hi = std::max<double>(hi, a[i]);
  }
  CHECK(outside_range == 0);
  CHECK(off_formula == 0);
  // Uniform on [-bound, bound): mean 0 with standard error bound/√(3n); variance bound²/3, whose
  // estimate has relative standard error √(0.8/n) ≈ 0.01 here. Five standard errors each.
  const double mean = sum / static_cast<double>(n), variance = sum_sq / static_cast<double>(n) - mean * mean;
  CHECK(std::fabs(mean) <= 5.0 * bound / std::sqrt(3.0 * static_cast<double>(n)));
  CHECK(std::fabs(variance / (bound * bound / 3.0) - 1.0) <= 5.0 * std::sqrt(0.8 / static_cast<double>(n)));
  CHECK(lo < -0.99 * bound);
  CHECK(hi > 0.99 * bound);

  std::vector<float> again(n), other(n), b2(b.size());
  cpu::lora_init(again.data(), b2.data(), 42, shape);
  CHECK(differing(again, a) == 0);
  cpu::lora_init(other.data(), b2.data(), 43, shape);
  CHECK(differing(other, a) >= n - n / 100);
}

// ---- arguments

TEST_CASE("lora kernels reject a bad rank and null pointers naming the value", "[lora]") {
  // Every pointer a buffer of its own, large enough for `good`; the bad shapes throw before any
  // access.
  const LoraShape good{4, 6, 5, 2};
  std::vector<std::vector<float>> buffers(8, std::vector<float>(32, 0.5f));
  float* const p = buffers[0].data();
  float *const x = buffers[1].data(), *const w = buffers[2].data(), *const a = buffers[3].data(),
               *const b = buffers[4].data(), *const y = buffers[5].data(), *const d1 = buffers[6].data(),
               *const d2 = buffers[7].data();
  for (const auto& [shape, what] :
       {std::pair{LoraShape{4, 6, 5, 0}, std::string("rank = 0")},
        std::pair{LoraShape{4, 6, 5, 6}, std::string("rank = 6 exceeds min(in = 6, out = 5) = 5")},
        std::pair{LoraShape{4, 3, 5, 4}, std::string("rank = 4 exceeds min(in = 3, out = 5) = 3")}}) {
    const LoraShape s = shape;
    CAPTURE(what);
    CHECK_THAT(invalid_argument_message([&] { cpu::lora_forward(p, p, p, p, p, 1.0f, p, p, s); }),
               Catch::Contains("lora_forward: " + what));
    CHECK_THAT(invalid_argument_message([&] { cpu::lora_backward(p, p, p, p, p, p, 1.0f, p, p, p, s); }),
               Catch::Contains("lora_backward: " + what));
    CHECK_THAT(invalid_argument_message([&] { cpu::lora_merge(p, p, p, 1.0f, s); }),
               Catch::Contains("lora_merge: " + what));
    CHECK_THAT(invalid_argument_message([&] { cpu::lora_unmerge(p, p, p, 1.0f, s); }),
               Catch::Contains("lora_unmerge: " + what));
    CHECK_THAT(invalid_argument_message([&] { cpu::lora_init(p, p, 1, s); }), Catch::Contains("lora_init: " + what));
  }
  CHECK_THAT(invalid_argument_message([&] { cpu::lora_scale(16.0f, 0); }), Catch::Contains("rank = 0"));
  CHECK_THAT(invalid_argument_message([&] { cpu::lora_init_bound(0); }), Catch::Contains("in = 0"));

  const auto forward_null = [&](int which) {
    return invalid_argument_message([&] {
      cpu::lora_forward(which == 0 ? nullptr : p, which == 1 ? nullptr : p, p, which == 2 ? nullptr : p,
                        which == 3 ? nullptr : p, 1.0f, p, which == 4 ? nullptr : p, good);
    });
  };
  CHECK(forward_null(0) == "lora_forward: x is null");
  CHECK(forward_null(1) == "lora_forward: w is null");
  CHECK(forward_null(2) == "lora_forward: a is null");
  CHECK(forward_null(3) == "lora_forward: b_adapter is null");
  CHECK(forward_null(4) == "lora_forward: y is null");
  CHECK_NOTHROW(cpu::lora_forward(x, w, nullptr, a, b, 1.0f, nullptr, y, good));  // bias and u are optional

  const auto backward_null = [&](int which) {
    return invalid_argument_message([&] {
      cpu::lora_backward(which == 0 ? nullptr : p, which == 1 ? nullptr : p, which == 2 ? nullptr : p,
                         which == 3 ? nullptr : p, p, which == 4 ? nullptr : p, 1.0f, p, which == 5 ? nullptr : p,
                         which == 6 ? nullptr : p, good);
    });
  };
  CHECK(backward_null(0) == "lora_backward: x is null");
  CHECK(backward_null(1) == "lora_backward: w is null");  // needed for dx
  CHECK(backward_null(2) == "lora_backward: a is null");
  CHECK(backward_null(3) == "lora_backward: b_adapter is null");
  CHECK(backward_null(4) == "lora_backward: dy is null");
  CHECK(backward_null(5) == "lora_backward: da is null");
  CHECK(backward_null(6) == "lora_backward: db is null");
  CHECK_NOTHROW(cpu::lora_backward(x, nullptr, a, b, nullptr, y, 1.0f, nullptr, d1, d2, good));  // no dx: no W

  CHECK(invalid_argument_message([&] { cpu::lora_merge(nullptr, p, p, 1.0f, good); }) == "lora_merge: w is null");
  CHECK(invalid_argument_message([&] { cpu::lora_unmerge(p, nullptr, p, 1.0f, good); }) == "lora_unmerge: a is null");
  CHECK(invalid_argument_message([&] { cpu::lora_merge(p, p, nullptr, 1.0f, good); }) ==
        "lora_merge: b_adapter is null");
  CHECK(invalid_argument_message([&] { cpu::lora_init(nullptr, p, 1, good); }) == "lora_init: a is null");
  CHECK(invalid_argument_message([&] { cpu::lora_init(p, nullptr, 1, good); }) == "lora_init: b_adapter is null");
}

// ---- CUDA against the CPU

#ifdef AIOPT_HAVE_CUDA

namespace {

namespace gpu = aiopt::kernels::cuda;
using test::download;
using test::upload;

// Both sides within sum_bound of exact: twice it between them.
std::vector<double> two_sided(const Doubles& abs_sums, std::size_t terms) {
  auto tol = sum_bound(abs_sums, terms);
  for (double& t : tol) t *= 2.0;
  return tol;
}

}  // namespace

TEST_CASE("cuda lora_forward and lora_backward match the CPU within the fp32 sum bound", "[lora][gpu]") {
  std::uint64_t seed = 900;
  for (const std::size_t rank : {1, 8})
    for (const bool with_bias : {false, true}) {
      const LoraShape shape{131, 97, 83, rank};
      CAPTURE(rank, with_bias);
      const Problem p = make_problem(shape, 16.0f, with_bias, seed += 10);
      const auto [m, in, out, r] = shape;
      std::vector<float> y(m * out), u(m * r);
      cpu::lora_forward(p.x.data(), p.w.data(), p.bias_ptr(), p.a.data(), p.b.data(), p.scale, u.data(), y.data(),
                        shape);
      auto d_x = upload(p.x), d_w = upload(p.w), d_a = upload(p.a), d_b = upload(p.b);
      auto d_bias = upload(p.bias.empty() ? std::vector<float>(1) : p.bias);
      const float* bias = with_bias ? d_bias.data() : nullptr;
      auto d_y = upload(std::vector<float>(m * out, nan_f)), d_u = upload(std::vector<float>(m * r, nan_f));
      gpu::lora_forward(d_x.data(), d_w.data(), bias, d_a.data(), d_b.data(), p.scale, d_u.data(), d_y.data(), shape,
                        nullptr);
      CHECK(outside(download(d_y), y, two_sided(y_abs(p), in + r + 3)) == 0);
      CHECK(outside(download(d_u), u, two_sided(u_abs(p), in)) == 0);
      auto d_y2 = upload(std::vector<float>(m * out, nan_f));
      gpu::lora_forward(d_x.data(), d_w.data(), bias, d_a.data(), d_b.data(), p.scale, nullptr, d_y2.data(), shape,
                        nullptr);
      CHECK(outside(download(d_y2), y, two_sided(y_abs(p), in + r + 3)) == 0);

      // Backward: dA and dB accumulate onto random starts, dx is written over NaN.
      const auto dy = random_vector(m * out, seed + 7), da0 = random_vector(r * in, seed + 8),
                 db0 = random_vector(out * r, seed + 9);
      std::vector<float> da = da0, db = db0, dx(m * in);
      cpu::lora_backward(p.x.data(), p.w.data(), p.a.data(), p.b.data(), u.data(), dy.data(), p.scale, dx.data(),
                         da.data(), db.data(), shape);
      const auto sums = backward_abs(p, dy, da0, db0);
      auto d_dy = upload(dy);
      for (const bool keep_u : {true, false}) {
        CAPTURE(keep_u);
        auto d_da = upload(da0), d_db = upload(db0), d_dx = upload(std::vector<float>(m * in, nan_f));
        gpu::lora_backward(d_x.data(), d_w.data(), d_a.data(), d_b.data(), keep_u ? d_u.data() : nullptr, d_dy.data(),
                           p.scale, d_dx.data(), d_da.data(), d_db.data(), shape, nullptr);
        CHECK(outside(download(d_da), da, two_sided(sums.da, out + m + 2)) == 0);
        CHECK(outside(download(d_db), db, two_sided(sums.db, in + m + 2)) == 0);
        CHECK(outside(download(d_dx), dx, two_sided(sums.dx, out + r + 2)) == 0);
      }
    }
}

TEST_CASE("cuda lora_merge lora_unmerge and lora_init match the CPU", "[lora][gpu]") {
  for (const std::size_t rank : {1, 8}) {
    const LoraShape shape{0, 97, 83, rank};
    CAPTURE(rank);
    const Problem p = make_problem(shape, 16.0f, false, 1100 + rank);
    const Doubles s_abs = merge_abs(p);
    Doubles merged_abs(p.w.size());
    for (std::size_t i = 0; i < p.w.size(); ++i) merged_abs[i] = std::fabs(p.w[i]) + s_abs[i];

    std::vector<float> w = p.w;
    cpu::lora_merge(w.data(), p.a.data(), p.b.data(), p.scale, shape);
    auto d_w = upload(p.w), d_a = upload(p.a), d_b = upload(p.b);
    gpu::lora_merge(d_w.data(), d_a.data(), d_b.data(), p.scale, shape, nullptr);
    CHECK(outside(download(d_w), w, two_sided(merged_abs, rank + 1)) == 0);
    gpu::lora_unmerge(d_w.data(), d_a.data(), d_b.data(), p.scale, shape, nullptr);
    std::vector<double> restore_tol(w.size());
    for (std::size_t i = 0; i < w.size(); ++i)
      restore_tol[i] = 2.0 * static_cast<double>(rank + 2) * fp32_unit_roundoff * (std::fabs(p.w[i]) + 2.0 * s_abs[i]);
    CHECK(outside(download(d_w), p.w, restore_tol) == 0);

    // The initialisation: the CPU's bits.
    std::vector<float> a(rank * shape.in), b(shape.out * rank);
    cpu::lora_init(a.data(), b.data(), 77, shape);
    auto d_ai = upload(std::vector<float>(a.size(), nan_f)), d_bi = upload(std::vector<float>(b.size(), nan_f));
    gpu::lora_init(d_ai.data(), d_bi.data(), 77, shape, nullptr);
    CHECK(differing(download(d_ai), a) == 0);
    CHECK(differing(download(d_bi), b) == 0);
  }
  CHECK_THAT(invalid_argument_message([] { gpu::lora_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 1.0f, nullptr,
                                                             nullptr, LoraShape{4, 6, 5, 0}, nullptr); }),
             Catch::Contains("cuda lora_forward: rank = 0"));
}

#endif  // AIOPT_HAVE_CUDA
