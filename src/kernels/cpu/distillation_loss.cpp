#include "kernels/cpu/distillation_loss.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/activation.hpp"

namespace aiopt::kernels::cpu {

namespace {

// The shortest decimal that reads back as v ("0.25", "-1e-09", "nan").
std::string shortest(float v) {
  char buffer[32];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v);
  return ec == std::errc() ? std::string(buffer, end) : std::string("?");
}

// Every target checked before anything is written, so a bad one leaves the outputs untouched.
void check_targets(const std::int32_t* targets, std::size_t rows, std::size_t vocab, const char* who) {
  for (std::size_t r = 0; r < rows; ++r)
    if (targets[r] < 0 || static_cast<std::size_t>(targets[r]) >= vocab)
      throw std::invalid_argument(std::string(who) + ": target " + std::to_string(targets[r]) + " at row " +
                                  std::to_string(r) + " is outside [0, " + std::to_string(vocab) + ")");
}

void check_arguments(const std::int32_t* targets, std::size_t rows, std::size_t vocab, const Distillation& d,
                     const char* who) {
  check_distillation(d, who);
  if (rows > 0 && vocab == 0) throw std::invalid_argument(std::string(who) + ": vocab must be positive");
  check_targets(targets, rows, vocab, who);
}

// One row's statistics. With a = s − max s and b = t − max t:
//   z1 = Σ e^a, zs = Σ e^(a/T), zt = Σ e^(b/T), cross = Σ e^(b/T)·(b − a)/T,
// so that log q[v] = a[v] − log z1, log q_T[v] = a[v]/T − log zs, log p_t[v] = b[v]/T − log zt and
//   kl = Σ p_t·(log p_t − log q_T) = cross/zt − log zt + log zs   (Σ p_t = 1).
// Written this way a student equal to its teacher gives b − a = 0 and zs = zt exactly, so kl = 0.
struct RowStatistics {
  float student_max, teacher_max;
  double z1, zs, zt, cross;
};

RowStatistics row_statistics(const float* s, const float* t, std::size_t vocab, float temperature) {
  float ms = s[0], mt = t[0];
#pragma omp simd reduction(max : ms, mt)
  for (std::size_t j = 0; j < vocab; ++j) {
    ms = s[j] > ms ? s[j] : ms;
    mt = t[j] > mt ? t[j] : mt;
  }
  double z1 = 0.0, zs = 0.0, zt = 0.0, cross = 0.0;
#pragma omp simd reduction(+ : z1, zs, zt, cross)
  for (std::size_t j = 0; j < vocab; ++j) {
    const float a = s[j] - ms, b = t[j] - mt;
    const float et = exp_poly(b / temperature);
    z1 += exp_poly(a);
    zs += exp_poly(a / temperature);
    zt += et;
    // The difference in double: with logits of magnitude 1e3 its fp32 rounding would be 1e-4.
    cross += static_cast<double>(et) * ((static_cast<double>(t[j]) - mt) - (static_cast<double>(s[j]) - ms)) /
             temperature;
  }
  return {ms, mt, z1, zs, zt, cross};
}

// The per-row forward and, when dstudent is not null, the gradient. One row per iteration; the
// row's logits are read before its gradient is written, so dstudent may alias student.
void distillation(const float* student, const float* teacher, const std::int32_t* targets, float* losses,
                  float* kl, float* ce, float* dstudent, std::size_t rows, std::size_t vocab, const Distillation& d,
                  float grad_scale) {
  const float temperature = d.temperature;
  const double alpha = d.alpha;
  const double soft_weight = alpha * static_cast<double>(temperature) * static_cast<double>(temperature);
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const float* s = student + r * vocab;  // (V)
    const float* t = teacher + r * vocab;  // (V)
    const auto target = static_cast<std::size_t>(targets[r]);
    const float target_logit = s[target];
    const RowStatistics st = row_statistics(s, t, vocab, temperature);
    const double row_ce = std::log(st.z1) + static_cast<double>(st.student_max - target_logit);
    const double row_kl = std::max(0.0, st.cross / st.zt - std::log(st.zt) + std::log(st.zs));
    if (losses != nullptr) losses[r] = static_cast<float>(soft_weight * row_kl + (1.0 - alpha) * row_ce);
    if (kl != nullptr) kl[r] = static_cast<float>(row_kl);
    if (ce != nullptr) ce[r] = static_cast<float>(row_ce);
    if (dstudent == nullptr) continue;
    // grad_scale·(alpha·T·(e^(a/T)/zs − e^(b/T)/zt) + (1 − alpha)·(e^a/z1 − onehot)), the
    // exponentials recomputed rather than kept in a second (V) buffer.
    const double soft = static_cast<double>(grad_scale) * alpha * static_cast<double>(temperature);
    const double hard = static_cast<double>(grad_scale) * (1.0 - alpha);
    const auto soft_student = static_cast<float>(soft / st.zs);
    const auto soft_teacher = static_cast<float>(soft / st.zt);
    const auto hard_student = static_cast<float>(hard / st.z1);
    const float ms = st.student_max, mt = st.teacher_max;
    float* g = dstudent + r * vocab;
#pragma omp simd
    for (std::size_t j = 0; j < vocab; ++j) {
      const float a = s[j] - ms, b = t[j] - mt;
      g[j] = exp_poly(a / temperature) * soft_student - exp_poly(b / temperature) * soft_teacher +
             exp_poly(a) * hard_student;
    }
    g[target] -= static_cast<float>(hard);
  }
}

}  // namespace

void check_distillation(const Distillation& d, const char* who) {
  if (!(d.temperature >= min_temperature && std::isfinite(d.temperature)))
    throw std::invalid_argument(std::string(who) + ": temperature " + shortest(d.temperature) +
                                " must be finite and at least " + shortest(min_temperature));
  if (!(d.alpha >= 0.0f && d.alpha <= 1.0f))
    throw std::invalid_argument(std::string(who) + ": alpha " + shortest(d.alpha) + " is outside [0, 1]");
}

void distillation_loss(const float* student, const float* teacher, const std::int32_t* targets, float* losses,
                       float* kl, float* ce, std::size_t rows, std::size_t vocab, const Distillation& d) {
  check_arguments(targets, rows, vocab, d, "distillation_loss");
  distillation(student, teacher, targets, losses, kl, ce, nullptr, rows, vocab, d, 0.0f);
}

void distillation_loss_backward(const float* student, const float* teacher, const std::int32_t* targets,
                                float* losses, float* kl, float* ce, float* dstudent, std::size_t rows,
                                std::size_t vocab, const Distillation& d, float grad_scale) {
  check_arguments(targets, rows, vocab, d, "distillation_loss_backward");
  if (dstudent == nullptr) throw std::invalid_argument("distillation_loss_backward: dstudent is null");
  distillation(student, teacher, targets, losses, kl, ce, dstudent, rows, vocab, d, grad_scale);
}

}  // namespace aiopt::kernels::cpu
