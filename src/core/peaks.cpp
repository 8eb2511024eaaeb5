#include "core/peaks.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/hardware.hpp"
#include "core/rng.hpp"
#include "core/threads.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "core/cuda_check.hpp"
#endif

namespace aiopt::peaks {

namespace {

// Probes run one at a time: two at once would each measure half a machine.
std::mutex probe_mutex;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---- host bandwidth

struct FreeDeleter {
  void operator()(double* p) const { std::free(p); }
};
using HostArray = std::unique_ptr<double[], FreeDeleter>;

HostArray host_array(std::size_t count) {
  auto* p = static_cast<double*>(std::aligned_alloc(64, count * sizeof(double)));
  if (!p) throw std::bad_alloc();
  return HostArray(p);
}

}  // namespace

std::size_t host_bandwidth_array_bytes() {
  const hardware::CpuInfo& cpu = hardware::cpu();
  const std::size_t llc = cpu.l3_bytes ? cpu.l3_bytes : cpu.l2_bytes;
  const std::size_t wanted = std::max(std::size_t{64} << 20, (4 * llc + 2) / 3);
  // Never more than an eighth of the memory for the three arrays together.
  const std::size_t cap = std::max(std::size_t{64} << 20, cpu.memory_bytes / 24);
  return std::min(wanted, cap) / 64 * 64;
}

namespace {

Bandwidth measure_host_bandwidth() {
  constexpr int reps = 10;  // best of 10: one pass is ~5 ms, and a neighbour's burst spoils a few
  constexpr double scalar = 3.0;
  const std::size_t n = host_bandwidth_array_bytes() / sizeof(double);
  HostArray xs = host_array(n), ys = host_array(n), zs = host_array(n);
  double* x = xs.get();
  double* y = ys.get();
  double* z = zs.get();
  // First touch in parallel with the same static schedule as the kernels, so each thread's
  // pages sit on its own NUMA node and no page fault lands inside a timed pass.
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    x[i] = 1.0 + 0.001 * static_cast<double>(i % 1000);
    y[i] = 2.0 - 0.0001 * static_cast<double>(i % 997);
    z[i] = -1.0;
  }

  double copy_best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static)
    for (std::size_t i = 0; i < n; ++i) z[i] = x[i];
    copy_best = std::min(copy_best, seconds_since(start));
  }
  std::size_t copy_wrong = 0;
#pragma omp parallel for schedule(static) reduction(+ : copy_wrong)
  for (std::size_t i = 0; i < n; ++i) copy_wrong += z[i] != x[i];
  if (copy_wrong)
    throw CheckFailed("host bandwidth probe: copy left " + std::to_string(copy_wrong) + " of " +
                      std::to_string(n) + " elements wrong");

  double triad_best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static)
    for (std::size_t i = 0; i < n; ++i) z[i] = x[i] + scalar * y[i];
    triad_best = std::min(triad_best, seconds_since(start));
  }
  // The reference may round once (fused multiply-add) or twice; 4 ulps covers both, and the
  // negated comparison counts a NaN as wrong.
  constexpr double tolerance = 4 * std::numeric_limits<double>::epsilon();
  std::size_t triad_wrong = 0;
#pragma omp parallel for schedule(static) reduction(+ : triad_wrong)
  for (std::size_t i = 0; i < n; ++i) {
    const double ref = x[i] + scalar * y[i];
    triad_wrong += !(std::abs(z[i] - ref) <= tolerance * std::abs(ref));
  }
  if (triad_wrong)
    throw CheckFailed("host bandwidth probe: triad left " + std::to_string(triad_wrong) + " of " +
                      std::to_string(n) + " elements off by more than 4 ulps");

  const double array_bytes = static_cast<double>(n) * sizeof(double);
  return {2 * array_bytes / copy_best / 1e9, 3 * array_bytes / triad_best / 1e9};
}

}  // namespace

// ---- host sgemm

