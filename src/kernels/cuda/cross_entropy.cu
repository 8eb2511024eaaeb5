// Softmax cross-entropy on CUDA (kernels/cuda/cross_entropy.hpp).
#include "kernels/cuda/cross_entropy.hpp"

#include <stdexcept>

#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

// One block per row. logits and dlogits may alias: the target's logit is read into a register
// before the first barrier, and each thread rewrites only the elements it read itself.
__global__ void softmax_cross_entropy_kernel(const float* logits, const std::int32_t* targets, float* losses,
                                             float* dlogits, int vocab, float grad_scale) {
  const std::size_t row = blockIdx.x;
  const float* x = logits + row * vocab;
  const std::int32_t target = targets[row];
  if (target < 0) {  // uniform across the block
    if (threadIdx.x == 0) losses[row] = 0.0f;
    if (dlogits != nullptr)
      for (int j = threadIdx.x; j < vocab; j += blockDim.x) dlogits[row * vocab + j] = 0.0f;
    return;
  }
  const float target_logit = x[target];
  float max = -INFINITY;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) max = fmaxf(max, x[j]);
  max = block_reduce(max, Max{}, -INFINITY);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) sum += expf(x[j] - max);
  sum = block_reduce(sum, Sum{}, 0.0f);
  if (threadIdx.x == 0) losses[row] = logf(sum) + max - target_logit;
  if (dlogits == nullptr) return;
  const float inv = 1.0f / sum;
  float* g = dlogits + row * vocab;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = expf(x[j] - max) * inv;
    g[j] = (p - (j == target ? 1.0f : 0.0f)) * grad_scale;
  }
}

}  // namespace

// ---- launchers

void softmax_cross_entropy(const float* logits, const std::int32_t* targets, float* losses, float* dlogits,
                           std::size_t rows, std::size_t vocab, float grad_scale, void* stream) {
  if (rows == 0) return;
  if (vocab == 0) throw std::invalid_argument("softmax_cross_entropy: vocab must be positive");
  const int width = checked_width(vocab, "softmax_cross_entropy");
  softmax_cross_entropy_kernel<<<row_blocks(rows), row_block_threads(vocab, 1), 0, as_stream(stream)>>>(
      logits, targets, losses, dlogits, width, grad_scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace aiopt::kernels::cuda
