// The knowledge-distillation loss kernels (kernels/cpu/distillation_loss.hpp and its CUDA twin):
// the CPU kernel against a float64 re-implementation of the definition on fresh random logits,
// its gradient against central finite differences of that float64 loss, the loss's properties
// (alpha = 0 is the plain cross-entropy kernel, a student equal to its teacher has KL 0 and a zero
// soft gradient, KL >= 0, the T² factor keeping the soft gradient's scale across temperatures),
// logits of magnitude 1e3, argument checks; and ([gpu]) the CUDA kernel against the CPU one.
//
// CPU tolerances. The kernel takes each exponential in fp32 (exp_poly: about 2e-7 relative, and
// the argument's rounding: an error e^x·|x|·u <= u/e for x <= 0, u = 2^-24) and sums in double, so
// every loss, KL and CE is within a few 1e-7 of the largest magnitude of the terms it sums. Errors
// are measured relative to the largest reference magnitude over the compared vector (gradients
// cancel, so elementwise relative error is meaningless near zero): 1e-5 for losses and for
// gradients, over ten times the worst case above and far below the O(1e-2..1) relative error of a
// wrong term, coefficient or temperature. Finite differences: central, in float64 with h = 1e-5
// (truncation O(h²) ≈ 1e-10, cancellation ≈ 1e-16·|L|/h ≈ 1e-10) against the fp32 gradient, at
// 2e-5 of its largest magnitude.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "core/rng.hpp"
#include "core/threads.hpp"
#include "kernels/cpu/cross_entropy.hpp"
#include "kernels/cpu/distillation_loss.hpp"
#include "support/error_metric.hpp"
#include "support/numeric_gradient.hpp"
#include "support/random.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "kernels/cuda/distillation_loss.hpp"
#include "support/device_copy.hpp"
#endif

using namespace aiopt;
namespace cpu = aiopt::kernels::cpu;
using cpu::Distillation;
using test::max_abs;
using test::max_abs_error;
using test::numeric_gradient;
using test::random_vector;

