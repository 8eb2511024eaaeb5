#include "nn/bpe_tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <queue>
#include <stdexcept>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "nn/json_file.hpp"

namespace aiopt::nn {
namespace {

namespace fs = std::filesystem;

// ---- GPT-2's byte alphabet

// Each byte as a printable character, so that vocab.json and merges.txt hold no whitespace or
// control characters: the printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
// themselves, the other 68 take the code points 256, 257, ... in byte order (bytes_to_unicode in
// openai/gpt-2 encoder.py).
constexpr std::array<char32_t, 256> byte_alphabet() {
  std::array<char32_t, 256> alphabet{};
  char32_t next = 256;
  for (char32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= U'!' && b <= U'~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    alphabet[b] = printable ? b : next++;
  }
  return alphabet;
}
constexpr std::array<char32_t, 256> kByteAlphabet = byte_alphabet();

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

std::string spelling_of_byte(unsigned char b) {
  std::string s;
  append_utf8(s, kByteAlphabet[b]);
  return s;
}

// The bytes a vocabulary entry stands for. Its text is valid UTF-8 (the JSON parser checks).
// An entry with a character outside the alphabet stands for its own UTF-8 text, as in Hugging
// Face's ByteLevel decoder, so that tokens added to a vocabulary by hand still decode.
std::string bytes_of_spelling(const std::string& spelling) {
  std::string bytes;
  for (std::size_t i = 0; i < spelling.size();) {
    const auto lead = static_cast<unsigned char>(spelling[i]);
    const std::size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    char32_t c = length == 1 ? lead : lead & (0x7F >> length);
    for (std::size_t k = 1; k < length; ++k) c = (c << 6) | (static_cast<unsigned char>(spelling[i + k]) & 0x3F);
    i += length;
    const auto* b = std::find(kByteAlphabet.begin(), kByteAlphabet.end(), c);
    if (b == kByteAlphabet.end()) return spelling;
    bytes += static_cast<char>(b - kByteAlphabet.begin());
  }
  return bytes;
}

// ---- the pre-tokenizer regex

constexpr std::string_view kPattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

// Compiled once for the process and only read afterwards: PCRE2 lets many threads match one
// compiled pattern, each with its own match data. UCP gives \s, \p{L} and \p{N} their Unicode
// meaning, as Python's `regex` module does for GPT-2; MATCH_INVALID_UTF makes invalid UTF-8 a
// barrier no match crosses instead of an error.
const pcre2_code* pretokenizer_pattern() {
  static const std::unique_ptr<pcre2_code, void (*)(pcre2_code*)> pattern = [] {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern.data()), kPattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (!code) throw std::logic_error("the pre-tokenizer regex does not compile: " + pcre2_message(error));
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // several times faster where PCRE2 has a JIT; the interpreter runs otherwise
    return std::unique_ptr<pcre2_code, void (*)(pcre2_code*)>(code, pcre2_code_free);
  }();
  return pattern.get();
}

// Appends the regex's pieces of `text`, and each run of bytes between matches (which only
// invalid UTF-8 can be: every valid character is \s, \p{L}, \p{N} or none of them) as a piece.
// Every alternative of the pattern takes at least one character, so each match moves on.
template <typename Piece>
void append_regex_pieces(std::string_view text, pcre2_match_data* match, std::vector<Piece>& pieces) {
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t covered = 0;
  while (covered < text.size()) {
    const int rc = pcre2_match(pretokenizer_pattern(), subject, text.size(), covered, 0, match, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw std::runtime_error("the pre-tokenizer regex failed: " + pcre2_message(rc));
    const PCRE2_SIZE* bounds = pcre2_get_ovector_pointer(match);
    if (bounds[0] > covered) pieces.push_back({text.substr(covered, bounds[0] - covered)});
    pieces.push_back({text.substr(bounds[0], bounds[1] - bounds[0])});
    covered = bounds[1];
  }
  if (covered < text.size()) pieces.push_back({text.substr(covered)});
}

// ---- error positions

std::string at(const fs::path& path, std::size_t line) { return path.string() + ":" + std::to_string(line) + ": "; }

std::string json_quoted(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot open: " + std::strerror(errno));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Where a JSON file's parts are: the line of its first value, and of each key of its top-level
// object. nlohmann::json keeps no positions, so an error reads the file again to name its line;
// the file is valid JSON by then, which lets this scan know only strings and nesting.
struct JsonLines {
  std::size_t first = 1;
  std::map<std::string, std::size_t> keys;  // a key given twice: its last line, the one nlohmann::json keeps

  std::size_t of(const std::string& key) const {
    const auto it = keys.find(key);
    return it == keys.end() ? first : it->second;
  }
};

JsonLines json_lines(const fs::path& path) {
  const std::string text = read_file(path);
  JsonLines lines;
  std::size_t line = 1;
  bool seen_value = false;
  int depth = 0;
  bool key_next = false;  // the next string is a key of the top-level object
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!seen_value && c != ' ' && c != '\t' && c != '\r' && c != '\n') {
      lines.first = line;
      seen_value = true;
    }
    if (c == '\n') {
      ++line;
    } else if (c == '{' || c == '[') {
      key_next = ++depth == 1 && c == '{';
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',') {
      key_next = depth == 1;
    } else if (c == '"') {
      std::size_t end = i + 1;
      while (end < text.size() && text[end] != '"') end += text[end] == '\\' ? 2 : 1;
      if (key_next)
        lines.keys.insert_or_assign(nlohmann::json::parse(text.substr(i, end - i + 1)).get<std::string>(), line);
      key_next = false;
      i = end;
    }
  }
  return lines;
}

}  // namespace

