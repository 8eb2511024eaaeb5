// The CUDA runs of flash_attention: naive (cuBLAS + masked softmax, scores in the run's dtype),
// flash (our kernel: CUDA cores for f32, tensor cores for f16/bf16) and memory_efficient
// (chunked naive).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/cuda_check.hpp"
#include "core/half.hpp"
#include "kernels/cuda/attention.hpp"
#include "techniques/flash_attention/flash_attention.hpp"

namespace aiopt::flash_attention {

namespace {

namespace gpu = kernels::cuda;

struct StreamDestroy {
  void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
};

std::size_t element_bytes(DType dtype) { return dtype == DType::f32 ? 4 : 2; }

// q, k, v on one device, stored in the case's dtype.
struct DeviceInputs {
  memory::Buffer<std::byte> q, k, v;
};

class CudaRun : public Run {
 public:
  CudaRun(const Shape& shape, Method method, const Device& device)
      : shape_(shape), method_(method), device_(device), host_(make_inputs(shape)) {
    CUDA_CHECK(cudaSetDevice(device.index));
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    stream_.reset(stream);
    in_ = upload(shape_, host_);
    out_ = memory::Buffer<std::byte>(device, shape.q_elements() * element_bytes(shape.dtype));
    scores_ = memory::Buffer<std::byte>(device, workspace_elements(shape) * element_bytes(shape.dtype));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  void step() override { compute(shape_, in_, out_.data(), scores_.data()); }

  void* stream() override { return stream_.get(); }

  Work work() const override { return {.bytes = std::nullopt, .flops = shape_.attention.flops()}; }

  std::vector<Metric> finish() override {
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    const std::size_t n = shape_.q_elements();
    memory::Buffer<float> got(Device::cpu(), n);
    if (shape_.dtype == DType::f32) {
      CUDA_CHECK(cudaMemcpy(got.data(), out_.data(), out_.bytes(), cudaMemcpyDeviceToHost));
    } else {
      memory::Buffer<std::uint16_t> bits(Device::cpu(), n);
      CUDA_CHECK(cudaMemcpy(bits.data(), out_.data(), out_.bytes(), cudaMemcpyDeviceToHost));
      convert(bits.data(), got.data(), n, shape_.dtype);
    }
    const Errors e = check_output(shape_, host_, got.data(), to_string(method_));

    // The workspace of one call at N/4, N/2 and N, inputs and output allocated outside the scope.
    std::vector<std::size_t> lengths = fit_lengths(shape_.attention.q_len), bytes;
    for (std::size_t len : lengths) {
      const Shape s = shape_.at_length(len);
      const DeviceInputs in = upload(s, make_inputs(s));
      memory::Buffer<std::byte> out(device_, s.q_elements() * element_bytes(s.dtype));
      CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
      memory::Scope scope(device_);
      {
        memory::Buffer<std::byte> scores(device_, workspace_elements(s) * element_bytes(s.dtype));
        compute(s, in, out.data(), scores.data());
        CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
      }
      bytes.push_back(scope.peak_bytes());
    }
    return metrics(e, bytes.back(), fitted_exponent(lengths, bytes));
  }

 private:
  std::size_t workspace_elements(const Shape& s) const {
    switch (method_) {
      case Method::naive: return gpu::naive_workspace_elements(s.attention);
      case Method::memory_efficient: return gpu::memory_efficient_workspace_elements(s.attention, s.chunk);
      case Method::flash: return 0;
    }
    return 0;
  }

  // On stream_, which a cudaStreamNonBlocking stream needs (see tensor_fusion_cuda.cu); the
  // caller synchronizes before the host copies go.
  DeviceInputs upload(const Shape& s, const Inputs& host) {
    const std::size_t n = s.q_elements(), bytes = n * element_bytes(s.dtype);
    DeviceInputs d{memory::Buffer<std::byte>(device_, bytes), memory::Buffer<std::byte>(device_, bytes),
                   memory::Buffer<std::byte>(device_, bytes)};
    const memory::Buffer<float>* src[3] = {&host.q, &host.k, &host.v};
    memory::Buffer<std::byte>* dst[3] = {&d.q, &d.k, &d.v};
    memory::Buffer<std::uint16_t> bits(Device::cpu(), s.dtype == DType::f32 ? 0 : n);
    for (int i = 0; i < 3; ++i) {
      const void* from = src[i]->data();
      if (s.dtype != DType::f32) {
        convert(src[i]->data(), bits.data(), n, s.dtype);
        from = bits.data();
      }
      CUDA_CHECK(cudaMemcpyAsync(dst[i]->data(), from, bytes, cudaMemcpyHostToDevice, stream_.get()));
      // `bits` is reused for the next tensor: this copy must have read it.
      CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    }
    return d;
  }

  void compute(const Shape& s, const DeviceInputs& in, void* out, void* scores) const {
    switch (method_) {
      case Method::naive:
        gpu::attention_naive(in.q.data(), in.k.data(), in.v.data(), out, scores, s.dtype, s.attention, stream_.get());
        break;
      case Method::flash:
        gpu::attention_flash(in.q.data(), in.k.data(), in.v.data(), out, s.dtype, s.attention, stream_.get());
        break;
      case Method::memory_efficient:
        gpu::attention_memory_efficient(in.q.data(), in.k.data(), in.v.data(), out, scores, s.dtype, s.attention,
                                        s.chunk, stream_.get());
        break;
    }
  }

  Shape shape_;
  Method method_;
  Device device_;
  Inputs host_;  // the fp32 values of the stored inputs, for the reference
  std::unique_ptr<CUstream_st, StreamDestroy> stream_;
  DeviceInputs in_;                   // (B, H, N, d) each, in dtype
  memory::Buffer<std::byte> out_;     // (B, H, N, d)
  memory::Buffer<std::byte> scores_;  // naive: (B, H, N, N); memory_efficient: (B, H, chunk, N)
};

}  // namespace

std::unique_ptr<Run> prepare_cuda(const Shape& shape, Method method, const Device& device) {
  return std::make_unique<CudaRun>(shape, method, device);
}

}  // namespace aiopt::flash_attention
