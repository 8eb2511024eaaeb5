// The CUDA runs of quantization: fp32 (cuBLAS sgemm), fp16 and bf16 (cuBLAS on tensor cores with
// both operands and y in the half dtype, fp32 sums), int8 with dynamic or static activation
// scales (activations quantized on the device, cuBLASLt IMMA, dequantize), int4 weight-only (the
// int4 GEMV) and fp8 e4m3 (activations quantized on the device, cuBLASLt). Every format's weights
// are made on the host (converted or quantized, kernels/cpu/quantize.hpp giving the device
// quantizers' bits) and only the stored bytes and scales are uploaded: the device never holds
// fp32 weights for another format, so its peak reflects the format. finish() copies y and the
// stored operands back and checks them as the CPU run does (check_product).
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "core/cuda_check.hpp"
#include "core/dtype.hpp"
#include "core/half.hpp"
#include "core/memory.hpp"
#include "kernels/cpu/quantize.hpp"
#include "kernels/cpu/weights_int4.hpp"
#include "kernels/cuda/gemm.hpp"
#include "kernels/cuda/gemm_lt.hpp"
#include "kernels/cuda/weights_int4.hpp"
#include "kernels/cuda/quantize.hpp"
#include "techniques/quantization/quantization.hpp"

namespace aiopt::quantization {

namespace {

namespace cpu = kernels::cpu;
namespace gpu = kernels::cuda;

struct StreamDestroy {
  void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
};

// The real value of e4m3 bits, through cuda_fp8.h's host conversion (exact: every e4m3 is an f16).
double e4m3_value(std::uint8_t bits) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(bits), __NV_E4M3);
  return f16_to_float(h.x);
}

class CudaRun : public Run {
 public:
  CudaRun(const Shape& s, Format format, const Device& device)
      : s_(s), format_(format), device_(device), x_host_(make_activations(s, s.m, 2)), w_host_(make_weights(s)) {
    CUDA_CHECK(cudaSetDevice(device.index));
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    stream_.reset(stream);
    const std::size_t mk = s.m * s.k, nk = s.n * s.k;
    // Host staging that must outlive the asynchronous uploads: freed after the synchronize below.
    std::vector<std::uint16_t> x_half, w_half;
    std::vector<std::int8_t> w8_host;
    std::vector<std::uint8_t> w_fp8_host;
    std::vector<float> w_scale_host;
    cpu::Int4Matrix w4_host;
    if (half()) {
      // The half GEMM's activations are half too: a half model keeps them so.
      x_half.resize(mk);
      convert(x_host_.data(), x_half.data(), mk, dtype());
      x16_ = upload(x_half.data(), mk);
      y16_ = memory::Buffer<std::uint16_t>(device, s.m * s.n);
    } else {
      x_ = upload(x_host_.data(), mk);
      y_ = memory::Buffer<float>(device, s.m * s.n);
    }
    // The stored weights: the bytes this format keeps, measured as what stays allocated.
    const std::size_t before = memory::usage(device).current;
    switch (format_) {
      case Format::fp32:
        w32_ = upload(w_host_.data(), nk);
        break;
      case Format::fp16:
      case Format::bf16:
        w_half.resize(nk);
        convert(w_host_.data(), w_half.data(), nk, dtype());
        w16_ = upload(w_half.data(), nk);
        break;
      case Format::int8_dynamic:
      case Format::int8_static:
        // Per output channel, as the CPU's int8 weights: s_j = max|W_j| / 127.
        w8_host.resize(nk);
        w_scale_host.resize(s.n);
        cpu::quantize_rows_int8(w_host_.data(), w8_host.data(), w_scale_host.data(), s.n, s.k);
        w8_ = upload(w8_host.data(), nk);
        w_scale_ = upload(w_scale_host.data(), s.n);
        break;
      case Format::int4_weight_only:
        // Symmetric groups: the CPU quantizer's layout is the GEMV's (cuda/weights_int4.hpp).
        w4_host = cpu::quantize_int4(w_host_.data(), s.n, s.k, s.group, cpu::Int4Mode::symmetric);
        w4_packed_ = upload(w4_host.packed.data(), w4_host.packed.size());
        w4_scales_ = upload(w4_host.scales.data(), w4_host.scales.size());
        break;
      case Format::fp8:
        // One scale for the tensor, max|W| / 448.
        w_fp8_host.resize(nk);
        w_scale_host.assign(1, cpu::quantize_e4m3(w_host_.data(), w_fp8_host.data(), nk));
        w_fp8_ = upload(w_fp8_host.data(), nk);
        w_scale_ = upload(w_scale_host.data(), 1);
        break;
    }
    weight_bytes_ = memory::usage(device).current - before;
    switch (format_) {
      case Format::int8_dynamic:
      case Format::int8_static:
        xq8_ = memory::Buffer<std::int8_t>(device, mk);
        acc_ = memory::Buffer<std::int32_t>(device, s.m * s.n);
        x_scale_ = memory::Buffer<float>(device, format_ == Format::int8_dynamic ? s.m : 1);
        if (format_ == Format::int8_static) {
          // The scale that maps the calibration batch's largest |x| to 127, as on the CPU.
          const std::vector<float> calibration = make_activations(s, s.calibration_rows, 3);
          float max_abs = 0.0f;
          for (float v : calibration) max_abs = std::max(max_abs, std::fabs(v));
          static_scale_ = cpu::int8_scale(max_abs);
          CUDA_CHECK(cudaMemcpyAsync(x_scale_.data(), &static_scale_, sizeof(float), cudaMemcpyHostToDevice, stream));
        }
        break;
      case Format::fp8:
        xq_fp8_ = memory::Buffer<std::uint8_t>(device, mk);
        x_scale_ = memory::Buffer<float>(device, 1);
        break;
      default:
        break;
    }
    // The uploads run on stream_; they must land before the staging above goes and before any
    // step reads them.
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }

  void step() override {
    cudaStream_t stream = stream_.get();
    const std::size_t m = s_.m, n = s_.n, k = s_.k;
    switch (format_) {
      case Format::fp32:
        gpu::gemm(false, true, m, n, k, 1.0f, x_.data(), k, w32_.data(), k, 0.0f, y_.data(), n, DType::f32, stream);
        break;
      case Format::fp16:
      case Format::bf16:
        gpu::gemm(false, true, m, n, k, 1.0f, x16_.data(), k, w16_.data(), k, 0.0f, y16_.data(), n, dtype(), stream);
        break;
      case Format::int8_dynamic:
        gpu::quantize_int8_rows(x_.data(), xq8_.data(), x_scale_.data(), m, k, stream);
        gpu::gemm_int8(xq8_.data(), w8_.data(), acc_.data(), m, n, k, stream);
        gpu::dequantize_int32(acc_.data(), x_scale_.data(), true, w_scale_.data(), nullptr, y_.data(), m, n, stream);
        break;
      case Format::int8_static:
        gpu::quantize_int8_static(x_.data(), x_scale_.data(), xq8_.data(), m * k, stream);
        gpu::gemm_int8(xq8_.data(), w8_.data(), acc_.data(), m, n, k, stream);
        gpu::dequantize_int32(acc_.data(), x_scale_.data(), false, w_scale_.data(), nullptr, y_.data(), m, n, stream);
        break;
      case Format::int4_weight_only:
        gpu::gemv_int4(x_.data(), w4_packed_.data(), w4_scales_.data(), y_.data(), m, n, k, s_.group, stream);
        break;
      case Format::fp8:
        // One activation scale per step, max|x| / 448, kept on the device for cuBLASLt.
        gpu::quantize_fp8_e4m3(x_.data(), xq_fp8_.data(), x_scale_.data(), m * k, stream);
        gpu::gemm_fp8(xq_fp8_.data(), x_scale_.data(), w_fp8_.data(), w_scale_.data(), y_.data(), DType::f32, m, n, k,
                      stream);
        break;
    }
  }

  void* stream() override { return stream_.get(); }