// ---- loading

BpeTokenizer BpeTokenizer::load(const fs::path& vocab_json, const fs::path& merges_txt) {
  BpeTokenizer t;
  const nlohmann::json vocab = read_json_file(vocab_json);
  if (!vocab.is_object())
    throw InputError(at(vocab_json, json_lines(vocab_json).first) +
                     "a vocabulary is a JSON object of token -> id, found " + std::string(vocab.type_name()));

  // Ids: non-negative 32-bit integers, one per token, covering 0..n-1.
  const std::size_t n = vocab.size();
  std::unordered_map<std::int64_t, const std::string*> token_of_id;
  const std::string* largest = nullptr;
  std::int64_t largest_id = -1;
  for (const auto& [key, value] : vocab.items()) {
    const bool valid = value.is_number_integer() && value.get<std::int64_t>() >= 0 &&
                       value.get<std::int64_t>() <= std::numeric_limits<std::int32_t>::max();
    if (!valid)
      throw InputError(at(vocab_json, json_lines(vocab_json).of(key)) + "token " + json_quoted(key) + " has the id " +
                       value.dump() + "; an id is an integer in 0..2147483647");
    const std::int64_t id = value.get<std::int64_t>();
    const auto [other, fresh] = token_of_id.emplace(id, &key);
    if (!fresh) {
      // Named at the later of the two lines, where a reader of the file meets the clash.
      const JsonLines lines = json_lines(vocab_json);
      const std::string *first = other->second, *second = &key;
      if (lines.of(*second) < lines.of(*first)) std::swap(first, second);
      throw InputError(at(vocab_json, lines.of(*second)) + "token " + json_quoted(*second) + " has the id " +
                       std::to_string(id) + " of token " + json_quoted(*first) + " (line " +
                       std::to_string(lines.of(*first)) + ")");
    }
    if (id > largest_id) {
      largest_id = id;
      largest = &key;
    }
  }
  if (largest_id >= static_cast<std::int64_t>(n)) {  // n distinct ids, one beyond n-1: some id below n is missing
    std::int64_t missing = 0;
    while (token_of_id.count(missing)) ++missing;
    throw InputError(at(vocab_json, json_lines(vocab_json).of(*largest)) + "token " + json_quoted(*largest) +
                     " has the id " + std::to_string(largest_id) + ", but the ids of " + std::to_string(n) +
                     " tokens are 0.." + std::to_string(static_cast<std::int64_t>(n) - 1) + ": id " +
                     std::to_string(missing) + " is missing");
  }

  t.bytes_.resize(n);
  t.ids_.reserve(n);
  for (const auto& [key, value] : vocab.items()) {
    const auto id = value.get<std::int32_t>();
    t.bytes_[id] = bytes_of_spelling(key);
    t.ids_.emplace(key, id);
    if (key.size() > 4 && key.starts_with("<|") && key.ends_with("|>")) t.specials_.push_back({t.bytes_[id], id});
  }
  std::sort(t.specials_.begin(), t.specials_.end(),
            [](const Special& a, const Special& b) { return a.text.size() > b.text.size(); });

  for (int b = 0; b < 256; ++b) {
    const std::string spelling = spelling_of_byte(static_cast<unsigned char>(b));
    const auto id = t.id_of(spelling);
    if (!id) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", b);
      throw InputError(vocab_json.string() + ": the byte " + hex + " (spelled " + json_quoted(spelling) +
                       ") has no token; a byte-level vocabulary has one for each of the 256 bytes");
    }
    t.byte_ids_[b] = *id;
  }

  // Merges: rank = order among the merge lines.
  std::ifstream in(merges_txt, std::ios::binary);
  if (!in) throw InputError(merges_txt.string() + ": cannot open: " + std::strerror(errno));
  std::string line;
  std::size_t number = 0, first_merge_line = 1, blank_line = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (number == 1 && line.starts_with("#version")) {
      first_merge_line = 2;
      continue;
    }
    if (line.empty()) {  // allowed after the last merge only: a gap would leave the ranks in doubt
      if (!blank_line) blank_line = number;
      continue;
    }
    if (blank_line) throw InputError(at(merges_txt, blank_line) + "a blank line between merges");
    const std::size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == line.size() || line.find(' ', space + 1) != std::string::npos)
      throw InputError(at(merges_txt, number) + "a merge is two tokens separated by one space, found " + json_quoted(line));
    const std::string left = line.substr(0, space), right = line.substr(space + 1);
    std::int32_t ids[2];
    for (int side = 0; side < 2; ++side) {
      const std::string& token = side == 0 ? left : right;
      const auto id = t.id_of(token);
      if (!id)
        throw InputError(at(merges_txt, number) + "the merge's token " + json_quoted(token) + " is not in " +
                         vocab_json.string());
      ids[side] = *id;
    }
    const auto merged = t.id_of(left + right);
    if (!merged)
      throw InputError(at(merges_txt, number) + "the merge of " + json_quoted(left) + " and " + json_quoted(right) + " makes " +
                       json_quoted(left + right) + ", which is not in " + vocab_json.string());
    const auto rank = static_cast<std::int32_t>(number - first_merge_line);
    const auto [earlier, fresh] = t.merges_.emplace(pair_key(ids[0], ids[1]), Merge{rank, *merged});
    if (!fresh)
      throw InputError(at(merges_txt, number) + "the merge " + json_quoted(line) + " is also on line " +
                       std::to_string(earlier->second.rank + first_merge_line));
  }
  return t;
}

