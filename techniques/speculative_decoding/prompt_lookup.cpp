#include "techniques/speculative_decoding/prompt_lookup.hpp"

#include <algorithm>

namespace aiopt::speculative_decoding {

std::vector<std::int32_t> lookup_draft(std::span<const std::int32_t> context, std::size_t max_ngram,
                                       std::size_t count) {
  const std::size_t size = context.size();
  if (count == 0) return {};
  for (std::size_t n = std::min(max_ngram, size > 0 ? size - 1 : 0); n >= 1; --n) {
    const auto suffix = context.last(n);
    // Earlier occurrences start at i with i + n < size, so at least one token follows; the latest
    // first.
    for (std::size_t i = size - n; i-- > 0;) {
      if (!std::equal(suffix.begin(), suffix.end(), context.begin() + static_cast<std::ptrdiff_t>(i))) continue;
      const std::size_t from = i + n, to = std::min(size, from + count);
      return {context.begin() + static_cast<std::ptrdiff_t>(from), context.begin() + static_cast<std::ptrdiff_t>(to)};
    }
  }
  return {};
}

}  // namespace aiopt::speculative_decoding
