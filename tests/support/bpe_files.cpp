#include "support/bpe_files.hpp"

#include <algorithm>
#include <map>

#include <nlohmann/json.hpp>

namespace aiopt::test {

std::string utf8(char32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

std::vector<std::pair<unsigned char, std::string>> gpt2_byte_order() {
  std::vector<int> bs, cs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  std::vector<std::pair<unsigned char, std::string>> order;
  for (std::size_t i = 0; i < bs.size(); ++i) order.emplace_back(static_cast<unsigned char>(bs[i]), utf8(cs[i]));
  return order;
}

std::string spell(const std::string& bytes) {
  static const auto order = gpt2_byte_order();
  static const auto table = [] {
    std::map<unsigned char, std::string> t;
    for (const auto& [b, s] : order) t[b] = s;
    return t;
  }();
  std::string out;
  for (const char c : bytes) out += table.at(static_cast<unsigned char>(c));
  return out;
}

void write_vocab_lines(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string text = "{\n";
  for (std::size_t i = 0; i < entries.size(); ++i)
    text += nlohmann::json(entries[i].first).dump() + ": " + entries[i].second + (i + 1 < entries.size() ? ",\n" : "\n");
  write_text(path, text + "}\n");
}

std::vector<std::pair<std::string, std::string>> byte_entries() {
  std::vector<std::pair<std::string, std::string>> entries;
  for (const auto& [b, s] : gpt2_byte_order()) entries.emplace_back(s, std::to_string(entries.size()));
  return entries;
}

// ---- a vocabulary trained here

const std::string kCorpus =
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs there and then "
    "returns to the den. It's the third time the fox has done that, and they're tired of it.\n"
    "We'll see whether the other foxes learn the same tricks: they've watched, and I'm sure "
    "they'd try if the weather were better. 123 foxes, 456 dogs, 7890 birds in 2024.\n\n"
    "def tokenize(text):\n    return [token for token in text.split() if token]\n\n"
    "for (int i = 0; i < n; ++i) { total += values[i] * weights[i]; }\n"
    "    if (total > threshold) return true;\n    return false;\n\n"
    "Café au lait, naïve résumé, déjà vu: the café serves crème brûlée and the résumé lists it.\n"
    "日本語のテキストと中文文本。 Ünïcödé text with ümlauts: über, schön, Grüße. 🙂🙂 👍 emoji 🙂.\n"
    "the the the then there these those them they their theory thermal.\n"
    "Tokenizers split the text into pieces, then merge the most frequent pairs of tokens into new tokens; "
    "the merges are ranked, and the lowest rank merges first. Tokens, pieces, pairs, merges, ranks.\n";


nn::BpeTokenizer byte_tokenizer(const TempDir& dir) {
  write_vocab_lines(dir.file("bytes_vocab.json"), byte_entries());
  write_text(dir.file("bytes_merges.txt"), "#version: 0.2\n");
  return nn::BpeTokenizer::load(dir.file("bytes_vocab.json"), dir.file("bytes_merges.txt"));
}

Trained train(const std::vector<std::string_view>& pieces, int merges) {
  Trained t;
  for (const auto& [b, s] : gpt2_byte_order()) t.tokens.push_back(std::string(1, static_cast<char>(b)));
  std::map<std::vector<std::string>, int> words;  // a piece as its current symbols -> how often
  for (const auto piece : pieces) {
    std::vector<std::string> symbols;
    for (const char c : piece) symbols.push_back(std::string(1, c));
    ++words[symbols];
  }
  for (int m = 0; m < merges; ++m) {
    std::map<std::pair<std::string, std::string>, int> counts;
    for (const auto& [w, count] : words)
      for (std::size_t i = 0; i + 1 < w.size(); ++i) counts[{w[i], w[i + 1]}] += count;
    std::pair<std::string, std::string> best;
    int best_count = 1;
    for (const auto& [pair, count] : counts)
      if (count > best_count) {
        best = pair;
        best_count = count;
      }
    if (best_count < 2) break;
    t.merges.push_back(best);
    // Two merges may make one token ("a" "bc" and "ab" "c"): it has one id.
    if (std::find(t.tokens.begin(), t.tokens.end(), best.first + best.second) == t.tokens.end())
      t.tokens.push_back(best.first + best.second);
    std::map<std::vector<std::string>, int> next;
    for (const auto& [w, count] : words) {
      std::vector<std::string> merged;
      for (std::size_t i = 0; i < w.size();) {
        if (i + 1 < w.size() && w[i] == best.first && w[i + 1] == best.second) {
          merged.push_back(w[i] + w[i + 1]);
          i += 2;
        } else {
          merged.push_back(w[i++]);
        }
      }
      next[merged] += count;
    }
    words = std::move(next);
  }
  return t;
}

const std::vector<std::string> kSpecials = {"<|endoftext|>", "<|pad|>"};

void write_trained(const TempDir& dir, const Trained& t, const std::string& vocab, const std::string& merges) {
  std::vector<std::pair<std::string, std::string>> entries;
  for (const std::string& token : t.tokens) entries.emplace_back(spell(token), std::to_string(entries.size()));
  for (const std::string& special : kSpecials) entries.emplace_back(special, std::to_string(entries.size()));
  write_vocab_lines(dir.file(vocab), entries);
  std::string text = "#version: 0.2\n";
  for (const auto& [a, b] : t.merges) text += spell(a) + " " + spell(b) + "\n";
  write_text(dir.file(merges), text);
}

Trained write_tokenizer(const TempDir& dir, const std::string& folder) {
  const Trained trained = train(byte_tokenizer(dir).pretokenize(kCorpus), 100);
  write_trained(dir, trained, folder + "/vocab.json", folder + "/merges.txt");
  return trained;
}

}  // namespace aiopt::test
