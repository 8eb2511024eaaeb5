#include "nn/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string_view>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/half.hpp"

namespace aiopt::nn {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; reading it in place needs a little-endian host");

namespace {

using nlohmann::json;

constexpr const char* metadata_key = "__metadata__";

// Bytes per element of every dtype the format names; only F32, F16 and BF16 can be read as
// model weights, the others are sized so that a file holding them still validates.
const std::map<std::string, std::uint64_t>& dtype_sizes() {
  static const std::map<std::string, std::uint64_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I16", 2},  {"U16", 2},
      {"F16", 2},  {"BF16", 2}, {"I32", 4}, {"U32", 4},     {"F32", 4},     {"I64", 8},  {"U64", 8},
      {"F64", 8}};
  return sizes;
}

std::string where(const std::string& path) { return "safetensors file '" + path + "'"; }

std::string where(const std::string& path, const std::string& tensor) {
  return where(path) + ", tensor '" + tensor + "'";
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// An array of non-negative integers, else InputError naming the field.
std::vector<std::uint64_t> unsigned_array(const json& value, const std::string& field, const std::string& at) {
  if (!value.is_array()) throw InputError(at + ": '" + field + "' must be an array of non-negative integers, got " + value.dump());
  std::vector<std::uint64_t> out;
  for (const json& v : value) {
    if (!v.is_number_unsigned())
      throw InputError(at + ": '" + field + "' must be an array of non-negative integers, got " + value.dump());
    out.push_back(v.get<std::uint64_t>());
  }
  return out;
}

SafetensorsFile::Entry parse_entry(const json& j, const std::string& at) {
  if (!j.is_object()) throw InputError(at + ": the header entry must be an object, got " + j.dump());
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!j.contains(field)) throw InputError(at + ": the header entry has no '" + std::string(field) + "'");

  SafetensorsFile::Entry e;
  const json& dtype = j.at("dtype");
  if (!dtype.is_string()) throw InputError(at + ": 'dtype' must be a string, got " + dtype.dump());
  e.dtype = dtype.get<std::string>();
  const auto size = dtype_sizes().find(e.dtype);
  if (size == dtype_sizes().end()) throw InputError(at + ": unknown dtype '" + e.dtype + "'");

  std::uint64_t numel = 1;
  for (std::uint64_t d : unsigned_array(j.at("shape"), "shape", at)) {
    // Dimensions fit an int64 and their product the address space, or the file is not real.
    if (d > (std::uint64_t{1} << 48) || (d != 0 && numel > (std::uint64_t{1} << 48) / d))
      throw InputError(at + ": shape " + j.at("shape").dump() + " is too large");
    numel *= d;
    e.shape.push_back(static_cast<std::int64_t>(d));
  }

  const std::vector<std::uint64_t> offsets = unsigned_array(j.at("data_offsets"), "data_offsets", at);
  if (offsets.size() != 2)
    throw InputError(at + ": 'data_offsets' must be [begin, end], got " + j.at("data_offsets").dump());
  e.begin = offsets[0];
  e.end = offsets[1];
  if (e.end < e.begin)
    throw InputError(at + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                     "] end before they begin");
  const std::uint64_t want = numel * size->second;
  if (e.end - e.begin != want)
    throw InputError(at + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] hold " +
                     std::to_string(e.end - e.begin) + " bytes, but dtype " + e.dtype + " × shape " +
                     shape_text(e.shape) + " is " + std::to_string(want) + " bytes");
  return e;
}

}  // namespace

// The file mapped read-only for the object's lifetime: tensors are converted straight from the
// page cache, never copied into a read buffer first.
class SafetensorsFile::Mapping {
 public:
  explicit Mapping(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw InputError("cannot open " + where(path) + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int error = errno;
      ::close(fd);
      throw InputError("cannot read the size of " + where(path) + ": " + std::strerror(error));
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int error = errno;
        ::close(fd);
        throw InputError("cannot map " + where(path) + ": " + std::strerror(error));
      }
      data_ = static_cast<const unsigned char*>(p);
    }
    ::close(fd);  // the mapping keeps the file
  }
  ~Mapping() {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  const unsigned char* data() const { return data_; }
  std::uint64_t size() const { return size_; }

 private:
  const unsigned char* data_ = nullptr;
  std::uint64_t size_ = 0;
};

