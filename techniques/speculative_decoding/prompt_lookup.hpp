#pragma once
// The draft of prompt lookup decoding (Saxena 2023; the n-gram speculation of vLLM and Hugging
// Face Transformers): no draft model, the context itself proposes. Where the context's last n
// tokens occurred before, the tokens that followed that occurrence are the draft.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace aiopt::speculative_decoding {

// Up to `count` tokens that followed the latest earlier occurrence of the context's last n
// tokens, for n from max_ngram down to 1 (the longest suffix that recurs wins); fewer where the
// context ends first, none where no suffix recurs.
std::vector<std::int32_t> lookup_draft(std::span<const std::int32_t> context, std::size_t max_ngram,
                                       std::size_t count);

}  // namespace aiopt::speculative_decoding
