#pragma once
// Element types of tensors: how each element is stored. Arithmetic on f16 and bf16 is done in
// f32 (core/half.hpp converts); i8 and i4 hold quantized values, i4 packed two to a byte.
#include <cstddef>
#include <string>
#include <string_view>

namespace aiopt {

enum class DType { f32, f16, bf16, i8, i4 };

// "f32", "f16", "bf16", "i8", "i4": the names in configs, messages and reports.
std::string to_string(DType dtype);

// The DType named `name`; throws InputError naming the value and the allowed names.
DType parse_dtype(std::string_view name);

// Bits per element: 32, 16, 16, 8, 4.
int bits(DType dtype);

// Bytes that hold `count` elements: i4 packs two per byte, so an odd count rounds up.
std::size_t storage_bytes(DType dtype, std::size_t count);

}  // namespace aiopt
