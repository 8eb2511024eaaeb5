// int8 and fp8 GEMMs through cuBLASLt; layouts and requirements in kernels/cuda/gemm_lt.hpp.
//
// cuBLASLt is column-major. Row-major y (m, n) = x (m, k)·W (n, k)ᵀ is the column-major product
// yᵀ (n, m) = op(A)·op(B) with A = W read as a (k, n) matrix (ld k) and transposed, B = x read as
// a (k, m) matrix (ld k) untransposed, and C = D = y read as an (n, m) matrix (ld n): cuBLASLt's
// (M, N, K) is our (n, m, k), and its A scale belongs to W, its B scale to x.
#include "kernels/cuda/gemm_lt.hpp"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <compare>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <new>
#include <string>

#include "core/cuda_check.hpp"
#include "core/error.hpp"
#include "kernels/cuda/device_math.cuh"

namespace aiopt::kernels::cuda {

namespace {

// The most workspace the heuristic may ask for: cuBLAS's recommendation for Hopper.
constexpr std::uint64_t max_workspace_bytes = 32u << 20;

enum class Kind { int8, fp8_f32, fp8_bf16 };

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::int8: return "int8 x int8 -> int32";
    case Kind::fp8_f32: return "e4m3 x e4m3 -> f32";
    case Kind::fp8_bf16: return "e4m3 x e4m3 -> bf16";
  }
  return "?";
}

// One problem as the heuristic sees it: the algorithm depends on the shape and on how aligned
// the pointers are, so both pick the cached plan.
struct PlanKey {
  Kind kind;
  std::size_t m, n, k;
  unsigned align_x, align_w, align_y;
  auto operator<=>(const PlanKey&) const = default;
};

// The descriptors and the chosen algorithm of one PlanKey. Destroy failures are ignored: they
// can only mean the context is already gone.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // W, x, y (C and D alike)
  cublasLtMatmulAlgo_t algo{};
  std::size_t workspace_bytes = 0;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

struct Preference {
  cublasLtMatmulPreference_t pref = nullptr;
  Preference() { CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref)); }
  Preference(const Preference&) = delete;
  Preference& operator=(const Preference&) = delete;
  ~Preference() { cublasLtMatmulPreferenceDestroy(pref); }
  template <class T>
  void set(cublasLtMatmulPreferenceAttributes_t attribute, T value) {
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attribute, &value, sizeof(value)));
  }
};

// ---- the context: one per (device, host thread)

// A cuBLASLt handle, its plans, and one workspace of max_workspace_bytes, the most any plan may
// ask for. A cuBLASLt handle may not be used by two host threads at once; one per thread needs
// no locking. The workspace is allocated once, with the handle, and like the handle (and
// cuBLAS's own workspace) it is not a tensor: it bypasses the tracked allocator, so it is in no
// case's measured peak, and a sweep that makes a stream per case does not grow it.
struct Context {
  int device = 0;
  int sm_major = 0, sm_minor = 0;
  cublasLtHandle_t handle = nullptr;
  std::map<PlanKey, std::unique_ptr<Plan>> plans;
  void* workspace = nullptr;
  void* last_stream = nullptr;  // the stream of the last GEMM, valid once `used`
  bool used = false;

  Context() = default;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() {
    plans.clear();
    if (workspace) cudaFree(workspace);
    if (handle) cublasLtDestroy(handle);
  }

  std::string where() const {
    return "cuda:" + std::to_string(device) + " (compute capability " + std::to_string(sm_major) + "." +
           std::to_string(sm_minor) + ")";
  }

  // The workspace for a GEMM on `stream`. GEMMs on one stream run in order, so they share it;
  // before the first GEMM on another stream the device finishes the queued ones, so two streams
  // never use it at once (a stream per run switches once per run, outside the steady state).
  void* workspace_for(void* stream) {
    if (used && stream != last_stream) CUDA_CHECK(cudaDeviceSynchronize());
    used = true;
    last_stream = stream;
    return workspace;
  }
};

// Without a usable GPU, cudaGetDevice or cublasLtCreate fails: that is "no device", not a bug.
Context& context() {
  thread_local std::map<int, std::unique_ptr<Context>> contexts;
  int device = 0;
  if (const cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) {
    cudaGetLastError();
    throw DeviceUnavailable(std::string("cuBLASLt: no CUDA device: ") + cudaGetErrorString(err));
  }
  auto& slot = contexts[device];
  if (!slot) {
    auto ctx = std::make_unique<Context>();
    ctx->device = device;
    if (const cublasStatus_t status = cublasLtCreate(&ctx->handle); status != CUBLAS_STATUS_SUCCESS)
      throw DeviceUnavailable("cuBLASLt cannot start on cuda:" + std::to_string(device) + ": " +
                              cublasGetStatusString(status));
    CUDA_CHECK(cudaDeviceGetAttribute(&ctx->sm_major, cudaDevAttrComputeCapabilityMajor, device));
    CUDA_CHECK(cudaDeviceGetAttribute(&ctx->sm_minor, cudaDevAttrComputeCapabilityMinor, device));
    if (const cudaError_t err = cudaMalloc(&ctx->workspace, max_workspace_bytes); err != cudaSuccess) {
      cudaGetLastError();
      if (err == cudaErrorMemoryAllocation) throw std::bad_alloc();
      CUDA_CHECK(err);
    }
    slot = std::move(ctx);
  }
  return *slot;
}

