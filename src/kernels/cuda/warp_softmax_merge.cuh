#pragma once
// The last step of the decode-attention kernels that split one query row's keys over WARPS warps,
// each running its own online softmax over its tiles (kv_int8.cu, paged_attention.cu): the warps'
// (max, sum, accumulator) triples merged in shared memory,
//   out = Σ_w e^(m_w − m)·acc_w / Σ_w e^(m_w − m)·l_w with m = max_w m_w.
// A warp that had no tile holds (−inf, 0, 0) and weighs e^(−inf) = 0. Lane l of a warp holds the
// accumulator of dimensions d0 + l + 32·e (e < DPL) of the slice; out_row[d0 …] receives the slice.
// warp_acc: (WARPS, slice), warp_max, warp_sum: (WARPS), all in shared memory.
namespace aiopt::kernels::cuda {

template <int WARPS, int DPL>
__device__ __forceinline__ void merge_warp_softmax(float max, float sum, const float (&acc)[DPL], int d0, int D,
                                                   float* warp_acc, float* warp_max, float* warp_sum,
                                                   float* out_row) {
  constexpr int lanes = 32;  // a warp's threads
  constexpr int slice = lanes * DPL;
  const int lane = static_cast<int>(threadIdx.x % lanes);
  const int warp = static_cast<int>(threadIdx.x / lanes);
  if (lane == 0) {
    warp_max[warp] = max;
    warp_sum[warp] = sum;
  }
  for (int e = 0; e < DPL; ++e) warp_acc[warp * slice + lane + lanes * e] = acc[e];
  __syncthreads();
  float m = -INFINITY;
  for (int w = 0; w < WARPS; ++w) m = fmaxf(m, warp_max[w]);
  float l = 0.0f;
  for (int w = 0; w < WARPS; ++w) l += warp_sum[w] * expf(warp_max[w] - m);
  const float inv = 1.0f / l;
  for (int dl = static_cast<int>(threadIdx.x); dl < slice && d0 + dl < D; dl += static_cast<int>(blockDim.x)) {
    float o = 0.0f;
    for (int w = 0; w < WARPS; ++w) o += warp_acc[w * slice + dl] * expf(warp_max[w] - m);
    out_row[d0 + dl] = o * inv;
  }
}

}  // namespace aiopt::kernels::cuda
