#pragma once
// GPT-2 tokenizer files written by tests: the byte alphabet of GPT-2's encoder.py, a small corpus,
// BPE trained on it here (Sennrich et al. 2016), and vocab.json and merges.txt as published.
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nn/bpe_tokenizer.hpp"
#include "support/files.hpp"

namespace aiopt::test {

std::string utf8(char32_t c);
// bytes_to_unicode of openai/gpt-2 encoder.py: the bytes in that order with their characters.
std::vector<std::pair<unsigned char, std::string>> gpt2_byte_order();
// A byte string spelled in GPT-2's byte alphabet, as vocab.json and merges.txt hold it.
std::string spell(const std::string& bytes);
// vocab.json with one entry per line: entry i is on line i + 2. The id text is written as is.
void write_vocab_lines(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries);
// The 256 byte tokens in GPT-2's order (ids 0..255), as vocab entries.
std::vector<std::pair<std::string, std::string>> byte_entries();

// English, code, accented, CJK and emoji text to train on.
extern const std::string kCorpus;

struct Trained {
  std::vector<std::string> tokens;  // id -> bytes: 256 bytes in GPT-2's order, then each new merged token
  std::vector<std::pair<std::string, std::string>> merges;  // rank order, as bytes
};

// The tokenizer of byte tokens alone (written into `dir`): the pre-split before any merge is learned.
nn::BpeTokenizer byte_tokenizer(const TempDir& dir);
// BPE training over the pre-split pieces: count adjacent pairs, merge the most frequent (ties:
// the smallest pair), `merges` times at most.
Trained train(const std::vector<std::string_view>& pieces, int merges);

// The special tokens write_trained appends to the vocabulary.
extern const std::vector<std::string> kSpecials;
// Writes the trained vocabulary (then the special tokens) and merges as dir's files `vocab` and `merges`.
void write_trained(const TempDir& dir, const Trained& t, const std::string& vocab, const std::string& merges);

// vocab.json and merges.txt of 100 merges trained on kCorpus, in dir's sub-folder `folder`
// (which must exist); returns what was trained.
Trained write_tokenizer(const TempDir& dir, const std::string& folder);

}  // namespace aiopt::test