// ---- encoding and decoding

std::vector<BpeTokenizer::Piece> BpeTokenizer::split(std::string_view text) const {
  const std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> match(
      pcre2_match_data_create_from_pattern(pretokenizer_pattern(), nullptr), pcre2_match_data_free);
  if (!match) throw std::bad_alloc();
  std::vector<Piece> pieces;
  // Special tokens are cut out first (the regex would cut "<|endoftext|>" into "<|", "endoftext",
  // "|>"), and the regex runs on the text between them. Each special's next place is kept, so
  // that the text is searched once per special however many there are in it.
  std::vector<std::size_t> next(specials_.size());
  for (std::size_t k = 0; k < specials_.size(); ++k) next[k] = text.find(specials_[k].text);
  std::size_t start = 0;
  while (true) {
    std::size_t first = std::string_view::npos, which = 0;
    for (std::size_t k = 0; k < specials_.size(); ++k) {
      if (next[k] != std::string_view::npos && next[k] < start) next[k] = text.find(specials_[k].text, start);
      if (next[k] < first) {  // strictly: of two at one place, the longer (earlier in specials_) wins
        first = next[k];
        which = k;
      }
    }
    append_regex_pieces(text.substr(start, first == std::string_view::npos ? std::string_view::npos : first - start),
                        match.get(), pieces);
    if (first == std::string_view::npos) return pieces;
    pieces.push_back({text.substr(first, specials_[which].text.size()), specials_[which].id});
    start = first + specials_[which].text.size();
  }
}