void square_sgemm(int n, const float* a, const float* b, float* c) {
  // OpenBLAS runs single-threaded (core/threads.hpp); the rows of C are split among our
  // threads, as kernels/cpu/gemm.cpp does for every product.
  const int workers = omp_get_max_threads();
  const int per = (n + workers - 1) / workers;
#pragma omp parallel for schedule(static, 1)
  for (int w = 0; w < workers; ++w) {
    const int begin = std::min(n, w * per), rows = std::min(n, begin + per) - begin;
    if (rows > 0)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, n, n, 1.0f, a + std::size_t(begin) * n, n, b, n,
                  0.0f, c + std::size_t(begin) * n, n);
  }
}

namespace {

double measure_host_sgemm() {
  constexpr int n = host_sgemm_size;
  // The best of at least 8 products and 0.25 s: with the best of 3 (about 40 ms), reports of the
  // same build on an idle 2-core VM read 99 and 184 GFLOP/s minutes apart, and every
  // compute_fraction moved with it.
  constexpr int min_reps = 8;
  constexpr double min_seconds = 0.25;
  const std::size_t count = std::size_t{n} * n;
  std::vector<float> a(count), b(count), c(count, 0.0f);  // (n, n) row-major each
  rng::Stream random(0x5eed'9e3a'0001ULL);
  for (float& v : a) v = random.uniform(-1.0f, 1.0f);
  for (float& v : b) v = random.uniform(-1.0f, 1.0f);

  const auto gemm = [&] { square_sgemm(n, a.data(), b.data(), c.data()); };
  gemm();  // warm-up: OpenBLAS allocates its buffers here
  double best = std::numeric_limits<double>::infinity();
  const auto begin = std::chrono::steady_clock::now();
  for (int r = 0; r < min_reps || seconds_since(begin) < min_seconds; ++r) {
    const auto start = std::chrono::steady_clock::now();
    gemm();
    best = std::min(best, seconds_since(start));
  }

  // Check sampled entries against a double-precision dot product. Bound: any fp32 summation
  // order of n products errs by at most n·u·Σ|a||b| with u = 2^-24 (Higham, Accuracy and
  // Stability of Numerical Algorithms, §3.1).
  constexpr double u = 1.0 / (1 << 24);
  for (int s = 0; s < 64; ++s) {
    const std::size_t i = random.next_bits() % n, j = random.next_bits() % n;
    double ref = 0, magnitude = 0;
    for (std::size_t k = 0; k < std::size_t{n}; ++k) {
      const double p = double{a[i * n + k]} * double{b[k * n + j]};
      ref += p;
      magnitude += std::abs(p);
    }
    const double err = std::abs(double{c[i * n + j]} - ref);
    if (!(err <= n * u * magnitude))
      throw CheckFailed("host sgemm probe: C[" + std::to_string(i) + "," + std::to_string(j) +
                        "] = " + std::to_string(c[i * n + j]) + ", reference " +
                        std::to_string(ref) + ", error " + std::to_string(err) +
                        " exceeds the bound " + std::to_string(n * u * magnitude));
  }
  return 2.0 * n * n * n / best / 1e9;
}

// ---- CUDA device-to-device copy

#ifdef AIOPT_HAVE_CUDA

// The calling thread's current device is restored on exit, so the probe is invisible to code
// that set one.
class CurrentDevice {
 public:
  explicit CurrentDevice(int device) {
    CUDA_CHECK(cudaGetDevice(&previous_));
    CUDA_CHECK(cudaSetDevice(device));
  }
  ~CurrentDevice() { cudaSetDevice(previous_); }
  CurrentDevice(const CurrentDevice&) = delete;
  CurrentDevice& operator=(const CurrentDevice&) = delete;

