#include "core/dtype.hpp"

#include <vector>

#include "core/error.hpp"
#include "core/spelling.hpp"

namespace aiopt {

namespace {

constexpr DType all_dtypes[] = {DType::f32, DType::f16, DType::bf16, DType::i8, DType::i4};

}  // namespace

std::string to_string(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i8: return "i8";
    case DType::i4: return "i4";
  }
  return "dtype " + std::to_string(static_cast<int>(dtype));
}

DType parse_dtype(std::string_view name) {
  std::vector<std::string> names;
  for (DType d : all_dtypes) {
    if (to_string(d) == name) return d;
    names.push_back(to_string(d));
  }
  throw InputError("dtype " + in_quotes(name) + " is unknown" + did_you_mean(name, names) +
                   "; allowed: " + join_names(names));
}

int bits(DType dtype) {
  switch (dtype) {
    case DType::f32: return 32;
    case DType::f16:
    case DType::bf16: return 16;
    case DType::i8: return 8;
    case DType::i4: return 4;
  }
  return 0;
}

std::size_t storage_bytes(DType dtype, std::size_t count) {
  return (count * static_cast<std::size_t>(bits(dtype)) + 7) / 8;
}

}  // namespace aiopt
