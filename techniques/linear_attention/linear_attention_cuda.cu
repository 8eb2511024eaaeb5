// The CUDA forward of linear_attention: inputs and projections made on the host (the same
// numbers as the CPU forward), uploaded once; each run() enqueues one forward on the stream.
#include <cuda_runtime.h>

#include "core/cuda_check.hpp"
#include "core/dtype.hpp"
#include "kernels/cuda/attention.hpp"
#include "kernels/cuda/linear_attention.hpp"
#include "techniques/linear_attention/linear_attention.hpp"

namespace aiopt::linear_attention {

namespace {

namespace gpu = kernels::cuda;

// Owner of the stream, so a constructor that throws half way leaks nothing.
struct StreamDestroy {
  void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
};

class CudaForward : public Forward {
 public:
  CudaForward(const Shape& s, const Device& device) : s_(s), device_(device) {
    CUDA_CHECK(cudaSetDevice(device.index));
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    stream_.reset(stream);
    {
      // The host copies live until the stream has drained the uploads below.
      const Inputs in = make_inputs(s);
      q_ = upload(in.q);
      k_ = upload(in.k);
      v_ = upload(in.v);
      memory::Buffer<float> w, e, f;
      if (s.kind == Kind::performer) w_ = upload(w = performer_projection(s));
      if (s.kind == Kind::linformer) {
        e_ = upload(e = linformer_projection(s, 0));
        f_ = upload(f = linformer_projection(s, 1));
      }
      CUDA_CHECK(cudaStreamSynchronize(stream));
    }
    out_ = memory::Buffer<float>(device, s.elements());
    memory::Scope scope(device);
    const std::size_t features = s.groups() * s.seq_len * s.feature_dim();
    if (features) {
      phi_q_ = memory::Buffer<float>(device, features);
      phi_k_ = memory::Buffer<float>(device, features);
    }
    std::size_t workspace = 0;
    switch (s.kind) {
      case Kind::softmax: break;  // the flash kernel keeps its tiles in shared memory and registers
      case Kind::naive: workspace = gpu::naive_workspace_elements(s.attention()); break;
      case Kind::linear_elu: workspace = kernels::cpu::linear_attention_workspace_elements(s.linear()); break;
      case Kind::performer:
        workspace = std::max(kernels::cpu::linear_attention_workspace_elements(s.linear()),
                             gpu::favor_workspace_elements(s.groups(), s.seq_len));
        break;
      case Kind::linformer: workspace = kernels::cpu::linformer_workspace_elements(s.attention(), s.proj_rows); break;
    }
    workspace_ = memory::Buffer<float>(device, workspace);
    run();
    synchronize();
    workspace_bytes_ = scope.peak_bytes();
  }

  void run() override {
    cudaStream_t stream = stream_.get();
    const float *q = q_.data(), *k = k_.data(), *v = v_.data();
    float* out = out_.data();
    switch (s_.kind) {
      case Kind::softmax: gpu::attention_flash(q, k, v, out, DType::f32, s_.attention(), stream); break;
      case Kind::naive:
        gpu::attention_naive(q, k, v, out, workspace_.data(), DType::f32, s_.attention(), stream);
        break;
      case Kind::linear_elu:
        gpu::elu_feature_map(q, phi_q_.data(), phi_q_.size(), stream);
        gpu::elu_feature_map(k, phi_k_.data(), phi_k_.size(), stream);
        gpu::linear_attention(phi_q_.data(), phi_k_.data(), v, out, workspace_.data(), s_.linear(), stream);
        break;
      case Kind::performer:
        // The feature map's row and group maxima use the workspace before the attention does.
        gpu::favor_feature_map(q, w_.data(), phi_q_.data(), workspace_.data(), s_.groups(), s_.seq_len, s_.head_dim,
                               s_.features, gpu::FavorRole::query, stream);
        gpu::favor_feature_map(k, w_.data(), phi_k_.data(), workspace_.data(), s_.groups(), s_.seq_len, s_.head_dim,
                               s_.features, gpu::FavorRole::key, stream);
        gpu::linear_attention(phi_q_.data(), phi_k_.data(), v, out, workspace_.data(), s_.linear(), stream);
        break;
      case Kind::linformer:
        gpu::linformer_attention(q, k, v, e_.data(), f_.data(), out, workspace_.data(), s_.attention(), s_.proj_rows,
                                 stream);
        break;
    }
  }

  void* stream() override { return stream_.get(); }

  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_.get())); }

  memory::Buffer<float> output() override {
    synchronize();
    memory::Buffer<float> host(Device::cpu(), out_.size());
    CUDA_CHECK(cudaMemcpy(host.data(), out_.data(), out_.bytes(), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  // On stream_, not with cudaMemcpy: a pageable cudaMemcpy runs on the legacy default stream,
  // which a cudaStreamNonBlocking stream does not wait for.
  memory::Buffer<float> upload(const memory::Buffer<float>& host) {
    memory::Buffer<float> d(device_, host.size());
    if (host.size())
      CUDA_CHECK(cudaMemcpyAsync(d.data(), host.data(), host.bytes(), cudaMemcpyHostToDevice, stream_.get()));
    return d;
  }

  Shape s_;
  Device device_;
  std::unique_ptr<CUstream_st, StreamDestroy> stream_;
  memory::Buffer<float> q_, k_, v_, out_;    // (B, H, N, d)
  memory::Buffer<float> w_;                  // performer: (m, d)
  memory::Buffer<float> e_, f_;              // linformer: (k, N) each
  memory::Buffer<float> phi_q_, phi_k_;      // (B, H, N, F)
  memory::Buffer<float> workspace_;
};

}  // namespace

std::unique_ptr<Forward> make_cuda_forward(const Shape& shape, const Device& device) {
  return std::make_unique<CudaForward>(shape, device);
}

}  // namespace aiopt::linear_attention