 private:
  int previous_ = 0;
};

struct DeviceBytes {
  explicit DeviceBytes(std::size_t bytes) { CUDA_CHECK(cudaMalloc(&ptr, bytes)); }
  ~DeviceBytes() { cudaFree(ptr); }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  unsigned char* bytes() const { return static_cast<unsigned char*>(ptr); }
  void* ptr = nullptr;
};

struct CudaStream {
  CudaStream() { CUDA_CHECK(cudaStreamCreateWithFlags(&handle, cudaStreamNonBlocking)); }
  ~CudaStream() { cudaStreamDestroy(handle); }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t handle = nullptr;
};

struct CudaEvent {
  CudaEvent() { CUDA_CHECK(cudaEventCreate(&handle)); }
  ~CudaEvent() { cudaEventDestroy(handle); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t handle = nullptr;
};

double measure_cuda_copy(int device) {
  constexpr int reps = 5;
  constexpr std::size_t bytes = cuda_copy_bytes;
  constexpr std::size_t marker_bytes = std::size_t{1} << 20;
  CurrentDevice current(device);
  DeviceBytes src(bytes), dst(bytes);
  CudaStream stream;
  CudaEvent start, stop;

  // Random markers at the start, middle and end of the source over a constant fill: the check
  // afterwards catches a copy that moved too little, to the wrong offset, or nothing at all.
  std::vector<unsigned char> marker(marker_bytes);
  rng::Stream bits(0x5eed'c0b7'0002ULL);
  for (unsigned char& m : marker) m = static_cast<unsigned char>(bits.next_bits());
  const std::size_t offsets[] = {0, bytes / 2, bytes - marker_bytes};
  CUDA_CHECK(cudaMemsetAsync(src.ptr, 0x5A, bytes, stream.handle));
  CUDA_CHECK(cudaMemsetAsync(dst.ptr, 0x00, bytes, stream.handle));
  for (std::size_t off : offsets)
    CUDA_CHECK(cudaMemcpyAsync(src.bytes() + off, marker.data(), marker_bytes,
                               cudaMemcpyHostToDevice, stream.handle));

  const auto copy = [&] {
    CUDA_CHECK(cudaMemcpyAsync(dst.ptr, src.ptr, bytes, cudaMemcpyDeviceToDevice, stream.handle));
  };
  copy();  // warm-up
  float best_ms = std::numeric_limits<float>::infinity();
  for (int r = 0; r < reps; ++r) {
    CUDA_CHECK(cudaEventRecord(start.handle, stream.handle));
    copy();
    CUDA_CHECK(cudaEventRecord(stop.handle, stream.handle));
    CUDA_CHECK(cudaEventSynchronize(stop.handle));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start.handle, stop.handle));
    best_ms = std::min(best_ms, ms);
  }

  std::vector<unsigned char> back(marker_bytes);
  for (std::size_t off : offsets) {
    CUDA_CHECK(cudaMemcpy(back.data(), dst.bytes() + off, marker_bytes, cudaMemcpyDeviceToHost));
    if (back != marker)
      throw CheckFailed("CUDA copy probe on cuda:" + std::to_string(device) +
                        ": the destination differs from the source at byte offset " +
                        std::to_string(off));
  }
  CUDA_CHECK(cudaMemcpy(back.data(), dst.bytes() + bytes / 4, marker_bytes,
                        cudaMemcpyDeviceToHost));
  if (std::any_of(back.begin(), back.end(), [](unsigned char v) { return v != 0x5A; }))
    throw CheckFailed("CUDA copy probe on cuda:" + std::to_string(device) +
                      ": the destination lacks the source's fill at byte offset " +
                      std::to_string(bytes / 4));
  return 2.0 * bytes / (best_ms * 1e-3) / 1e9;
}

#endif

}  // namespace

Bandwidth host_bandwidth() {
  static std::map<int, Bandwidth> cache;  // by thread count
  std::lock_guard lock(probe_mutex);
  const int t = threads();
  if (auto it = cache.find(t); it != cache.end()) return it->second;
  return cache[t] = measure_host_bandwidth();
}

double host_sgemm_gflops() {
  static std::map<int, double> cache;  // by thread count
  std::lock_guard lock(probe_mutex);
  const int t = threads();
  if (auto it = cache.find(t); it != cache.end()) return it->second;
  return cache[t] = measure_host_sgemm();
}

double cuda_copy_gbs(int device) {
  cuda::require_device(device);
#ifdef AIOPT_HAVE_CUDA
  static std::map<int, double> cache;  // by device
  std::lock_guard lock(probe_mutex);
  if (auto it = cache.find(device); it != cache.end()) return it->second;
  return cache[device] = measure_cuda_copy(device);
#else
  throw DeviceUnavailable(cuda::unavailable_reason());
#endif
}

}  // namespace aiopt::peaks