namespace {

constexpr double u = test::fp32_unit_roundoff;

// max |a − b| / max(1e-3, max |b|); +inf on a NaN or an infinity in either.
template <class A, class B>
double max_error(const std::vector<A>& a, const std::vector<B>& b) {
  return test::max_relative_error(a, b, 1e-3);
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

std::vector<std::int32_t> random_tokens(std::size_t count, std::size_t vocab, std::uint64_t seed) {
  std::vector<std::int32_t> t(count);
  for (std::size_t i = 0; i < count; ++i) t[i] = static_cast<std::int32_t>(rng::bits(seed, i) % vocab);
  return t;
}

// ---- the float64 reference, from the definition

// log softmax(x / T) of one row, max-subtracted (e^1000 overflows double too).
std::vector<double> log_softmax(const double* x, std::size_t vocab, double temperature) {
  const double max = *std::max_element(x, x + vocab) / temperature;
  double sum = 0.0;
  for (std::size_t j = 0; j < vocab; ++j) sum += std::exp(x[j] / temperature - max);
  const double lse = max + std::log(sum);
  std::vector<double> out(vocab);
  for (std::size_t j = 0; j < vocab; ++j) out[j] = x[j] / temperature - lse;
  return out;
}

// Per row: loss, its two terms, and grad = grad_scale·∂loss_r/∂s; the softened distributions are
// kept for the CUDA tolerances.
struct Reference {
  std::vector<double> loss, kl, ce, grad;
  std::vector<double> student_soft, teacher_soft, student_hard;  // q_T, p_t, q: (rows, vocab)
};

Reference distillation_f64(const std::vector<double>& s, const std::vector<double>& t,
                           const std::vector<std::int32_t>& y, std::size_t rows, std::size_t vocab,
                           double temperature, double alpha, double grad_scale) {
  Reference ref;
  ref.loss.resize(rows);
  ref.kl.resize(rows);
  ref.ce.resize(rows);
  ref.grad.resize(rows * vocab);
  ref.student_soft.resize(rows * vocab);
  ref.teacher_soft.resize(rows * vocab);
  ref.student_hard.resize(rows * vocab);
  for (std::size_t r = 0; r < rows; ++r) {
    const auto log_q_t = log_softmax(s.data() + r * vocab, vocab, temperature);
    const auto log_p_t = log_softmax(t.data() + r * vocab, vocab, temperature);
    const auto log_q = log_softmax(s.data() + r * vocab, vocab, 1.0);
    double kl = 0.0;
    for (std::size_t j = 0; j < vocab; ++j) kl += std::exp(log_p_t[j]) * (log_p_t[j] - log_q_t[j]);
    ref.kl[r] = kl;
    ref.ce[r] = -log_q[y[r]];
    ref.loss[r] = alpha * temperature * temperature * kl + (1.0 - alpha) * ref.ce[r];
    for (std::size_t j = 0; j < vocab; ++j) {
      const double q_t = std::exp(log_q_t[j]), p_t = std::exp(log_p_t[j]), q = std::exp(log_q[j]);
      const double onehot = j == static_cast<std::size_t>(y[r]) ? 1.0 : 0.0;
      ref.grad[r * vocab + j] = grad_scale * (alpha * temperature * (q_t - p_t) + (1.0 - alpha) * (q - onehot));
      ref.student_soft[r * vocab + j] = q_t;
      ref.teacher_soft[r * vocab + j] = p_t;
      ref.student_hard[r * vocab + j] = q;
    }
  }
  return ref;
}

double mean_loss_f64(const std::vector<double>& s, const std::vector<double>& t, const std::vector<std::int32_t>& y,
                     std::size_t rows, std::size_t vocab, double temperature, double alpha) {
  const auto ref = distillation_f64(s, t, y, rows, vocab, temperature, alpha, 1.0);
  double total = 0.0;
  for (double l : ref.loss) total += l;
  return total / static_cast<double>(rows);
}

// The CPU kernel's outputs for one input.
struct Outputs {
  std::vector<float> loss, kl, ce, grad;
};

Outputs run_cpu(const std::vector<float>& s, const std::vector<float>& t, const std::vector<std::int32_t>& y,
                std::size_t rows, std::size_t vocab, const Distillation& d, float grad_scale) {
  Outputs out{std::vector<float>(rows, NAN), std::vector<float>(rows, NAN), std::vector<float>(rows, NAN),
              std::vector<float>(rows * vocab, NAN)};
  cpu::distillation_loss_backward(s.data(), t.data(), y.data(), out.loss.data(), out.kl.data(), out.ce.data(),
                                  out.grad.data(), rows, vocab, d, grad_scale);
  return out;
}

struct Shape {
  std::size_t rows, vocab;
};

}  // namespace

// ---- against the float64 reference

TEST_CASE("distillation_loss matches the float64 reference", "[distillation]") {
  // Vocabularies that are not multiples of 8 or 32 (vector tails), one row up to 37, and GPT-2's.
  const Shape shapes[] = {{1, 1}, {1, 7}, {3, 33}, {37, 1003}, {16, 256}, {5, 4099}, {2, 50257}};
  std::uint64_t seed = 100;
  for (const Shape& shape : shapes)
    for (float temperature : {0.25f, 0.7f, 1.0f, 2.5f, 8.0f})
      for (float alpha : {0.0f, 0.3f, 1.0f}) {
        const std::size_t rows = shape.rows, vocab = shape.vocab;
        INFO("rows " << rows << ", vocab " << vocab << ", T " << temperature << ", alpha " << alpha);
        const auto s = random_vector(rows * vocab, ++seed, -5.0f, 5.0f);
        const auto t = random_vector(rows * vocab, ++seed, -4.0f, 4.0f);
        const auto y = random_tokens(rows, vocab, ++seed);
        const float grad_scale = 1.0f / static_cast<float>(rows);
        const Distillation d{temperature, alpha};
        const auto got = run_cpu(s, t, y, rows, vocab, d, grad_scale);
        const auto ref = distillation_f64(to_double(s), to_double(t), y, rows, vocab, temperature, alpha, grad_scale);
        CHECK(max_error(got.loss, ref.loss) <= 1e-5);
        CHECK(max_error(got.kl, ref.kl) <= 1e-5);
        CHECK(max_error(got.ce, ref.ce) <= 1e-5);
        CHECK(max_error(got.grad, ref.grad) <= 1e-5);

        // The forward alone writes the same losses; kl and ce may be left out.
        std::vector<float> loss(rows, NAN), kl(rows, NAN);
        cpu::distillation_loss(s.data(), t.data(), y.data(), loss.data(), kl.data(), nullptr, rows, vocab, d);
        CHECK(bit_equal(loss, got.loss));
        CHECK(bit_equal(kl, got.kl));

        // The gradient written over the student's logits: the same results.
        auto in_place = s;
        std::vector<float> loss_in_place(rows, NAN);
        cpu::distillation_loss_backward(in_place.data(), t.data(), y.data(), loss_in_place.data(), nullptr, nullptr,
                                        in_place.data(), rows, vocab, d, grad_scale);
        CHECK(bit_equal(in_place, got.grad));
        CHECK(bit_equal(loss_in_place, got.loss));
      }
}

TEST_CASE("distillation_loss gives the same bits on 1 and 2 threads", "[distillation]") {
  const std::size_t rows = 37, vocab = 1003;
  const auto s = random_vector(rows * vocab, 201, -5.0f, 5.0f);
  const auto t = random_vector(rows * vocab, 202, -5.0f, 5.0f);
  const auto y = random_tokens(rows, vocab, 203);
  const Distillation d{2.0f, 0.5f};
  const int saved = threads();
  set_threads(1);
  const auto one = run_cpu(s, t, y, rows, vocab, d, 1.0f / rows);
  set_threads(2);
  const auto two = run_cpu(s, t, y, rows, vocab, d, 1.0f / rows);
  set_threads(saved);
  CHECK(bit_equal(one.loss, two.loss));
  CHECK(bit_equal(one.grad, two.grad));
}

TEST_CASE("distillation_loss's gradient agrees with finite differences", "[distillation][finite_difference]") {
  const std::size_t rows = 4, vocab = 11;
  std::uint64_t seed = 300;
  for (float temperature : {0.5f, 2.0f, 5.0f})
    for (float alpha : {0.4f, 1.0f}) {
      INFO("T " << temperature << ", alpha " << alpha);
      const auto s = random_vector(rows * vocab, ++seed, -3.0f, 3.0f);
      const auto t = random_vector(rows * vocab, ++seed, -3.0f, 3.0f);
      const auto y = random_tokens(rows, vocab, ++seed);
      // grad_scale = 1/rows: the gradient of the mean loss.
      const auto got = run_cpu(s, t, y, rows, vocab, {temperature, alpha}, 1.0f / rows);
      const auto teacher = to_double(t);
      const auto numeric = numeric_gradient(to_double(s), [&](const std::vector<double>& v) {
        return mean_loss_f64(v, teacher, y, rows, vocab, temperature, alpha);
      });
      CHECK(max_error(got.grad, numeric) <= 2e-5);
    }
}

// ---- properties

TEST_CASE("distillation_loss at alpha 0 is the cross-entropy kernel", "[distillation]") {
  const std::size_t rows = 29, vocab = 1003;
  const auto s = random_vector(rows * vocab, 401, -8.0f, 8.0f);
  const auto t = random_vector(rows * vocab, 402, -8.0f, 8.0f);
  const auto y = random_tokens(rows, vocab, 403);
  const float grad_scale = 1.0f / rows;
  std::vector<float> ce_loss(rows), ce_grad(rows * vocab);
  cpu::softmax_cross_entropy(s.data(), y.data(), ce_loss.data(), ce_grad.data(), rows, vocab, grad_scale);
  for (float temperature : {0.5f, 4.0f}) {
    INFO("T " << temperature);
    const auto got = run_cpu(s, t, y, rows, vocab, {temperature, 0.0f}, grad_scale);
    // Losses near log(1003) + 16 ≈ 23, where an fp32 step is 2e-6: within 1e-6 relative; the
    // gradients (at most grad_scale) within 1e-6·grad_scale.
    CHECK(max_abs_error(got.loss, ce_loss) <= 1e-6 * max_abs(ce_loss));
    CHECK(max_abs_error(got.grad, ce_grad) <= 1e-6 * grad_scale);
    // The CE term is the cross-entropy at any alpha.
    const auto mixed = run_cpu(s, t, y, rows, vocab, {temperature, 0.6f}, grad_scale);
    CHECK(max_abs_error(mixed.ce, ce_loss) <= 1e-6 * max_abs(ce_loss));
  }
}

TEST_CASE("distillation_loss of a student equal to its teacher has KL 0 and no soft gradient", "[distillation]") {
  const std::size_t rows = 13, vocab = 517;
  for (float scale : {5.0f, 1000.0f}) {
    const auto s = random_vector(rows * vocab, 501, -scale, scale);
    const auto y = random_tokens(rows, vocab, 502);
    for (float temperature : {0.25f, 1.0f, 8.0f}) {
      INFO("logits in [-" << scale << ", " << scale << "), T " << temperature);
      const float grad_scale = 1.0f / rows;
      const auto soft = run_cpu(s, s, y, rows, vocab, {temperature, 1.0f}, grad_scale);
      for (std::size_t r = 0; r < rows; ++r) {
        REQUIRE(std::abs(soft.kl[r]) <= 1e-6f);
        REQUIRE(std::abs(soft.loss[r]) <= 1e-6f * temperature * temperature);
      }
      CHECK(max_abs(soft.grad) <= 1e-6 * grad_scale * temperature);
      // With the hard term mixed in, only it remains: (1 − alpha) times the cross-entropy gradient.
      const auto mixed = run_cpu(s, s, y, rows, vocab, {temperature, 0.75f}, grad_scale);
      std::vector<float> ce_grad(rows * vocab);
      std::vector<float> ce_loss(rows);
      cpu::softmax_cross_entropy(s.data(), y.data(), ce_loss.data(), ce_grad.data(), rows, vocab, 0.25f * grad_scale);
      CHECK(max_abs_error(mixed.grad, ce_grad) <= 1e-6 * grad_scale);
    }
  }
}

TEST_CASE("distillation_loss's KL is never negative and positive where the distributions differ", "[distillation]") {
  const std::size_t rows = 37, vocab = 301;
  const auto s = random_vector(rows * vocab, 601, -6.0f, 6.0f);
  const auto y = random_tokens(rows, vocab, 602);
  // Teachers from far (independent) to within rounding of the student, where KL is all noise.
  for (float spread : {6.0f, 1e-1f, 1e-3f, 1e-5f, 1e-7f}) {
    auto t = random_vector(rows * vocab, 603, -spread, spread);
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = spread >= 6.0f ? t[i] : s[i] + t[i];
    for (float temperature : {0.25f, 1.0f, 8.0f}) {
      INFO("teacher − student in [-" << spread << ", " << spread << "), T " << temperature);
      const auto got = run_cpu(s, t, y, rows, vocab, {temperature, 1.0f}, 1.0f);
      const auto ref = distillation_f64(to_double(s), to_double(t), y, rows, vocab, temperature, 1.0, 1.0);
      for (std::size_t r = 0; r < rows; ++r) {
        REQUIRE(got.kl[r] >= 0.0f);
        if (ref.kl[r] > 1e-4) REQUIRE(got.kl[r] > 0.0f);
      }
      // Absolute: a KL of 1e-14 carries the rounding of its O(1) terms.
      CHECK(max_abs_error(got.kl, ref.kl) <= 1e-5 * std::max(1.0, max_abs(ref.kl)));
    }
  }
}

// Hinton et al.'s reason for the T²: ∂KL/∂s = (q_T − p_t)/T, and once T exceeds the logits'
// spread q_T − p_t ≈ ((s − mean s) − (t − mean t))/(V·T), so ∂KL/∂s shrinks as 1/T² while
// T²·∂KL/∂s tends to ((s − mean s) − (t − mean t))/V, with a relative correction of order
// spread/T; T²·KL likewise tends to Σ((s − mean s) − (t − mean t))²/(2V).
TEST_CASE("distillation_loss's T squared factor keeps the soft gradient's scale across temperatures",
          "[distillation]") {
  const std::size_t rows = 8, vocab = 64;
  const auto s = random_vector(rows * vocab, 701, -1.0f, 1.0f);
  const auto t = random_vector(rows * vocab, 702, -1.0f, 1.0f);
  const auto y = random_tokens(rows, vocab, 703);
  std::vector<double> limit(rows * vocab), loss_limit(rows, 0.0);
  for (std::size_t r = 0; r < rows; ++r) {
    double mean_s = 0.0, mean_t = 0.0;
    for (std::size_t j = 0; j < vocab; ++j) {
      mean_s += s[r * vocab + j] / static_cast<double>(vocab);
      mean_t += t[r * vocab + j] / static_cast<double>(vocab);
    }
    for (std::size_t j = 0; j < vocab; ++j) {
      const double diff = (s[r * vocab + j] - mean_s) - (t[r * vocab + j] - mean_t);
      limit[r * vocab + j] = diff / static_cast<double>(vocab);
      loss_limit[r] += diff * diff / (2.0 * static_cast<double>(vocab));
    }
  }
  double previous = std::numeric_limits<double>::infinity(), previous_norm = 0.0;
  for (float temperature : {4.0f, 8.0f, 16.0f, 32.0f, 64.0f}) {
    INFO("T " << temperature);
    const auto got = run_cpu(s, t, y, rows, vocab, {temperature, 1.0f}, 1.0f);
    const double error = max_error(got.grad, limit);
    UNSCOPED_INFO("relative distance to the limit " << error);
    CHECK(error <= 2.0 / temperature);
    CHECK(error <= 0.6 * previous);  // shrinking as 1/T
    CHECK(max_error(got.loss, loss_limit) <= 2.0 / temperature);
    previous = error;
    // Without the T², the KL's own gradient shrinks 4-fold per doubling of T.
    double norm = 0.0;
    for (float g : got.grad) norm += std::pow(static_cast<double>(g) / (temperature * temperature), 2);
    norm = std::sqrt(norm);
    if (previous_norm > 0.0) CHECK(previous_norm / norm == Approx(4.0).epsilon(0.15));
    previous_norm = norm;
  }
}

// ---- large logits

TEST_CASE("distillation_loss is finite and exact for logits of magnitude 1e3", "[distillation]") {
  const std::size_t rows = 17, vocab = 1003;
  // Spread over ±1e3 (softmax at T = 1 all but one-hot), and narrow bands far from 0, where
  // exponentials without the maximum subtracted overflow or underflow.
  const float ranges[][2] = {{-1000.0f, 1000.0f}, {999.0f, 1001.0f}, {-1001.0f, -999.0f}};
  std::uint64_t seed = 800;
  for (const auto& student_range : ranges)
    for (const auto& teacher_range : ranges)
      for (float temperature : {0.25f, 1.0f, 8.0f})
        for (float alpha : {0.0f, 0.5f, 1.0f}) {
          INFO("student in [" << student_range[0] << ", " << student_range[1] << "), teacher in ["
                              << teacher_range[0] << ", " << teacher_range[1] << "), T " << temperature
                              << ", alpha " << alpha);
          const auto s = random_vector(rows * vocab, ++seed, student_range[0], student_range[1]);
          const auto t = random_vector(rows * vocab, ++seed, teacher_range[0], teacher_range[1]);
          const auto y = random_tokens(rows, vocab, ++seed);
          const float grad_scale = 1.0f / rows;
          const auto got = run_cpu(s, t, y, rows, vocab, {temperature, alpha}, grad_scale);
          const auto ref =
              distillation_f64(to_double(s), to_double(t), y, rows, vocab, temperature, alpha, grad_scale);
          // max_error is +inf on any NaN or infinity.
          CHECK(max_error(got.loss, ref.loss) <= 1e-5);
          CHECK(max_error(got.kl, ref.kl) <= 1e-5);
          CHECK(max_error(got.ce, ref.ce) <= 1e-5);
          CHECK(max_error(got.grad, ref.grad) <= 1e-5);
        }
}

// ---- arguments

TEST_CASE("distillation_loss rejects a bad temperature alpha or target before writing", "[distillation]") {
  const std::size_t rows = 4, vocab = 9;
  const auto s = random_vector(rows * vocab, 901);
  const auto t = random_vector(rows * vocab, 902);
  const std::vector<std::int32_t> good{1, 2, 8, 0};
  std::vector<float> loss(rows, 7.0f), kl(rows, 7.0f), ce(rows, 7.0f), grad(rows * vocab, 7.0f);
  const auto both = [&](const std::vector<std::int32_t>& y, Distillation d, const char* message) {
    INFO("T " << d.temperature << ", alpha " << d.alpha << ", expecting \"" << message << "\"");
    CHECK_THROWS_AS(cpu::distillation_loss(s.data(), t.data(), y.data(), loss.data(), kl.data(), ce.data(), rows,
                                           vocab, d),
                    std::invalid_argument);
    CHECK_THROWS_WITH(cpu::distillation_loss_backward(s.data(), t.data(), y.data(), loss.data(), kl.data(),
                                                      ce.data(), grad.data(), rows, vocab, d, 1.0f),
                      Catch::Contains(message));
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  both(good, {0.0f, 0.5f}, "temperature 0 must be finite and at least 1e-06");
  both(good, {-1.0f, 0.5f}, "temperature -1 must be finite and at least 1e-06");
  both(good, {5e-7f, 0.5f}, "temperature 5e-07 must be finite");
  both(good, {nan, 0.5f}, "temperature nan");
  both(good, {inf, 0.5f}, "temperature inf");
  both(good, {2.0f, -0.25f}, "alpha -0.25 is outside [0, 1]");
  both(good, {2.0f, 1.5f}, "alpha 1.5 is outside [0, 1]");
  both(good, {2.0f, nan}, "alpha nan");
  both({1, 2, 9, 0}, {2.0f, 0.5f}, "target 9 at row 2 is outside [0, 9)");
  both({1, -1, 3, 0}, {2.0f, 0.5f}, "target -1 at row 1 is outside [0, 9)");
  CHECK_THROWS_WITH(cpu::distillation_loss_backward(s.data(), t.data(), good.data(), loss.data(), kl.data(),
                                                    ce.data(), nullptr, rows, vocab, {2.0f, 0.5f}, 1.0f),
                    Catch::Contains("dstudent is null"));
  for (float v : loss) REQUIRE(v == 7.0f);
  for (float v : kl) REQUIRE(v == 7.0f);
  for (float v : ce) REQUIRE(v == 7.0f);
  for (float v : grad) REQUIRE(v == 7.0f);
  // Extreme but valid constants: alpha at its bounds, the smallest temperature (one-hot soft
  // distributions, KL ≈ the logit gap/T, up to 2e6 here) and a large one (nearly uniform).
  const auto finite = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
  };
  for (const Distillation d : {Distillation{cpu::min_temperature, 0.0f}, Distillation{cpu::min_temperature, 1.0f},
                               Distillation{100.0f, 1.0f}}) {
    INFO("T " << d.temperature << ", alpha " << d.alpha);
    const auto got = run_cpu(s, t, good, rows, vocab, d, 1.0f);
    CHECK(finite(got.loss));
    CHECK(finite(got.grad));
    CHECK(finite(got.ce));
    CHECK(finite(got.kl));
  }
}

#ifdef AIOPT_HAVE_CUDA

// ---- CUDA against the CPU kernel
//
// The CUDA kernel sums in fp32 (the CPU in double), with expf and logf (2 and 1 ulp) and
// correctly rounded divisions. With u = 2^-24 and V the vocabulary, per row (q_T, p_t, q the
// reference's distributions, α = (s − max s)/T, β = (t − max t)/T, δ = β − α):
// - each sum z of V exponentials (the largest e^0 = 1, so z >= 1) is within (V + 4)·u·z from the
//   summation, 2 ulp per expf and e^x·|x|·u <= u/e per rounded argument: 2·(V + 4)·u·z in all,
//   and log z within that plus u·|log z|;
// - cross/zt = Σ p_t·δ carries the sums' error (V + 4)·u·Σ p_t|δ|, the exponentials'
//   u·Σ p_t|δ|(|β| + 2), and the rounding of δ: 2·u·Σ p_t(|α| + |β|);
// - ce = log z1 + (max s − s_y), two roundings more.
// Bounds, with a factor of about 2 to spare, and the CPU kernel's own error (a few u of the same
// terms) inside that spare:
//   kl:   8u·[(V + 8)·(Σ p_t|δ| + 1) + Σ p_t|δ||β| + Σ p_t(|α| + |β|) + |log zs| + |log zt|]
//   ce:   8u·[(V + 8) + |log z1| + |max s − s_y| + ce]
//   loss: alpha·T²·kl_tol + (1 − alpha)·ce_tol + 8u·|loss|
//   grad[v] = soft·(e^α/zs − e^β/zt) + hard·(e^a/z1 − onehot), soft = grad_scale·alpha·T,
//   hard = grad_scale·(1 − alpha): 8u·[soft·((V + 8)·(q_T + p_t) + 1) + hard·((V + 8)·q + 2)].
// A wrong term, index or factor of T errs by O(1) of these magnitudes, millions of u.
namespace {

namespace gpu = aiopt::kernels::cuda;
using test::differing;
using test::download;
using test::outside;
using test::upload;

struct Tolerances {
  std::vector<double> loss, kl, ce, grad;
};

Tolerances cuda_tolerances(const std::vector<float>& s, const std::vector<float>& t,
                           const std::vector<std::int32_t>& y, const Reference& ref, std::size_t rows,
                           std::size_t vocab, double temperature, double alpha, double grad_scale) {
  Tolerances tol{std::vector<double>(rows), std::vector<double>(rows), std::vector<double>(rows),
                 std::vector<double>(rows * vocab)};
  const double n = static_cast<double>(vocab) + 8.0;
  const double soft = grad_scale * alpha * temperature, hard = grad_scale * (1.0 - alpha);
  for (std::size_t r = 0; r < rows; ++r) {
    const float* sr = s.data() + r * vocab;
    const float* tr = t.data() + r * vocab;
    const double ms = *std::max_element(sr, sr + vocab), mt = *std::max_element(tr, tr + vocab);
    double zs = 0.0, zt = 0.0, z1 = 0.0, cross = 0.0, cross_beta = 0.0, spread = 0.0;
    for (std::size_t j = 0; j < vocab; ++j) {
      const double a = (sr[j] - ms) / temperature, b = (tr[j] - mt) / temperature;
      const double p = ref.teacher_soft[r * vocab + j];
      zs += std::exp(a);
      zt += std::exp(b);
      z1 += std::exp(sr[j] - ms);
      cross += p * std::abs(b - a);
      cross_beta += p * std::abs(b - a) * std::abs(b);
      spread += p * (std::abs(a) + std::abs(b));
    }
    tol.kl[r] = 8.0 * u * (n * (cross + 1.0) + cross_beta + spread + std::abs(std::log(zs)) + std::abs(std::log(zt)));
    tol.ce[r] = 8.0 * u * (n + std::abs(std::log(z1)) + std::abs(ms - sr[y[r]]) + std::abs(ref.ce[r]));
    tol.loss[r] = alpha * temperature * temperature * tol.kl[r] + (1.0 - alpha) * tol.ce[r] +
                  8.0 * u * std::abs(ref.loss[r]);
    for (std::size_t j = 0; j < vocab; ++j) {
      const std::size_t i = r * vocab + j;
      tol.grad[i] = 8.0 * u *
                    (soft * (n * (ref.student_soft[i] + ref.teacher_soft[i]) + 1.0) +
                     hard * (n * ref.student_hard[i] + 2.0));
    }
  }
  return tol;
}

}  // namespace

TEST_CASE("cuda distillation_loss matches the CPU kernel", "[distillation][gpu]") {
  const Shape shapes[] = {{1, 7}, {3, 33}, {37, 1003}, {64, 256}, {5, 4099}, {3, 50257}};
  const float ranges[] = {5.0f, 1000.0f};
  std::uint64_t seed = 1000;
  for (const Shape& shape : shapes)
    for (float range : ranges)
      for (float temperature : {0.25f, 1.0f, 8.0f})
        for (float alpha : {0.0f, 0.5f, 1.0f}) {
          const std::size_t rows = shape.rows, vocab = shape.vocab;
          INFO("rows " << rows << ", vocab " << vocab << ", logits in ±" << range << ", T " << temperature
                       << ", alpha " << alpha);
          const auto s = random_vector(rows * vocab, ++seed, -range, range);
          const auto t = random_vector(rows * vocab, ++seed, -range, range);
          const auto y = random_tokens(rows, vocab, ++seed);
          const float grad_scale = 1.0f / rows;
          const Distillation d{temperature, alpha};
          const auto want = run_cpu(s, t, y, rows, vocab, d, grad_scale);
          const auto ref = distillation_f64(to_double(s), to_double(t), y, rows, vocab, temperature, alpha, grad_scale);
          const auto tol = cuda_tolerances(s, t, y, ref, rows, vocab, temperature, alpha, grad_scale);

          auto d_s = upload(s);
          const auto d_t = upload(t);
          const auto d_y = upload(y);
          auto d_loss = upload(std::vector<float>(rows, NAN));
          auto d_kl = upload(std::vector<float>(rows, NAN));
          auto d_ce = upload(std::vector<float>(rows, NAN));
          auto d_grad = upload(std::vector<float>(rows * vocab, NAN));
          gpu::distillation_loss_backward(d_s.data(), d_t.data(), d_y.data(), d_loss.data(), d_kl.data(),
                                          d_ce.data(), d_grad.data(), rows, vocab, d, grad_scale, nullptr);
          const auto loss = download(d_loss), kl = download(d_kl), grad = download(d_grad);
          CHECK(outside(loss, want.loss, tol.loss) == 0);
          CHECK(outside(kl, want.kl, tol.kl) == 0);
          CHECK(outside(download(d_ce), want.ce, tol.ce) == 0);
          CHECK(outside(grad, want.grad, tol.grad) == 0);
          for (float v : kl) REQUIRE(v >= 0.0f);

          // The forward alone: the same losses, bit for bit.
          auto d_loss2 = upload(std::vector<float>(rows, NAN));
          gpu::distillation_loss(d_s.data(), d_t.data(), d_y.data(), d_loss2.data(), nullptr, nullptr, rows, vocab,
                                 d, nullptr);
          CHECK(differing(download(d_loss2), loss) == 0);
          // The gradient written over the student's logits: the same bits.
          gpu::distillation_loss_backward(d_s.data(), d_t.data(), d_y.data(), nullptr, nullptr, nullptr, d_s.data(),
                                          rows, vocab, d, grad_scale, nullptr);
          CHECK(differing(download(d_s), grad) == 0);
        }
}

TEST_CASE("cuda distillation_loss of a student equal to its teacher has KL 0", "[distillation][gpu]") {
  const std::size_t rows = 13, vocab = 517;
  const auto s = random_vector(rows * vocab, 1101, -1000.0f, 1000.0f);
  const auto y = random_tokens(rows, vocab, 1102);
  for (float temperature : {0.25f, 1.0f, 8.0f}) {
    INFO("T " << temperature);
    const auto d_s = upload(s);
    const auto d_y = upload(y);
    auto d_kl = upload(std::vector<float>(rows, NAN));
    auto d_grad = upload(std::vector<float>(rows * vocab, NAN));
    gpu::distillation_loss_backward(d_s.data(), d_s.data(), d_y.data(), nullptr, d_kl.data(), nullptr,
                                    d_grad.data(), rows, vocab, {temperature, 1.0f}, 1.0f, nullptr);
    for (float v : download(d_kl)) REQUIRE(std::abs(v) <= 1e-6f);
    CHECK(max_abs(download(d_grad)) <= 1e-6 * temperature);
  }
}

TEST_CASE("cuda distillation_loss checks its arguments and poisons a row with a bad target",
          "[distillation][gpu]") {
  const std::size_t rows = 4, vocab = 9;
  const auto s = random_vector(rows * vocab, 1201);
  const auto d_s = upload(s);
  const auto d_t = upload(random_vector(rows * vocab, 1202));
  const auto d_y = upload(std::vector<std::int32_t>{1, 9, -1, 0});
  auto d_loss = upload(std::vector<float>(rows, 7.0f));
  auto d_grad = upload(std::vector<float>(rows * vocab, 7.0f));
  CHECK_THROWS_WITH(gpu::distillation_loss(d_s.data(), d_t.data(), d_y.data(), d_loss.data(), nullptr, nullptr,
                                           rows, vocab, {0.0f, 0.5f}, nullptr),
                    Catch::Contains("temperature 0 must be finite and at least 1e-06"));
  CHECK_THROWS_WITH(gpu::distillation_loss_backward(d_s.data(), d_t.data(), d_y.data(), d_loss.data(), nullptr,
                                                    nullptr, d_grad.data(), rows, vocab, {1.0f, 1.5f}, 1.0f,
                                                    nullptr),
                    Catch::Contains("alpha 1.5 is outside [0, 1]"));
  for (float v : download(d_loss)) REQUIRE(v == 7.0f);
  // Targets live on the device: rows 1 and 2 (9 and −1) get NaN everywhere, rows 0 and 3 are
  // computed as usual.
  gpu::distillation_loss_backward(d_s.data(), d_t.data(), d_y.data(), d_loss.data(), nullptr, nullptr,
                                  d_grad.data(), rows, vocab, {1.0f, 0.5f}, 1.0f, nullptr);
  const auto loss = download(d_loss), grad = download(d_grad);
  for (std::size_t r = 0; r < rows; ++r) {
    INFO("row " << r);
    const bool bad = r == 1 || r == 2;
    CHECK(std::isnan(loss[r]) == bad);
    for (std::size_t j = 0; j < vocab; ++j) REQUIRE(std::isnan(grad[r * vocab + j]) == bad);
  }
}

#endif  // AIOPT_HAVE_CUDA