  // As the CPU run declares it: the weights once, the activations and the output in fp32.
  Work work() const override {
    const double bytes = static_cast<double>(weight_bytes_) + 4.0 * static_cast<double>(s_.m * (s_.k + s_.n));
    // Every buffer a step touches: the weights, x and y, and the quantized activations' scratch.
    const double working_set =
        static_cast<double>(weight_bytes_ + x_.bytes() + y_.bytes() + x16_.bytes() + y16_.bytes() + xq8_.bytes() +
                            xq_fp8_.bytes() + x_scale_.bytes() + acc_.bytes());
    return {.bytes = bytes, .flops = s_.flops(), .working_set_bytes = working_set};
  }

  std::vector<Metric> finish() override;

 private:
  bool half() const { return format_ == Format::fp16 || format_ == Format::bf16; }
  DType dtype() const { return format_ == Format::fp16 ? DType::f16 : DType::bf16; }
  double widen(std::uint16_t h) const { return format_ == Format::fp16 ? f16_to_float(h) : bf16_to_float(h); }

  template <class T>
  memory::Buffer<T> upload(const T* host, std::size_t count) {
    memory::Buffer<T> d(device_, count);
    if (count) CUDA_CHECK(cudaMemcpyAsync(d.data(), host, d.bytes(), cudaMemcpyHostToDevice, stream_.get()));
    return d;
  }

  // After the stream is synchronized.
  template <class T>
  static std::vector<T> download(const memory::Buffer<T>& d) {
    std::vector<T> host(d.size());
    if (d.size()) CUDA_CHECK(cudaMemcpy(host.data(), d.data(), d.bytes(), cudaMemcpyDeviceToHost));
    return host;
  }

  Shape s_;
  Format format_;
  Device device_;
  std::vector<float> x_host_;  // (m, k) the fp32 activations, for the reference
  std::vector<float> w_host_;  // (n, k) the fp32 weights, for the reference (untracked: not the format's)
  std::unique_ptr<CUstream_st, StreamDestroy> stream_;
  memory::Buffer<float> x_, y_;                 // (m, k), (m, n): every format but fp16/bf16
  memory::Buffer<std::uint16_t> x16_, y16_;     // (m, k), (m, n): fp16/bf16
  memory::Buffer<float> w32_;                   // (n, k)
  memory::Buffer<std::uint16_t> w16_;           // (n, k)
  memory::Buffer<std::int8_t> w8_;              // (n, k)
  memory::Buffer<std::uint8_t> w_fp8_;          // (n, k) e4m3 bits
  memory::Buffer<float> w_scale_;               // int8: (n) per output channel; fp8: (1)
  memory::Buffer<std::uint8_t> w4_packed_;      // (n, k/2)
  memory::Buffer<std::uint16_t> w4_scales_;     // (n, k/group) f16 bits
  memory::Buffer<std::int8_t> xq8_;             // (m, k)
  memory::Buffer<std::uint8_t> xq_fp8_;         // (m, k) e4m3 bits
  memory::Buffer<float> x_scale_;               // int8_dynamic: (m); int8_static, fp8: (1)
  memory::Buffer<std::int32_t> acc_;            // (m, n) the int8 GEMM's sums
  std::size_t weight_bytes_ = 0;
  float static_scale_ = 0.0f;
};

