#pragma once
// GPT-2's byte-level BPE tokenizer (Radford et al. 2019, openai/gpt-2 encoder.py), read from the
// two files Hugging Face's GPT-2 folders hold:
//   vocab.json   {"token": id, ...}: every token spelled in GPT-2's byte alphabet (each byte as
//                one printable character: "Ġ" is the space byte), ids 0..n-1
//   merges.txt   an optional "#version" line, then one merge "left right" per line, in rank order
//
// Encoding: special tokens of the vocabulary spelled "<|...|>" (GPT-2's "<|endoftext|>") found
// literally in the text become their own ids; the text around them is cut into pieces by GPT-2's
// pre-tokenizer regex, and each piece, as bytes, is merged by byte-pair encoding: the adjacent pair
// of lowest merge rank is merged until none has a merge. Any byte string encodes (bytes that are
// not valid UTF-8 form pieces of their own), and decode(encode(x)) == x.
//
// load throws InputError naming the file and line for a vocabulary that is not a JSON object of
// token -> id, an id that is not a non-negative integer, two tokens with one id, ids that do not
// cover 0..n-1, a byte without a token, a merges line that is not two tokens separated by one
// space, a merge of a token the vocabulary lacks or whose concatenation it lacks, and a merge
// given twice.
//
// A tokenizer is read-only once loaded: encode and decode may run on many threads at once.
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace aiopt::nn {

class BpeTokenizer {
 public:
  static BpeTokenizer load(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt);

  std::vector<std::int32_t> encode(std::string_view text) const;
  // The bytes the tokens stand for, concatenated. std::out_of_range naming an id outside 0..n-1.
  std::string decode(std::span<const std::int32_t> tokens) const;
  std::size_t vocab_size() const { return bytes_.size(); }

  // The pieces encode merges within, in order, as views into `text`: special tokens whole, and
  // between them the matches of GPT-2's regex
  //   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  // with each run of bytes no match covers (invalid UTF-8) as one piece. They tile the text.
  std::vector<std::string_view> pretokenize(std::string_view text) const;

  // The id of a vocabulary entry spelled as in vocab.json ("Ġthe"), or nullopt.
  std::optional<std::int32_t> id_of(std::string_view token) const;

 private:
  struct Piece {
    std::string_view text;
    std::int32_t special = -1;  // the id of a special token; -1: a piece to merge
  };
  struct Special {
    std::string text;  // as it appears in the input
    std::int32_t id;
  };
  struct Merge {
    std::int32_t rank;  // its line's order in merges.txt: lower merges first
    std::int32_t id;    // the token the pair becomes
  };
  // Lookups by std::string_view without building a std::string.
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  static std::uint64_t pair_key(std::int32_t left, std::int32_t right) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) | static_cast<std::uint32_t>(right);
  }
  std::vector<Piece> split(std::string_view text) const;
  void merge_piece(std::string_view piece, std::vector<std::int32_t>& out) const;

  std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>> ids_;  // spelling -> id
  std::vector<std::string> bytes_;              // id -> the bytes it stands for
  std::array<std::int32_t, 256> byte_ids_{};    // byte -> the id of its one-byte token
  std::unordered_map<std::uint64_t, Merge> merges_;  // pair_key(left id, right id) -> merge
  std::vector<Special> specials_;               // longest first, so that the longer of two at one place wins
};

}  // namespace aiopt::nn
