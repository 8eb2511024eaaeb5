#pragma once
// Knowledge-distillation loss (Hinton, Vinyals & Dean 2015): the student's (rows, V) logits
// matched to a teacher's softened distribution and to the hard targets, fused with its gradient
// with respect to the student's logits. The teacher gets no gradient.
//
// For row r, with s the student's logits, t the teacher's, y the target, T the temperature and
// alpha the weight of the soft term:
//   p_t = softmax(t / T),  q_T = softmax(s / T),  q = softmax(s)
//   kl_r   = Σ_v p_t[v]·(log p_t[v] − log q_T[v])        KL(teacher ‖ student) at temperature T
//   ce_r   = −log q[y_r]                                  hard-label cross-entropy at T = 1
//   loss_r = alpha·T²·kl_r + (1 − alpha)·ce_r
//   ∂loss_r/∂s[r, v] = alpha·T·(q_T[v] − p_t[v]) + (1 − alpha)·(q[v] − onehot(y_r)[v])
// The T² keeps the soft term's gradient comparable across temperatures: ∂kl_r/∂s alone is
// (q_T − p_t)/T, which shrinks as 1/T² once T exceeds the logits' spread.
#include <cstddef>
#include <cstdint>

namespace aiopt::kernels::cpu {

// The smallest temperature accepted. Below it the soft term's fp32 arithmetic (a logit gap over
// T, and T²) leaves its range for no use: at T = 1e-6 the soft distributions are already one-hot
// wherever the largest logits differ by more than 1e-4.
inline constexpr float min_temperature = 1e-6f;

// The loss's two constants. temperature finite and >= min_temperature; alpha in [0, 1] (0: plain
// cross-entropy; 1: the soft term alone).
struct Distillation {
  float temperature = 1.0f;
  float alpha = 0.5f;
};

// Throws std::invalid_argument naming the value when the temperature or alpha is outside those
// bounds. `who` begins the message.
void check_distillation(const Distillation& d, const char* who);

// Per-row losses: losses[r] = loss_r, and, where not null, kl[r] = kl_r and ce[r] = ce_r (the two
// terms before weighting, for metrics). Every row's exponentials are taken with the row's maximum
// subtracted, in fp32, and summed in double, so logits of any finite magnitude are safe. kl_r is
// never negative: rounding below 0 is clipped. The arguments (d, every target in [0, vocab)) are
// checked before anything is written, with std::invalid_argument naming the bad value.
// student, teacher: (rows, vocab); targets, losses, kl, ce: (rows).
void distillation_loss(const float* student, const float* teacher, const std::int32_t* targets, float* losses,
                       float* kl, float* ce, std::size_t rows, std::size_t vocab, const Distillation& d);

// The same forward (losses, kl, ce each may be null), and dstudent[r, v] = grad_scale·∂loss_r/∂s[r, v]
// written: grad_scale = 1/rows makes it the gradient of the mean loss. dstudent may alias student
// (the row is read before its gradient overwrites it), never teacher. dstudent: (rows, vocab).
void distillation_loss_backward(const float* student, const float* teacher, const std::int32_t* targets,
                                float* losses, float* kl, float* ce, float* dstudent, std::size_t rows,
                                std::size_t vocab, const Distillation& d, float grad_scale);

}  // namespace aiopt::kernels::cpu
