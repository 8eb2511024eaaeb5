#pragma once
// The safetensors file format (huggingface/safetensors): an 8-byte little-endian header length N,
// N bytes of a JSON object
//   {"name": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// and then the data section, every tensor's row-major little-endian bytes at [begin, end)
// relative to the section's start.
//
// Reading validates the whole header before any data is read, and throws InputError naming the
// file (and the tensor) for: a file shorter than 8 bytes, a header length past the end of the
// file, a header that is not a JSON object, a missing or ill-typed field, an unknown or
// unsupported dtype, offsets outside the data section or not matching dtype × shape, tensors that
// overlap or leave a gap, and bytes after the last tensor. Those last two follow the reference
// implementation: the tensors must tile the data section exactly, so a file with trailing bytes
// (truncated or concatenated on the way) is refused rather than half trusted.
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.hpp"
#include "core/tensor.hpp"

namespace aiopt::nn {

class SafetensorsFile {
 public:
  // Maps `path` read-only (copies of the object share the mapping) and validates its header.
  explicit SafetensorsFile(std::string path);

  struct Entry {
    std::string dtype;                // as written: "F32", "F16", "BF16"
    std::vector<std::int64_t> shape;  // () for a scalar
    std::uint64_t begin = 0, end = 0;  // byte offsets in the data section
  };

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  const Entry& entry(const std::string& name) const;  // InputError naming the file when absent

  // Tensor `name` as a host f32 tensor of its shape, converted from the mapping; F16 and BF16 are
  // widened exactly. InputError when absent or of another dtype.
  Tensor read_f32(const std::string& name) const;

  // The whole file as mapped: its size, and its bytes for a content hash.
  std::span<const unsigned char> bytes() const;

 private:
  class Mapping;
  std::string path_;
  std::shared_ptr<const Mapping> mapping_;
  std::uint64_t data_start_ = 0;  // 8 + N
  std::map<std::string, std::string> metadata_;
  std::map<std::string, Entry> entries_;
};

// Writes host f32 `tensors` (in the given order, contiguous) and `metadata` to `path`. The
// header is padded with spaces to a multiple of 8 bytes, so the data section is 8-byte aligned
// as the reference writer leaves it. Throws InputError when the file cannot be written, and
// std::invalid_argument for a tensor that is not host f32 or a name that repeats or is
// "__metadata__".
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace aiopt::nn
