#pragma once
// The machine's measured peaks, the denominators of the roofline: each result's achieved GB/s
// and FLOP/s are quoted as a fraction of these. Measured, not taken from a data sheet, because
// a VM, a BLAS kernel choice (OPENBLAS_CORETYPE) or a neighbour tenant moves them.
//
// Each probe runs once per process per (device, thread count) and is cached; each takes well
// under a second and checks its own output (a probe that computes garbage throws CheckFailed).
// Probe memory is plain host / cudaMalloc memory, never the tracked allocator's: it is no
// technique's memory.
#include <cstddef>

namespace aiopt::peaks {

// STREAM's convention (McCalpin): copy moves 2 words per element (read x, write z), triad 3
// (read x and y, write z); write-allocate traffic is not counted.
struct Bandwidth {
  double copy_gbs = 0;
  double triad_gbs = 0;
};

// Bytes of each of the probe's three arrays: together at least four times the last-level cache
// the CPU reports (and at least 64 MiB each), so no share of them can be served from cache. The
// VM here reports a 384 MiB L3; with 64 MiB arrays its triad read either ~50 GB/s or ~95 GB/s,
// depending on how much of that cache other tenants were using, and with 512 MiB steadily ~48.
std::size_t host_bandwidth_array_bytes();
inline constexpr int host_sgemm_size = 1024;  // M = N = K
inline constexpr std::size_t cuda_copy_bytes = std::size_t{256} << 20;

// C = A·B for row-major (n, n) matrices on the OpenMP threads, the rows of C split among them:
// how the sgemm probe and the canary (canary.hpp) time the BLAS.
void square_sgemm(int n, const float* a, const float* b, float* c);

Bandwidth host_bandwidth();  // with the current thread count (threads()); best of 10
double host_sgemm_gflops();  // cblas_sgemm, with the current thread count; best of >= 8 and 0.25 s
// Device-to-device cudaMemcpyAsync, read + write bytes counted; best of 5.
// Throws DeviceUnavailable without CUDA, without a device, or for an index it does not have.
double cuda_copy_gbs(int device);

}  // namespace aiopt::peaks
