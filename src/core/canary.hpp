#pragma once
// The machine's own speed, read before each case: a fixed product timed the same way every time,
// so that a report can say how steady the machine was while it ran. On a shared VM the same
// build's cases moved by tens of percent from run to run while this product moved with them:
// the central 95% of its values over two quick CI sweeps spanned 57-105%. `compare` widens its
// allowance by that spread (report/drift.hpp), rather than calling the machine's drift a
// regression. It runs on the run's threads, as the cases do: a one-thread product missed the
// moves that come from one of two vCPUs slowing while the other waits for it at a barrier.
namespace aiopt::canary {

inline constexpr int size = 256;  // M = N = K of the product: 768 KiB of operands, in L2

// GFLOP/s of cblas_sgemm at `size`, the rows of C split among the OpenMP threads: the median of
// 5 rounds of at least 2 ms each (about 10 ms in all). Not checked: the roofline's sgemm probe
// (peaks.hpp) checks this BLAS.
double host_gflops();

}  // namespace aiopt::canary
