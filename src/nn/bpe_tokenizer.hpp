#pragma once
// Placeholder declaration; replaced by the tokenizer's own header.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aiopt::nn {
class BpeTokenizer {
 public:
  static BpeTokenizer load(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt);
  std::vector<std::int32_t> encode(std::string_view text) const;
  std::string decode(std::span<const std::int32_t> tokens) const;
  std::size_t vocab_size() const;
  std::vector<std::string_view> pretokenize(std::string_view text) const;
  std::optional<std::int32_t> id_of(std::string_view token) const;
};
}  // namespace aiopt::nn
