#include "core/tensor.hpp"

#include <cstring>
#include <utility>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"

#ifdef AIOPT_HAVE_CUDA
#include "core/cuda_check.hpp"
#endif

namespace aiopt {

namespace {

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

// Copies `bytes` between any two of host memory and CUDA device memory, after the work queued
// on `stream` (a cudaStream_t; nullptr: the legacy default stream), and returns when the copy is
// done. cudaMemcpy orders itself only against the legacy stream, which a cudaStreamNonBlocking
// stream does not wait for, so a given stream gets its own copy and synchronize.
void copy_bytes(void* dst, const Device& to, const void* src, const Device& from, std::size_t bytes, void* stream) {
  if (bytes == 0) return;
  if (to.is_cpu() && from.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef AIOPT_HAVE_CUDA
  // Unified addressing: the runtime tells host from device pointers, and which GPU each is on.
  if (!stream) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
    return;
  }
  const auto s = static_cast<cudaStream_t>(stream);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
#else
  (void)stream;
  throw DeviceUnavailable("aiopt was built without CUDA");
#endif
}

}  // namespace

Tensor::Tensor(Tensor&& o) noexcept
    : shape_(std::exchange(o.shape_, {})), strides_(std::exchange(o.strides_, {})),
      numel_(std::exchange(o.numel_, 0)), dtype_(std::exchange(o.dtype_, DType::f32)),
      storage_(std::move(o.storage_)) {}

Tensor& Tensor::operator=(Tensor&& o) noexcept {
  Tensor taken(std::move(o));
  std::swap(shape_, taken.shape_);
  std::swap(strides_, taken.strides_);
  std::swap(numel_, taken.numel_);
  std::swap(dtype_, taken.dtype_);
  std::swap(storage_, taken.storage_);
  return *this;
}

Tensor Tensor::empty(std::vector<std::int64_t> shape, DType dtype, const Device& device) {
  std::int64_t numel = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0)
      throw InputError("tensor shape " + shape_text(shape) + ": dimension " + std::to_string(i) + " is " +
                       std::to_string(shape[i]) + "; sizes are 0 or more");
    numel *= shape[i];
  }
  Tensor t;
  t.strides_.assign(shape.size(), 1);
  for (std::size_t i = shape.size(); i-- > 1;) t.strides_[i - 1] = t.strides_[i] * shape[i];
  t.shape_ = std::move(shape);
  t.numel_ = numel;
  t.dtype_ = dtype;
  t.storage_ = memory::Buffer<std::byte>(device, storage_bytes(dtype, static_cast<std::size_t>(numel)));
  return t;
}

Tensor Tensor::zeros(std::vector<std::int64_t> shape, DType dtype, const Device& device) {
  Tensor t = empty(std::move(shape), dtype, device);
  t.set_zero();
  return t;
}

void Tensor::set_zero(void* stream) {
  if (bytes() == 0) return;
  if (device().is_cpu()) {
    std::memset(storage_.data(), 0, bytes());
    return;
  }
#ifdef AIOPT_HAVE_CUDA
  if (stream)
    CUDA_CHECK(cudaMemsetAsync(storage_.data(), 0, bytes(), static_cast<cudaStream_t>(stream)));
  else
    CUDA_CHECK(cudaMemset(storage_.data(), 0, bytes()));
#else
  (void)stream;
  throw DeviceUnavailable("aiopt was built without CUDA");
#endif
}

void Tensor::copy_from(const Tensor& other) {
  if (other.dtype_ != dtype_ || other.shape_ != shape_)
    throw std::invalid_argument("Tensor::copy_from: a " + to_string(other.dtype_) + " tensor " +
                                other.shape_string() + " into a " + to_string(dtype_) + " tensor " + shape_string());
  copy_bytes(storage_.data(), device(), other.storage_.data(), other.device(), bytes(), nullptr);
}

Tensor Tensor::from_host(std::span<const std::byte> bytes, std::vector<std::int64_t> shape, DType dtype,
                         const Device& device, void* stream) {
  Tensor t = empty(std::move(shape), dtype, device);
  if (bytes.size() != t.bytes())
    throw std::invalid_argument("Tensor::from_host: " + std::to_string(bytes.size()) + " bytes given for a " +
                                to_string(dtype) + " tensor " + t.shape_string() + " of " +
                                std::to_string(t.bytes()) + " bytes");
  copy_bytes(t.storage_.data(), device, bytes.data(), Device::cpu(), bytes.size(), stream);
  return t;
}

Tensor Tensor::to(const Device& device, void* stream) const {
  Tensor t = empty(shape_, dtype_, device);
  copy_bytes(t.storage_.data(), device, storage_.data(), this->device(), bytes(), stream);
  return t;
}

void Tensor::fill_uniform(std::uint64_t seed, float lo, float hi) {
  if (!device().is_cpu())
    throw std::logic_error("Tensor::fill_uniform: tensor " + shape_string() + " is on " + to_string(device()) +
                           "; fill on the host, then copy with to()");
  const auto n = static_cast<std::size_t>(numel_);
  auto value = [&](std::size_t i) { return lo + (hi - lo) * rng::uniform(seed, i); };
  if (dtype_ == DType::f32) {
    float* p = data<float>();
    for (std::size_t i = 0; i < n; ++i) p[i] = value(i);
  } else if (dtype_ == DType::f16) {
    std::uint16_t* p = data<std::uint16_t>();
    for (std::size_t i = 0; i < n; ++i) p[i] = float_to_f16(value(i));
  } else if (dtype_ == DType::bf16) {
    std::uint16_t* p = data<std::uint16_t>();
    for (std::size_t i = 0; i < n; ++i) p[i] = float_to_bf16(value(i));
  } else {
    throw std::logic_error("Tensor::fill_uniform: dtype " + to_string(dtype_) + " is not f32, f16 or bf16");
  }
}

std::string Tensor::shape_string() const { return shape_text(shape_); }

void Tensor::check_element_type(ElementType requested) const {
  ElementType stored = ElementType::f32;
  switch (dtype_) {
    case DType::f32: stored = ElementType::f32; break;
    case DType::f16:
    case DType::bf16: stored = ElementType::u16; break;
    case DType::i8: stored = ElementType::s8; break;
    case DType::i4: stored = ElementType::u8; break;
  }
  if (requested != stored) {
    const char* names[] = {"float", "std::uint16_t", "std::int8_t", "std::uint8_t"};
    throw std::logic_error("Tensor::data: tensor " + shape_string() + " of " + to_string(dtype_) +
                           " holds " + names[static_cast<int>(stored)] + " elements, not " +
                           names[static_cast<int>(requested)]);
  }
}

}  // namespace aiopt
