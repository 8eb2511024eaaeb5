// The CUDA runs of tensor_fusion: unfused (one kernel per op), fused (one kernel per chain) and
// cuda_graph (the unfused kernels captured once into a graph, launched with one call per step).
#include <cuda_runtime.h>

#include <type_traits>

#include "core/cuda_check.hpp"
#include "core/error.hpp"
#include "kernels/cpu/bf16.hpp"
#include "kernels/cuda/activation.hpp"
#include "kernels/cuda/elementwise.hpp"
#include "kernels/cuda/fused_chains.hpp"
#include "kernels/cuda/layernorm.hpp"
#include "kernels/cuda/softmax.hpp"
#include "techniques/tensor_fusion/tensor_fusion.hpp"

namespace aiopt::tensor_fusion {

namespace {

namespace gpu = kernels::cuda;

// Owners of the stream and graph handles, so a constructor that throws half way leaks nothing.
struct StreamDestroy {
  void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
};
struct GraphDestroy {
  void operator()(cudaGraph_t g) const { cudaGraphDestroy(g); }
};
struct GraphExecDestroy {
  void operator()(cudaGraphExec_t g) const { cudaGraphExecDestroy(g); }
};

// T: how activations are stored, float (f32) or std::uint16_t (bf16 bits).
template <class T>
class CudaRun : public Run {
 public:
  CudaRun(const Shape& shape, Form form, const Device& device) : shape_(shape), form_(form), device_(device) {
    CUDA_CHECK(cudaSetDevice(device.index));
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    stream_.reset(stream);
    const Inputs<T> host = make_inputs<T>(shape);
    x_ = upload(host.x);
    bias_ = upload(host.bias);
    residual_ = upload(host.residual);
    gamma_ = upload(host.gamma);
    beta_ = upload(host.beta);
    y_ = memory::Buffer<T>(device, shape.elements());
    {
      // The unfused chain's intermediates: their measured peak is the memory fusion saves.
      memory::Scope scope(device);
      if (form_ != Form::fused) {
        for (std::size_t i = 0; i + 1 < unfused_ops(shape.chain); ++i)
          intermediates_.emplace_back(device, shape.elements());
      }
      intermediate_bytes_ = scope.peak_bytes();
    }
    // The uploads run on stream_ (see upload()); they must land before any kernel reads them.
    CUDA_CHECK(cudaStreamSynchronize(stream));
    if (form_ == Form::cuda_graph) {
      // Capture the unfused launches once; each step replays them with one cudaGraphLaunch.
      cudaGraph_t graph = nullptr;
      CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      try {
        enqueue_unfused();
      } catch (...) {
        // End the capture before the stream goes: while it is open this thread may not call
        // cudaMalloc and the like, which would fail every later case of the sweep.
        if (cudaStreamEndCapture(stream, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
        cudaGetLastError();
        throw;
      }
      CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      graph_.reset(graph);
      cudaGraphExec_t exec = nullptr;
      CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      graph_exec_.reset(exec);
    }
  }

  void step() override {
    switch (form_) {
      case Form::unfused: enqueue_unfused(); break;
      case Form::fused: enqueue_fused(); break;
      case Form::cuda_graph: CUDA_CHECK(cudaGraphLaunch(graph_exec_.get(), stream_.get())); break;
    }
  }

  void* stream() override { return stream_.get(); }

  Work work() const override {
    const bool fused = form_ == Form::fused;
    return {.bytes = bytes_moved(shape_, fused),
            .flops = std::nullopt,
            .working_set_bytes = working_set_bytes(shape_, fused)};
  }

  std::vector<Metric> finish() override {
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
    memory::Buffer<T> y(Device::cpu(), shape_.elements());
    CUDA_CHECK(cudaMemcpy(y.data(), y_.data(), y_.bytes(), cudaMemcpyDeviceToHost));
    const std::string& variant = to_string(form_);
    double error = 0.0;
    if constexpr (std::is_same_v<T, float>) {
      error = check_output(shape_, y.data(), variant);
    } else {
      memory::Buffer<float> wide(Device::cpu(), shape_.elements());
      for (std::size_t i = 0; i < wide.size(); ++i) wide[i] = kernels::cpu::bf16_to_float(y[i]);
      error = check_output(shape_, wide.data(), variant);
    }
    const double kernels = form_ == Form::fused ? 1.0 : static_cast<double>(unfused_ops(shape_.chain));
    return {
        // Counted by formula, not measured: reported, never weighed as a gain.
        {"bytes_moved_analytic", bytes_moved(shape_, form_ == Form::fused), "B", Better::lower, false},
        // Kernels that run per step, and the host launch calls that start them (a graph: one).
        {"kernel_launches", kernels, "", Better::lower},
        {"host_launch_calls", form_ == Form::cuda_graph ? 1.0 : kernels, "", Better::lower},
        {"intermediate_bytes", static_cast<double>(intermediate_bytes_), "B", Better::lower},
        {"max_abs_error", error, "", Better::lower},
    };
  }

 private:
  // On stream_, not with cudaMemcpy: a pageable cudaMemcpy runs on the legacy default stream and
  // may return before its DMA lands, and a cudaStreamNonBlocking stream does not wait for that
  // stream, so the first kernels could read a partial upload. The constructor synchronizes
  // stream_ while the host copies are still alive.
  template <class E>
  memory::Buffer<E> upload(const memory::Buffer<E>& host) {
    memory::Buffer<E> d(device_, host.size());
    if (host.size())
      CUDA_CHECK(cudaMemcpyAsync(d.data(), host.data(), host.bytes(), cudaMemcpyHostToDevice, stream_.get()));
    return d;
  }

  void enqueue_unfused() {
    const std::size_t rows = shape_.rows, hidden = shape_.hidden, n = shape_.elements();
    T* y = y_.data();
    switch (shape_.chain) {
      case Chain::bias_gelu: {
        T* t = intermediates_[0].data();
        gpu::bias_add(x_.data(), bias_.data(), t, rows, hidden, stream_.get());
        gpu::gelu_tanh(t, y, n, stream_.get());
        break;
      }
      case Chain::layernorm: {
        T* biased = intermediates_[0].data();
        T* dropped = intermediates_[1].data();
        T* summed = intermediates_[2].data();
        gpu::bias_add(x_.data(), bias_.data(), biased, rows, hidden, stream_.get());
        gpu::dropout(biased, dropped, n, kernels::cpu::Dropout(shape_.dropout, shape_.dropout_seed), stream_.get());
        gpu::residual_add(residual_.data(), dropped, summed, n, stream_.get());
        gpu::layernorm(summed, gamma_.data(), beta_.data(), y, rows, hidden, layernorm_eps, stream_.get());
        break;
      }
      case Chain::softmax: {
        T* scaled = intermediates_[0].data();
        T* masked = intermediates_[1].data();
        gpu::scale(x_.data(), scaled, n, shape_.softmax_scale(), stream_.get());
        gpu::causal_mask(scaled, masked, rows, hidden, stream_.get());
        gpu::softmax(masked, y, rows, hidden, stream_.get());
        break;
      }
    }
  }

  void enqueue_fused() {
    const std::size_t rows = shape_.rows, hidden = shape_.hidden;
    switch (shape_.chain) {
      case Chain::bias_gelu:
        gpu::bias_gelu_fused(x_.data(), bias_.data(), y_.data(), rows, hidden, stream_.get());
        break;
      case Chain::layernorm:
        gpu::bias_dropout_residual_layernorm_fused(x_.data(), bias_.data(), residual_.data(), gamma_.data(),
                                                   beta_.data(), y_.data(), rows, hidden,
                                                   kernels::cpu::Dropout(shape_.dropout, shape_.dropout_seed),
                                                   layernorm_eps, stream_.get());
        break;
      case Chain::softmax:
        gpu::scale_mask_softmax_fused(x_.data(), y_.data(), rows, hidden, shape_.softmax_scale(), stream_.get());
        break;
    }
  }

  Shape shape_;
  Form form_;
  Device device_;
  std::unique_ptr<CUstream_st, StreamDestroy> stream_;
  std::unique_ptr<CUgraph_st, GraphDestroy> graph_;
  std::unique_ptr<CUgraphExec_st, GraphExecDestroy> graph_exec_;
  memory::Buffer<T> x_, residual_;                 // device copies of Inputs: (rows, hidden)
  memory::Buffer<float> bias_, gamma_, beta_;      // (hidden)
  memory::Buffer<T> y_;                            // (rows, hidden)
  std::vector<memory::Buffer<T>> intermediates_;   // unfused and graph: (rows, hidden) each
  std::size_t intermediate_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Run> prepare_cuda(const Shape& shape, Form form, const Device& device) {
  if (shape.dtype == Dtype::bf16) return std::make_unique<CudaRun<std::uint16_t>>(shape, form, device);
  return std::make_unique<CudaRun<float>>(shape, form, device);
}

}  // namespace aiopt::tensor_fusion