// The host copies of y and of the operands as the kernels stored or consumed them, then the
// CPU run's check (check_product) with the CUDA kernels' rounding.
std::vector<Metric> CudaRun::finish() {
  CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  const std::size_t k = s_.k;
  std::vector<float> y;
  if (half()) {
    const auto y16 = download(y16_);
    y.resize(y16.size());
    for (std::size_t i = 0; i < y16.size(); ++i) y[i] = static_cast<float>(widen(y16[i]));
  } else {
    y = download(y_);
  }
  RowReader activations, weights;
  std::vector<float> xf, wf, xs, ws;
  std::vector<std::uint16_t> xh, wh;
  std::vector<std::int8_t> xq8, wq8;
  std::vector<std::uint8_t> xq_fp8, wq_fp8;
  cpu::Int4Matrix w4;
  const auto fp32_rows = [k](const std::vector<float>& v) {
    return [v = &v, k](std::size_t i, std::vector<double>& row) {
      for (std::size_t p = 0; p < k; ++p) row[p] = (*v)[i * k + p];
    };
  };
  switch (format_) {
    case Format::fp32:
      xf = download(x_);
      wf = download(w32_);
      activations = fp32_rows(xf);
      weights = fp32_rows(wf);
      break;
    case Format::fp16:
    case Format::bf16: {
      xh = download(x16_);
      wh = download(w16_);
      const auto half_rows = [this, k](const std::vector<std::uint16_t>& v) {
        return [this, v = &v, k](std::size_t i, std::vector<double>& row) {
          for (std::size_t p = 0; p < k; ++p) row[p] = widen((*v)[i * k + p]);
        };
      };
      activations = half_rows(xh);
      weights = half_rows(wh);
      break;
    }
    case Format::int8_dynamic:
    case Format::int8_static: {
      xq8 = download(xq8_);
      wq8 = download(w8_);
      xs = download(x_scale_);
      ws = download(w_scale_);
      const bool per_row = format_ == Format::int8_dynamic;
      activations = [&, per_row, k](std::size_t i, std::vector<double>& row) {
        const double scale = xs[per_row ? i : 0];
        for (std::size_t p = 0; p < k; ++p) row[p] = scale * xq8[i * k + p];
      };
      weights = [&, k](std::size_t j, std::vector<double>& row) {
        for (std::size_t p = 0; p < k; ++p) row[p] = static_cast<double>(ws[j]) * wq8[j * k + p];
      };
      break;
    }
    case Format::int4_weight_only: {
      xf = download(x_);
      activations = fp32_rows(xf);
      // The stored weights copied back into the CPU's layout (the same), dequantized by its code.
      w4.n = s_.n;
      w4.k = k;
      w4.group = s_.group;
      w4.mode = cpu::Int4Mode::symmetric;
      w4.packed = memory::Buffer<std::uint8_t>(Device::cpu(), w4_packed_.size());
      w4.scales = memory::Buffer<std::uint16_t>(Device::cpu(), w4_scales_.size());
      CUDA_CHECK(cudaMemcpy(w4.packed.data(), w4_packed_.data(), w4_packed_.bytes(), cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(w4.scales.data(), w4_scales_.data(), w4_scales_.bytes(), cudaMemcpyDeviceToHost));
      weights = [&w4, k](std::size_t j, std::vector<double>& row) {
        std::vector<float> f(k);
        cpu::dequantize_int4_rows(w4, j, 1, f.data());
        for (std::size_t p = 0; p < k; ++p) row[p] = f[p];
      };
      break;
    }
    case Format::fp8: {
      xq_fp8 = download(xq_fp8_);
      wq_fp8 = download(w_fp8_);
      xs = download(x_scale_);
      ws = download(w_scale_);
      // Real values s·e4m3(q): cuBLASLt multiplies the sums by the same two scales.
      activations = [&, k](std::size_t i, std::vector<double>& row) {
        for (std::size_t p = 0; p < k; ++p) row[p] = static_cast<double>(xs[0]) * e4m3_value(xq_fp8[i * k + p]);
      };
      weights = [&, k](std::size_t j, std::vector<double>& row) {
        for (std::size_t p = 0; p < k; ++p) row[p] = static_cast<double>(ws[0]) * e4m3_value(wq_fp8[j * k + p]);
      };
      break;
    }
  }
  const ProductErrors errors = check_product(s_, rounding(format_, DeviceKind::cuda), y.data(), x_host_.data(),
                                             w_host_.data(), activations, weights);
  std::optional<double> clipped;
  if (format_ == Format::int8_static) {
    // The values the static scale saturated, |x / s| > 127.5, counted as the CPU counts them.
    std::size_t count = 0;
    for (float v : x_host_) count += std::fabs(v / static_scale_) > cpu::int8_max + 0.5f;
    clipped = static_cast<double>(count) / static_cast<double>(x_host_.size());
  }
  return product_metrics(s_, weight_bytes_, errors, clipped);
}

}  // namespace

std::unique_ptr<Run> prepare_cuda(const Shape& s, Format format, const Device& device) {
  return std::make_unique<CudaRun>(s, format, device);
}

}  // namespace aiopt::quantization