SafetensorsFile::SafetensorsFile(std::string path)
    : path_(std::move(path)), mapping_(std::make_shared<const Mapping>(path_)) {
  const std::uint64_t file_size = mapping_->size();
  if (file_size < 8)
    throw InputError(where(path_) + " is " + std::to_string(file_size) +
                     " bytes long, shorter than the 8-byte header length");

  const unsigned char* bytes = mapping_->data();
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | bytes[i];
  if (header_length > file_size - 8)
    throw InputError(where(path_) + ": the header length " + std::to_string(header_length) +
                     " reaches past the end of the file (" + std::to_string(file_size) + " bytes)");
  data_start_ = 8 + header_length;
  const std::uint64_t data_size = file_size - data_start_;

  const std::string_view text(reinterpret_cast<const char*>(bytes + 8), header_length);
  json header;
  try {
    header = json::parse(text);
  } catch (const json::parse_error& e) {
    throw InputError(where(path_) + ": the header is not JSON: " + e.what());
  }
  if (!header.is_object()) throw InputError(where(path_) + ": the header must be a JSON object, got " + std::string(header.type_name()));

  for (const auto& [name, value] : header.items()) {
    if (name == metadata_key) {
      if (!value.is_object())
        throw InputError(where(path_) + ": '__metadata__' must be an object of strings, got " + value.dump());
      for (const auto& [key, v] : value.items()) {
        if (!v.is_string())
          throw InputError(where(path_) + ": '__metadata__' key '" + key + "' must be a string, got " + v.dump());
        metadata_[key] = v.get<std::string>();
      }
      continue;
    }
    Entry e = parse_entry(value, where(path_, name));
    if (e.end > data_size)
      throw InputError(where(path_, name) + ": data_offsets [" + std::to_string(e.begin) + ", " +
                       std::to_string(e.end) + "] reach past the data section's " + std::to_string(data_size) +
                       " bytes (the file may be truncated)");
    entries_.emplace(name, std::move(e));
  }

  // The tensors must tile [0, data_size): in offset order, each begins where the last ended.
  std::vector<std::pair<const std::string*, const Entry*>> order;
  for (const auto& [name, e] : entries_) order.emplace_back(&name, &e);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin : a.second->end < b.second->end;
  });
  std::uint64_t covered = 0;
  const std::string* previous = nullptr;
  for (const auto& [name, e] : order) {
    if (e->begin < covered)
      throw InputError(where(path_, *name) + ": data_offsets [" + std::to_string(e->begin) + ", " +
                       std::to_string(e->end) + "] overlap tensor '" + *previous + "' (which ends at " +
                       std::to_string(covered) + ")");
    if (e->begin > covered)
      throw InputError(where(path_, *name) + ": data_offsets begin at " + std::to_string(e->begin) +
                       ", leaving bytes [" + std::to_string(covered) + ", " + std::to_string(e->begin) +
                       ") of the data section to no tensor");
    covered = e->end;
    previous = name;
  }
  if (covered != data_size)
    throw InputError(where(path_) + ": " + std::to_string(data_size - covered) +
                     " trailing bytes after the last tensor (the data section is " + std::to_string(data_size) +
                     " bytes, the tensors end at " + std::to_string(covered) + ")");
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  const auto it = entries_.find(name);
  if (it == entries_.end()) throw InputError(where(path_) + " has no tensor '" + name + "'");
  return it->second;
}

std::span<const unsigned char> SafetensorsFile::bytes() const {
  return {mapping_->data(), static_cast<std::size_t>(mapping_->size())};
}

Tensor SafetensorsFile::read_f32(const std::string& name) const {
  const Entry& e = entry(name);
  if (e.dtype != "F32" && e.dtype != "F16" && e.dtype != "BF16")
    throw InputError(where(path_, name) + ": dtype " + e.dtype + " is not supported; supported: F32, F16, BF16");
  Tensor t = Tensor::empty(e.shape, DType::f32, Device::cpu());
  const std::size_t n = static_cast<std::size_t>(t.numel());
  const unsigned char* src = mapping_->data() + data_start_ + e.begin;
  if (e.dtype == "F32") {
    std::memcpy(t.data<float>(), src, e.end - e.begin);
  } else {
    // The data section is only 8-byte aligned as the reference writer leaves it: copy the halves
    // out rather than read them in place.
    std::vector<std::uint16_t> half(n);
    std::memcpy(half.data(), src, e.end - e.begin);
    convert(half.data(), t.data<float>(), n, e.dtype == "F16" ? DType::f16 : DType::bf16);
  }
  return t;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == metadata_key || header.contains(name))
      throw std::invalid_argument("write_safetensors: tensor name '" + name + "' is reserved or repeated");
    if (t->dtype() != DType::f32 || !t->device().is_cpu())
      throw std::invalid_argument("write_safetensors: tensor '" + name + "' must be host f32");
    const std::uint64_t bytes = t->bytes();
    header[name] = {{"dtype", "F32"}, {"shape", t->shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!metadata.empty()) header[metadata_key] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError("cannot write " + where(path) + ": " + std::strerror(errno));
  unsigned char length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<unsigned char>(text.size() >> (8 * i));
  out.write(reinterpret_cast<const char*>(length_bytes), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : tensors)
    out.write(reinterpret_cast<const char*>(t->data<float>()), static_cast<std::streamsize>(t->bytes()));
  out.close();
  if (!out) throw InputError("cannot write " + where(path) + ": the write failed (disk full?)");
}

}  // namespace aiopt::nn