// The largest power of two, up to 256, that divides the address: what cuBLASLt may assume.
unsigned alignment(const void* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  unsigned a = 256;
  while (a > 1 && address % a != 0) a /= 2;
  return a;
}

std::string describe(const PlanKey& key) {
  return std::string(kind_name(key.kind)) + " GEMM m=" + std::to_string(key.m) + " n=" + std::to_string(key.n) +
         " k=" + std::to_string(key.k) + " (alignments x " + std::to_string(key.align_x) + ", w " +
         std::to_string(key.align_w) + ", y " + std::to_string(key.align_y) + " bytes)";
}

void set_scales(const Plan& plan, const float* x_scale, const float* w_scale) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale,
                                              sizeof(w_scale)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale,
                                              sizeof(x_scale)));
}

std::unique_ptr<Plan> make_plan(const Context& ctx, const PlanKey& key, const float* x_scale, const float* w_scale) {
  auto plan = std::make_unique<Plan>();
  const bool int8 = key.kind == Kind::int8;
  const cudaDataType_t in = int8 ? CUDA_R_8I : CUDA_R_8F_E4M3;
  const cudaDataType_t out = int8 ? CUDA_R_32I : key.kind == Kind::fp8_f32 ? CUDA_R_32F : CUDA_R_16BF;
  // int8: int32 accumulation with int32 alpha and beta; fp8: fp32 accumulation and scales.
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, int8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F,
                                        int8 ? CUDA_R_32I : CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof(keep)));
  if (!int8) set_scales(*plan, x_scale, w_scale);
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, in, key.k, key.n, static_cast<std::int64_t>(key.k)));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, in, key.k, key.m, static_cast<std::int64_t>(key.k)));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, out, key.n, key.m, static_cast<std::int64_t>(key.n)));

  Preference pref;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, max_workspace_bytes);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, std::uint32_t{key.align_w});
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, std::uint32_t{key.align_x});
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, std::uint32_t{key.align_y});
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, std::uint32_t{key.align_y});

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(ctx.handle, plan->desc, plan->a, plan->b, plan->c,
                                                                plan->c, pref.pref, 1, &result, &found);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || (status == CUBLAS_STATUS_SUCCESS && found == 0))
    throw NotApplicable("cuBLASLt offers no algorithm for the " + describe(key) + " on " + ctx.where());
  CUBLAS_CHECK(status);
  plan->algo = result.algo;
  plan->workspace_bytes = result.workspaceSize;
  return plan;
}

// Runs y = x·Wᵀ for `key` on the current device, planning it on first use.
void run(const PlanKey& key, const void* x, const void* w, void* y, const float* x_scale, const float* w_scale,
         void* stream) {
  Context& ctx = context();
  if (key.kind != Kind::int8 && (ctx.sm_major < 8 || (ctx.sm_major == 8 && ctx.sm_minor < 9)))
    throw DeviceUnavailable("cuda gemm_fp8: e4m3 tensor cores need compute capability 8.9 or newer (Ada, Hopper); " +
                            ctx.where() + " is older");
  auto& plan = ctx.plans[key];
  if (!plan) plan = make_plan(ctx, key, x_scale, w_scale);
  void* workspace = ctx.workspace_for(stream);
  if (key.kind == Kind::int8) {
    const std::int32_t alpha = 1, beta = 0;
    CUBLAS_CHECK(cublasLtMatmul(ctx.handle, plan->desc, &alpha, w, plan->a, x, plan->b, &beta, y, plan->c, y,
                                plan->c, &plan->algo, workspace, plan->workspace_bytes, as_stream(stream)));
  } else {
    set_scales(*plan, x_scale, w_scale);
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(ctx.handle, plan->desc, &alpha, w, plan->a, x, plan->b, &beta, y, plan->c, y,
                                plan->c, &plan->algo, workspace, plan->workspace_bytes, as_stream(stream)));
  }
}

}  // namespace

// ---- entry points

void gemm_int8(const std::int8_t* x, const std::int8_t* w, std::int32_t* y, std::size_t m, std::size_t n,
               std::size_t k, void* stream) {
  validate_gemm_int8(m, n, k, x, w, y);
  run({Kind::int8, m, n, k, alignment(x), alignment(w), alignment(y)}, x, w, y, nullptr, nullptr, stream);
}

void gemm_fp8(const std::uint8_t* x, const float* x_scale, const std::uint8_t* w, const float* w_scale, void* y,
              DType out, std::size_t m, std::size_t n, std::size_t k, void* stream) {
  validate_gemm_fp8(m, n, k, out, x, w, y);
  const Kind kind = out == DType::f32 ? Kind::fp8_f32 : Kind::fp8_bf16;
  run({kind, m, n, k, alignment(x), alignment(w), alignment(y)}, x, w, y, x_scale, w_scale, stream);
}

}  // namespace aiopt::kernels::cuda