// Byte-pair encoding of one piece: start from its bytes' tokens and merge the adjacent pair of
// lowest rank until no adjacent pair has a merge. As in GPT-2's bpe(), every occurrence of that
// pair is merged, left to right, before any pair those merges make is looked at (this differs
// from merging one pair at a time only for merges files whose ranks are out of training order).
// The symbols are a linked list and the candidate pairs a heap, so a piece of n bytes takes
// O(n log n), not the O(n²) of rescanning the piece after each merge.
void BpeTokenizer::merge_piece(std::string_view piece, std::vector<std::int32_t>& out) const {
  using Index = std::ptrdiff_t;
  struct Symbol {
    std::int32_t id;  // -1 once merged into the symbol on its left
    Index prev, next;  // -1 at the ends
  };
  struct Candidate {
    std::int32_t rank;
    Index left;  // the pair's left symbol
    std::int32_t left_id, right_id, merged_id;
    bool operator>(const Candidate& o) const { return std::tie(rank, left) > std::tie(o.rank, o.left); }
  };

  const auto n = static_cast<Index>(piece.size());
  std::vector<Symbol> symbols(piece.size());
  for (Index i = 0; i < n; ++i)
    symbols[i] = {byte_ids_[static_cast<unsigned char>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> candidates;
  const auto consider = [&](Index left) {
    if (left < 0 || symbols[left].next < 0) return;
    const std::int32_t left_id = symbols[left].id, right_id = symbols[symbols[left].next].id;
    const auto merge = merges_.find(pair_key(left_id, right_id));
    if (merge != merges_.end()) candidates.push({merge->second.rank, left, left_id, right_id, merge->second.id});
  };
  for (Index i = 0; i + 1 < n; ++i) consider(i);

  std::vector<Index> merged;
  while (!candidates.empty()) {
    const std::int32_t rank = candidates.top().rank;
    merged.clear();
    for (; !candidates.empty() && candidates.top().rank == rank; candidates.pop()) {
      const Candidate& c = candidates.top();
      Symbol& left = symbols[c.left];
      // A candidate goes stale when one of its symbols merges first; ids only grow longer, so
      // unchanged ids mean an unchanged pair.
      if (left.id != c.left_id || left.next < 0 || symbols[left.next].id != c.right_id) continue;
      Symbol& right = symbols[left.next];
      left.id = c.merged_id;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = c.left;
      right.id = -1;
      merged.push_back(c.left);
    }
    for (const Index i : merged) {
      consider(symbols[i].prev);
      consider(i);
    }
  }
  for (Index i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);  // symbol 0 is never merged away
}

std::vector<std::int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<std::int32_t> tokens;
  for (const Piece& piece : split(text)) {
    if (piece.special >= 0)
      tokens.push_back(piece.special);
    else
      merge_piece(piece.text, tokens);
  }
  return tokens;
}

std::string BpeTokenizer::decode(std::span<const std::int32_t> tokens) const {
  std::string text;
  for (const std::int32_t id : tokens) {
    if (id < 0 || static_cast<std::size_t>(id) >= bytes_.size())
      throw std::out_of_range("token id " + std::to_string(id) + " is not in the vocabulary (ids 0.." +
                              std::to_string(bytes_.size() - 1) + ")");
    text += bytes_[id];
  }
  return text;
}

std::vector<std::string_view> BpeTokenizer::pretokenize(std::string_view text) const {
  std::vector<std::string_view> views;
  for (const Piece& piece : split(text)) views.push_back(piece.text);
  return views;
}

std::optional<std::int32_t> BpeTokenizer::id_of(std::string_view token) const {
  const auto it = ids_.find(token);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

}  // namespace aiopt::nn
