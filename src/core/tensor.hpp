#pragma once
// A tensor: a contiguous, row-major block of elements of one dtype on one device, owned through
// the tracked allocator (core/memory.hpp), so every tensor counts in the report's peak_bytes.
// Strides are in elements: a (B, T, C) tensor has strides (T·C, C, 1). i4 elements are packed
// two per byte, element 2k in the low nibble of byte k, and their strides count elements too.
// Move-only: a copy is explicit (`to`). A default-constructed or moved-from tensor holds
// nothing: shape (), numel 0, bytes 0, data nullptr.
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "core/memory.hpp"

namespace aiopt {

class Tensor {
 public:
  Tensor() = default;
  Tensor(Tensor&& o) noexcept;
  Tensor& operator=(Tensor&& o) noexcept;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  // Uninitialized storage for `shape` on `device`. Throws InputError on a negative dimension,
  // DeviceUnavailable when the device is absent.
  static Tensor empty(std::vector<std::int64_t> shape, DType dtype, const Device& device);
  // A tensor on `device` holding a copy of `bytes`, host memory laid out as this tensor stores
  // it; throws std::invalid_argument when bytes.size() is not storage_bytes(dtype, numel).
  // `stream` as for to().
  static Tensor from_host(std::span<const std::byte> bytes, std::vector<std::int64_t> shape, DType dtype,
                          const Device& device, void* stream = nullptr);

  // Zero-filled storage for `shape` on `device`.
  static Tensor zeros(std::vector<std::int64_t> shape, DType dtype, const Device& device);

  // A copy of this tensor on `device` (cudaMemcpy to, from or between GPUs), made after the work
  // queued on `stream` (a cudaStream_t; nullptr: the legacy default stream), which a
  // cudaStreamNonBlocking stream's kernels must name; it is complete when this returns.
  Tensor to(const Device& device, void* stream = nullptr) const;
  // Every byte zero (memset / cudaMemset), on `stream` as for to() but without waiting for it.
  void set_zero(void* stream = nullptr);
  // Copies `other`'s elements into this tensor, across devices if need be; throws
  // std::invalid_argument when dtype or shape differ.
  void copy_from(const Tensor& other);

  // Elements uniform in [lo, hi) from rng::uniform(seed, i) for element i, rounded to nearest
  // even for f16 and bf16. Host tensors of f32, f16 or bf16 only, else std::logic_error.
  void fill_uniform(std::uint64_t seed, float lo, float hi);

  const std::vector<std::int64_t>& shape() const { return shape_; }
  const std::vector<std::int64_t>& strides() const { return strides_; }  // in elements
  DType dtype() const { return dtype_; }
  const Device& device() const { return storage_.device(); }
  std::int64_t numel() const { return numel_; }
  std::size_t bytes() const { return storage_.bytes(); }
  std::string shape_string() const;  // "(B, T, C)" with the sizes, e.g. "(4, 64, 768)"

  // The elements as T, which must match the dtype: float for f32, std::uint16_t (bits) for f16
  // and bf16, std::int8_t for i8, std::uint8_t (packed pairs) for i4; else std::logic_error.
  // A device pointer for a CUDA tensor.
  template <class T>
  T* data() {
    check_element_type(element_type_of<T>());
    return reinterpret_cast<T*>(storage_.data());
  }
  template <class T>
  const T* data() const {
    check_element_type(element_type_of<T>());
    return reinterpret_cast<const T*>(storage_.data());
  }

 private:
  enum class ElementType { f32, u16, s8, u8 };
  template <class T>
  static constexpr ElementType element_type_of() {
    if constexpr (std::is_same_v<T, float>) {
      return ElementType::f32;
    } else if constexpr (std::is_same_v<T, std::uint16_t>) {
      return ElementType::u16;
    } else if constexpr (std::is_same_v<T, std::int8_t>) {
      return ElementType::s8;
    } else {
      static_assert(std::is_same_v<T, std::uint8_t>, "tensor elements are float, uint16_t, int8_t or uint8_t");
      return ElementType::u8;
    }
  }
  void check_element_type(ElementType requested) const;

  std::vector<std::int64_t> shape_;
  std::vector<std::int64_t> strides_;
  std::int64_t numel_ = 0;
  DType dtype_ = DType::f32;
  memory::Buffer<std::byte> storage_;
};

}  // namespace aiopt
