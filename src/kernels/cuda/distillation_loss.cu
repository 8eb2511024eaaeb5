// Knowledge-distillation loss on CUDA (kernels/cuda/distillation_loss.hpp).
#include "kernels/cuda/distillation_loss.hpp"

#include <stdexcept>

#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

// The four sums of a row (kernels/cpu/distillation_loss.cpp's RowStatistics), with a = s − max s
// and b = t − max t: z1 = Σ e^a, zs = Σ e^(a/T), zt = Σ e^(b/T), cross = Σ e^(b/T)·(b − a)/T.
struct RowSums {
  float z1, zs, zt, cross;
};

// Every thread gets the block's totals: warp shuffles, then one warp over the warps' partials,
// all four sums at once (two barriers instead of block_reduce's eight).
__device__ RowSums block_sums(RowSums v) {
  __shared__ float partial[4][32];
  __shared__ float total[4];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const float own[4] = {warp_reduce(v.z1, Sum{}), warp_reduce(v.zs, Sum{}), warp_reduce(v.zt, Sum{}),
                        warp_reduce(v.cross, Sum{})};
  if (lane == 0)
    for (int k = 0; k < 4; ++k) partial[k][warp] = own[k];
  __syncthreads();
  if (warp == 0) {
    const bool live = lane < static_cast<int>(blockDim.x / 32);
    for (int k = 0; k < 4; ++k) {
      const float w = warp_reduce(live ? partial[k][lane] : 0.0f, Sum{});
      if (lane == 0) total[k] = w;
    }
  }
  __syncthreads();
  return {total[0], total[1], total[2], total[3]};
}

// One block per row. student and dstudent may alias: the target's logit is read into a register
// before the first barrier, and each thread rewrites only the elements it read itself.
__global__ void distillation_loss_kernel(const float* student, const float* teacher, const std::int32_t* targets,
                                         float* losses, float* kl, float* ce, float* dstudent, int vocab,
                                         float temperature, float alpha, float grad_scale) {
  const std::size_t row = blockIdx.x;
  const float* s = student + row * vocab;
  const float* t = teacher + row * vocab;
  const std::int32_t target = targets[row];
  if (target < 0 || target >= vocab) {  // uniform across the block
    if (threadIdx.x == 0) {
      if (losses != nullptr) losses[row] = NAN;
      if (kl != nullptr) kl[row] = NAN;
      if (ce != nullptr) ce[row] = NAN;
    }
    if (dstudent != nullptr)
      for (int j = threadIdx.x; j < vocab; j += blockDim.x) dstudent[row * vocab + j] = NAN;
    return;
  }
  const float target_logit = s[target];
  float ms = -INFINITY, mt = -INFINITY;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    ms = fmaxf(ms, s[j]);
    mt = fmaxf(mt, t[j]);
  }
  ms = block_reduce(ms, Max{}, -INFINITY);
  mt = block_reduce(mt, Max{}, -INFINITY);
  RowSums sums{0.0f, 0.0f, 0.0f, 0.0f};
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float a = s[j] - ms, b = t[j] - mt;
    const float et = expf(b / temperature);
    sums.z1 += expf(a);
    sums.zs += expf(a / temperature);
    sums.zt += et;
    sums.cross += et * ((b - a) / temperature);
  }
  sums = block_sums(sums);
  if (threadIdx.x == 0) {
    const float row_ce = logf(sums.z1) + (ms - target_logit);
    const float row_kl = fmaxf(0.0f, sums.cross / sums.zt - logf(sums.zt) + logf(sums.zs));
    if (losses != nullptr) losses[row] = alpha * temperature * temperature * row_kl + (1.0f - alpha) * row_ce;
    if (kl != nullptr) kl[row] = row_kl;
    if (ce != nullptr) ce[row] = row_ce;
  }
  if (dstudent == nullptr) return;
  const float soft = grad_scale * alpha * temperature;
  const float hard = grad_scale * (1.0f - alpha);
  const float soft_student = soft / sums.zs, soft_teacher = soft / sums.zt, hard_student = hard / sums.z1;
  float* g = dstudent + row * vocab;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float a = s[j] - ms, b = t[j] - mt;
    g[j] = expf(a / temperature) * soft_student - expf(b / temperature) * soft_teacher + expf(a) * hard_student -
           (j == target ? hard : 0.0f);
  }
}

void launch(const float* student, const float* teacher, const std::int32_t* targets, float* losses, float* kl,
            float* ce, float* dstudent, std::size_t rows, std::size_t vocab, const Distillation& d,
            float grad_scale, void* stream, const char* who) {
  cpu::check_distillation(d, who);
  if (rows == 0) return;
  if (vocab == 0) throw std::invalid_argument(std::string(who) + ": vocab must be positive");
  const int width = checked_width(vocab, who);
  distillation_loss_kernel<<<row_blocks(rows), row_block_threads(vocab, 1), 0, as_stream(stream)>>>(
      student, teacher, targets, losses, kl, ce, dstudent, width, d.temperature, d.alpha, grad_scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

// ---- launchers

void distillation_loss(const float* student, const float* teacher, const std::int32_t* targets, float* losses,
                       float* kl, float* ce, std::size_t rows, std::size_t vocab, const Distillation& d,
                       void* stream) {
  launch(student, teacher, targets, losses, kl, ce, nullptr, rows, vocab, d, 0.0f, stream, "distillation_loss");
}

void distillation_loss_backward(const float* student, const float* teacher, const std::int32_t* targets,
                                float* losses, float* kl, float* ce, float* dstudent, std::size_t rows,
                                std::size_t vocab, const Distillation& d, float grad_scale, void* stream) {
  if (dstudent == nullptr) throw std::invalid_argument("distillation_loss_backward: dstudent is null");
  launch(student, teacher, targets, losses, kl, ce, dstudent, rows, vocab, d, grad_scale, stream,
         "distillation_loss_backward");
}

}  // namespace aiopt::kernels::cuda
