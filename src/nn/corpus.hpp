#pragma once
// The built-in training data (DESIGN.md "The model"): a deterministic synthetic language with real
// structure that a small model can learn but not memorize, as byte-level text; and any text file
// as bytes. Tokens are bytes (vocabulary 256).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace aiopt::nn {

// A probabilistic grammar over a vocabulary of invented words: sentences with subject–verb number
// agreement across relative clauses and prepositional phrases (long-range dependencies), noun
// classes that select their adjectives and verbs, and Zipf-distributed word choice. Dialect 1 is
// a related language with shifted rules (a different word order in clauses, different agreement
// suffixes and a reweighted lexicon) for pretrain-on-0 / fine-tune-on-1 experiments.
struct SyntheticCorpus {
  std::uint64_t seed = 1;
  int dialect = 0;  // 0 or 1; others throw InputError

  // At least `bytes` bytes of text, whole sentences, cut to exactly `bytes`. The text for
  // (seed, dialect, stream) is the same on every machine; `stream` selects an independent
  // sequence of sentences (train and validation use different streams).
  std::string generate(std::size_t bytes, std::uint64_t stream = 0) const;
};

// Entropy of the unigram distribution of `tokens` (bytes, or a tokenizer's ids), in nats: the loss
// of a model that knows only token frequencies, which a trained model must beat by a clear margin.
// InputError for a negative token.
double unigram_entropy(std::span<const std::int32_t> tokens);

struct TokenSplit {
  std::vector<std::int32_t> train;
  std::vector<std::int32_t> validation;
};

// The synthetic corpus as bytes: train from stream 0, validation from stream 1.
TokenSplit synthetic_tokens(const SyntheticCorpus& corpus, std::size_t train_bytes,
                            std::size_t validation_bytes);

// A file's bytes: the last `validation_fraction` (in (0, 0.5]) is validation. Throws InputError
// naming the file when it cannot be read or is too small to give both splits at least
// `min_split` tokens.
TokenSplit file_tokens(const std::filesystem::path& path, double validation_fraction, std::size_t min_split);

}  // namespace aiopt::nn
