// GPT-2's byte-level BPE tokenizer (nn/bpe_tokenizer.hpp): a vocabulary trained here on a small
// corpus, encode against GPT-2's bpe() written plainly on fresh random texts, round trips of
// arbitrary bytes, the published pre-tokenization rules, special tokens, malformed vocab.json and
// merges.txt files, and the pre-split against Python's `regex` module where it is installed.
#include <catch2/catch.hpp>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "nn/bpe_tokenizer.hpp"
#include "support/bpe_files.hpp"
#include "support/files.hpp"

using namespace aiopt;
using nn::BpeTokenizer;
using Catch::Matchers::Contains;
using namespace aiopt::test;

namespace {

const std::string kPattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---- the reference

// GPT-2's bpe() (openai/gpt-2 encoder.py), written plainly: find the adjacent pair of lowest rank,
// merge every occurrence of it left to right, repeat until no pair has a rank.
std::vector<std::string> reference_bpe(const std::string& piece,
                                       const std::map<std::pair<std::string, std::string>, int>& ranks) {
  std::vector<std::string> word;
  for (const char c : piece) word.push_back(std::string(1, c));
  while (word.size() > 1) {
    int best = INT_MAX;
    std::pair<std::string, std::string> pair;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = ranks.find({word[i], word[i + 1]});
      if (it != ranks.end() && it->second < best) {
        best = it->second;
        pair = it->first;
      }
    }
    if (best == INT_MAX) break;
    std::vector<std::string> next;
    for (std::size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == pair.first && word[i + 1] == pair.second) {
        next.push_back(word[i] + word[i + 1]);
        i += 2;
      } else {
        next.push_back(word[i++]);
      }
    }
    word = std::move(next);
  }
  return word;
}

struct Reference {
  std::map<std::pair<std::string, std::string>, int> ranks;
  std::map<std::string, std::int32_t> ids;  // token bytes -> id

  explicit Reference(const Trained& t) {
    for (std::size_t r = 0; r < t.merges.size(); ++r) ranks[t.merges[r]] = static_cast<int>(r);
    for (const std::string& token : t.tokens) ids[token] = static_cast<std::int32_t>(ids.size());
    for (const std::string& special : kSpecials) ids[special] = static_cast<std::int32_t>(ids.size());
  }

  // Specials cut out by a plain search for the earliest, the regex pieces of the text between
  // them from `pre_split`, each piece merged by reference_bpe.
  std::vector<std::int32_t> encode(const std::string& text, const BpeTokenizer& pre_split) const {
    std::vector<std::int32_t> out;
    std::size_t start = 0;
    while (start <= text.size()) {
      std::size_t first = std::string::npos;
      std::string special;
      for (const std::string& s : kSpecials) {
        const std::size_t at = text.find(s, start);
        if (at < first) {
          first = at;
          special = s;
        }
      }
      const std::string between = text.substr(start, first == std::string::npos ? std::string::npos : first - start);
      for (const auto piece : pre_split.pretokenize(between))
        for (const std::string& token : reference_bpe(std::string(piece), ranks)) out.push_back(ids.at(token));
      if (first == std::string::npos) break;
      out.push_back(ids.at(special));
      start = first + special.size();
    }
    return out;
  }
};

// ---- random inputs

std::size_t below(rng::Stream& s, std::size_t n) { return static_cast<std::size_t>(s.next_bits() % n); }

// Text made of words, digits, punctuation, contractions, whitespace runs, accented, CJK and emoji
// characters, Unicode whitespace and (when `specials`) special tokens whole and cut.
std::string random_text(rng::Stream& s, bool specials) {
  static const std::vector<std::string> fragments = {
      "the", "fox", "there", "then", "The", "token", "weights", "return", "café", "naïve", "résumé",
      "über", "Grüße", "日本語", "中文", "テキスト", "🙂", "👍🏽", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'",
      "!", "!!", ".", ",", ";", "(", ")", "{", "}", "->", "==", "+=", "[i]", "#", "\"", " ", " ", "  ", "   ",
      "\t", "\n", "\n\n", " \n", "\r\n", "\u00a0", "\u2028", "\u3000", "\u0085", "\x0b", "\x1c", "e\u0301",
      "٣", "½", "Ω", "ß"};
  static const std::vector<std::string> special_fragments = {"<|endoftext|>", "<|pad|>", "<|endof", "|>", "<|"};
  std::string text;
  const std::size_t parts = below(s, 30);
  for (std::size_t p = 0; p < parts; ++p) {
    switch (below(s, specials ? 5 : 4)) {
      case 0: {  // a random word
        const std::size_t n = 1 + below(s, 8);
        for (std::size_t i = 0; i < n; ++i) text += static_cast<char>((below(s, 4) == 0 ? 'A' : 'a') + below(s, 26));
        break;
      }
      case 1: {  // a number
        const std::size_t n = 1 + below(s, 5);
        for (std::size_t i = 0; i < n; ++i) text += static_cast<char>('0' + below(s, 10));
        break;
      }
      case 4:
        text += special_fragments[below(s, special_fragments.size())];
        break;
      default:
        text += fragments[below(s, fragments.size())];
    }
  }
  return text;
}

// Arbitrary bytes, weighted towards what breaks UTF-8: continuation bytes alone, lead bytes
// without their continuations, 0xC0, 0xF5..0xFF, NUL, and valid characters between them.
std::string random_bytes(rng::Stream& s) {
  static const std::vector<std::string> valid = {"a", " ", "é", "日", "🙂", "\n", "1", "'s"};
  std::string bytes;
  const std::size_t n = below(s, 40);
  for (std::size_t i = 0; i < n; ++i) {
    switch (below(s, 5)) {
      case 0: bytes += static_cast<char>(below(s, 256)); break;
      case 1: bytes += static_cast<char>(0x80 + below(s, 64)); break;  // a continuation byte
      case 2: bytes += static_cast<char>(0xC0 + below(s, 64)); break;  // a lead byte (or never-valid 0xC0, 0xF5..)
      case 3: bytes += '\0'; break;
      default: bytes += valid[below(s, valid.size())];
    }
  }
  return bytes;
}

// The pieces are views into `text`, one after the other, covering it.
void check_tiles(const std::vector<std::string_view>& pieces, const std::string& text) {
  std::size_t offset = 0;
  for (const auto piece : pieces) {
    REQUIRE(piece.data() == text.data() + offset);
    REQUIRE(!piece.empty());
    offset += piece.size();
  }
  REQUIRE(offset == text.size());
}

std::vector<std::string> strings(const std::vector<std::string_view>& views) { return {views.begin(), views.end()}; }

}  // namespace

TEST_CASE("the byte alphabet is GPT-2's") {
  test::TempDir dir;
  const BpeTokenizer tok = byte_tokenizer(dir);
  REQUIRE(tok.vocab_size() == 256);
  // Fixed spellings from GPT-2's vocab.json: the space "Ġ" (U+0120), the newline "Ċ" (U+010A),
  // NUL "Ā" (U+0100), 0xAD "Ń" (U+0143, the last of the 68 moved).
  CHECK(spell(" ") == "Ġ");
  CHECK(spell("\n") == "Ċ");
  CHECK(spell(std::string(1, '\0')) == "Ā");
  CHECK(spell("\xAD") == "Ń");
  CHECK(spell("a!~\xA1\xFF") == "a!~¡ÿ");
  std::int32_t id = 0;
  for (const auto& [b, s] : gpt2_byte_order()) {
    INFO("byte " << int(b));
    CHECK(tok.id_of(s) == id);
    const std::string one(1, static_cast<char>(b));
    CHECK(tok.encode(one) == std::vector<std::int32_t>{id});
    CHECK(tok.decode(std::vector<std::int32_t>{id}) == one);
    ++id;
  }
  CHECK_FALSE(tok.id_of("Ġt").has_value());
  CHECK_FALSE(tok.id_of(" ").has_value());  // the space byte is spelled "Ġ"
}

TEST_CASE("encode matches GPT-2's bpe on random texts") {
  test::TempDir dir;
  const BpeTokenizer bytes = byte_tokenizer(dir);
  const Trained trained = train(bytes.pretokenize(kCorpus), 100);
  REQUIRE(trained.merges.size() == 100);
  write_trained(dir, trained, "vocab.json", "merges.txt");
  const BpeTokenizer tok = BpeTokenizer::load(dir.file("vocab.json"), dir.file("merges.txt"));
  REQUIRE(tok.vocab_size() == trained.tokens.size() + kSpecials.size());
  const Reference reference(trained);

  // The corpus the merges came from compresses: the merges are used, not only the bytes.
  const std::vector<std::int32_t> corpus_tokens = tok.encode(kCorpus);
  CHECK(corpus_tokens == reference.encode(kCorpus, tok));
  CHECK(corpus_tokens.size() < kCorpus.size() * 2 / 3);
  CHECK(tok.decode(corpus_tokens) == kCorpus);
  CHECK(tok.id_of(spell("the")).has_value());
  CHECK(tok.id_of(spell(" the")).has_value());

  rng::Stream s(20240917);
  for (int i = 0; i < 400; ++i) {
    const std::string text = random_text(s, true);
    INFO("text " << nlohmann::json(text).dump());
    const std::vector<std::int32_t> tokens = tok.encode(text);
    REQUIRE(tokens == reference.encode(text, tok));
    REQUIRE(tok.decode(tokens) == text);
    check_tiles(tok.pretokenize(text), text);
  }
}

TEST_CASE("every occurrence of a pair merges before the pairs those merges make") {
  // GPT-2's bpe() merges all occurrences of the lowest-ranked pair in one step. With "ab a" ranked
  // before "a b" (out of training order on purpose), "abab" is "ab" "ab"; merging one occurrence
  // at a time would make "ab" "a" "b" first, then "aba" "b".
  test::TempDir dir;
  auto entries = byte_entries();
  entries.emplace_back("ab", "256");
  entries.emplace_back("aba", "257");
  write_vocab_lines(dir.file("vocab.json"), entries);
  test::write_text(dir.file("merges.txt"), "ab a\na b\n");
  const BpeTokenizer tok = BpeTokenizer::load(dir.file("vocab.json"), dir.file("merges.txt"));
  const std::int32_t a = *tok.id_of("a"), b = *tok.id_of("b");
  using Ids = std::vector<std::int32_t>;
  CHECK(tok.encode("abab") == Ids{256, 256});
  CHECK(tok.encode("ababa") == Ids{256, 257});
  CHECK(tok.encode("aab") == Ids{a, 256});
  CHECK(tok.encode("abba") == Ids{256, b, a});

  // Long pieces of a and b against the reference.
  const std::map<std::pair<std::string, std::string>, int> ranks = {{{"ab", "a"}, 0}, {{"a", "b"}, 1}};
  const std::map<std::string, std::int32_t> ids = {{"a", a}, {"b", b}, {"ab", 256}, {"aba", 257}};
  rng::Stream s(5);
  for (int i = 0; i < 200; ++i) {
    std::string text(1 + below(s, i < 190 ? 30 : 3000), 'a');
    for (char& c : text) c = below(s, 2) ? 'a' : 'b';
    INFO("text " << text);
    Ids expected;
    for (const std::string& token : reference_bpe(text, ranks)) expected.push_back(ids.at(token));
    REQUIRE(tok.encode(text) == expected);
  }
}

TEST_CASE("any byte string round-trips") {
  test::TempDir dir;
  const BpeTokenizer bytes = byte_tokenizer(dir);
  write_trained(dir, train(bytes.pretokenize(kCorpus), 100), "vocab.json", "merges.txt");
  const BpeTokenizer tok = BpeTokenizer::load(dir.file("vocab.json"), dir.file("merges.txt"));

  const std::vector<std::string> fixed = {
      "", std::string(1, '\0'), std::string("a\0b", 3), "\x80", "\xBF\xBF", "\xFF", "\xFE\xFF", "\xC0\xAF",
      "\xE6\x97",         // 日 cut after two of its three bytes
      "a\xE6\x97 b",      // the same inside text
      "the\xC3",          // é cut at the end
      "\xED\xA0\x80",     // a UTF-16 surrogate, never valid in UTF-8
      "\xF4\x90\x80\x80",  // above U+10FFFF
      "it's \xFF\xFE 123 \x80日本語\xE6"};
  for (const std::string& text : fixed) {
    INFO("bytes " << nlohmann::json(text).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
    CHECK(tok.decode(tok.encode(text)) == text);
    check_tiles(tok.pretokenize(text), text);
  }
  // An invalid byte is a piece of its own, encoded as its byte token.
  CHECK(strings(tok.pretokenize("ab\xFF""cd")) == std::vector<std::string>{"ab", "\xFF", "cd"});
  CHECK(strings(tok.pretokenize("a\xE6\x97 b")) == std::vector<std::string>{"a", "\xE6\x97", " b"});
  CHECK(tok.encode("\xFF") == std::vector<std::int32_t>{*tok.id_of("ÿ")});

  rng::Stream s(77);
  for (int i = 0; i < 3000; ++i) {
    const std::string text = random_bytes(s);
    INFO("bytes " << nlohmann::json(text).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
    REQUIRE(tok.decode(tok.encode(text)) == text);
    check_tiles(tok.pretokenize(text), text);
  }
}

TEST_CASE("pretokenize follows GPT-2's published rules") {
  test::TempDir dir;
  const BpeTokenizer tok = byte_tokenizer(dir);
  using Pieces = std::vector<std::string>;
  const std::vector<std::pair<std::string, Pieces>> cases = {
      {"", {}},
      {"Hello world", {"Hello", " world"}},
      {"  hi", {" ", " hi"}},          // the last space joins the word; the rest stay whitespace
      {"a  b", {"a", " ", " b"}},
      {"a\n\nb", {"a", "\n", "\n", "b"}},  // \s+(?!\S) leaves the whitespace before "b" to \s+
      {"x \n y", {"x", " \n", " y"}},
      {"end   ", {"end", "   "}},
      {"tab\there", {"tab", "\t", "here"}},
      {" 123", {" 123"}},
      {"abc123def", {"abc", "123", "def"}},
      {"3.14", {"3", ".", "14"}},
      {" !!", {" !!"}},
      {"hi!!", {"hi", "!!"}},
      {"a, b", {"a", ",", " b"}},
      {"(x)", {"(", "x", ")"}},
      {"it's", {"it", "'s"}},
      {"don't", {"don", "'t"}},
      {"we're", {"we", "'re"}},
      {"I've", {"I", "'ve"}},
      {"I'm", {"I", "'m"}},
      {"we'll", {"we", "'ll"}},
      {"he'd", {"he", "'d"}},
      {"IT'S", {"IT", "'", "S"}},  // the contractions are lower case only
      {"'sup", {"'s", "up"}},
      {" 's", {" '", "s"}},  // a contraction takes no space before it
      {"héllo", {"héllo"}},
      {"日本語", {"日本語"}},
      {" naïve café", {" naïve", " café"}},
      {"x٣", {"x", "٣"}},  // ARABIC-INDIC DIGIT THREE is \p{N}
      {"½", {"½"}},
      {"🙂🙂 ok", {"🙂🙂", " ok"}},
      {"e\u0301", {"e", "\u0301"}},  // a combining mark is neither \p{L} nor \p{N}
      {"a\u00a0b", {"a", "\u00a0", "b"}},  // NO-BREAK SPACE is \s, but only " " joins a word
      {"\u3000日本", {"\u3000", "日本"}},
      {"x\u0085y", {"x", "\u0085", "y"}},
      // Unicode whitespace runs split as ASCII ones do (\s+(?!\S), then \s+), not as punctuation.
      {"a\u00a0\u00a0!", {"a", "\u00a0", "\u00a0", "!"}},
      {"x\u3000\u3000y", {"x", "\u3000", "\u3000", "y"}},
      {"a \u2028b", {"a", " ", "\u2028", "b"}},
  };
  for (const auto& [text, expected] : cases) {
    INFO("text " << nlohmann::json(text).dump());
    CHECK(strings(tok.pretokenize(text)) == expected);
  }
}

TEST_CASE("special tokens encode as one id") {
  test::TempDir dir;
  const BpeTokenizer bytes = byte_tokenizer(dir);
  const Trained trained = train(bytes.pretokenize(kCorpus), 100);
  write_trained(dir, trained, "vocab.json", "merges.txt");
  const BpeTokenizer tok = BpeTokenizer::load(dir.file("vocab.json"), dir.file("merges.txt"));
  const auto eot = static_cast<std::int32_t>(trained.tokens.size()), pad = eot + 1;
  CHECK(tok.id_of("<|endoftext|>") == eot);
  CHECK(tok.id_of("<|pad|>") == pad);

  using Ids = std::vector<std::int32_t>;
  const auto join = [](std::initializer_list<Ids> parts) {
    Ids out;
    for (const Ids& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  CHECK(tok.encode("<|endoftext|>") == Ids{eot});
  CHECK(tok.encode("<|endoftext|><|pad|><|endoftext|>") == Ids{eot, pad, eot});
  CHECK(tok.encode("the fox<|endoftext|>The dog") == join({tok.encode("the fox"), {eot}, tok.encode("The dog")}));
  CHECK(tok.decode(Ids{eot, pad}) == "<|endoftext|><|pad|>");
  // Cut or misspelt, it is text.
  for (const std::string text : {"<|endoftext", "endoftext|>", "<| endoftext|>", "<|ENDOFTEXT|>"}) {
    INFO(text);
    const Ids tokens = tok.encode(text);
    CHECK(std::find(tokens.begin(), tokens.end(), eot) == tokens.end());
    CHECK(tok.decode(tokens) == text);
  }
  // The regex runs on the text between specials: the whitespace before one ends its segment.
  CHECK(strings(tok.pretokenize("x \n<|endoftext|> y")) == std::vector<std::string>{"x", " \n", "<|endoftext|>", " y"});

  // Of two specials at one place, the longer.
  auto entries = byte_entries();
  entries.emplace_back("<|a|>", "256");
  entries.emplace_back("<|a|>b|>", "257");
  write_vocab_lines(dir.file("two.json"), entries);
  test::write_text(dir.file("none.txt"), "");
  const BpeTokenizer two = BpeTokenizer::load(dir.file("two.json"), dir.file("none.txt"));
  CHECK(two.encode("<|a|>b|><|a|>b") == join({{257, 256}, two.encode("b")}));
}

TEST_CASE("decode names an id outside the vocabulary") {
  test::TempDir dir;
  const BpeTokenizer tok = byte_tokenizer(dir);
  CHECK_THROWS_WITH(tok.decode(std::vector<std::int32_t>{1, 256}), Contains("256"));
  CHECK_THROWS_AS(tok.decode(std::vector<std::int32_t>{1, 256}), std::out_of_range);
  CHECK_THROWS_AS(tok.decode(std::vector<std::int32_t>{-1}), std::out_of_range);
  CHECK_FALSE(tok.id_of("no such token").has_value());
}

namespace {

// The message of the InputError `load` throws; fails the test when there is none.
std::string load_error(const std::string& vocab, const std::string& merges) {
  try {
    BpeTokenizer::load(vocab, merges);
  } catch (const InputError& e) {
    return e.what();
  }
  FAIL("no InputError for " << vocab << " and " << merges);
  return "";
}

}  // namespace

TEST_CASE("malformed vocab.json files name their line") {
  test::TempDir dir;
  const std::string vocab = dir.file("vocab.json"), merges = dir.file("merges.txt");
  test::write_text(merges, "#version: 0.2\n");
  using Entries = std::vector<std::pair<std::string, std::string>>;

  test::write_text(vocab, "{\n\"a\": 0,\n\"b\": \n}\n");
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":4:") && Contains("not JSON"));

  test::write_text(vocab, "\n[\"a\", \"b\"]\n");
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":2: ") && Contains("JSON object"));

  // Entry i is on line i + 2. Each file has one bad entry, or the bad entry comes first in key
  // order (the order the loader checks in); keys with escapes and nested values come before it.
  write_vocab_lines(vocab, Entries{{"a", "0"}, {"q\"{x", "1"}, {"\u0120t", "2"}, {"b", "\"3\""}});
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":5: ") && Contains("\"b\"") && Contains("\"3\""));
  write_vocab_lines(vocab, Entries{{"a", "0"}, {"b", "1"}, {"c", "-1"}});
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":4: ") && Contains("\"c\"") && Contains("-1"));
  write_vocab_lines(vocab, Entries{{"b", "-1"}, {"z", "{\"b\": 1}"}});  // the nested "b" is no key of the vocabulary
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":2: ") && Contains("\"b\""));
  write_vocab_lines(vocab, Entries{{"a", "0"}, {"c", "[1,\n2]"}, {"d", "1"}});
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":3: ") && Contains("\"c\""));
  write_vocab_lines(vocab, Entries{{"a", "[\"x\",\n\"y\"]"}, {"b", "1.5"}});
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":2: ") && Contains("\"a\""));
  write_vocab_lines(vocab, Entries{{"a", "0"}, {"b", "4294967296"}});
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":3: ") && Contains("\"b\"") && Contains("4294967296"));
  test::write_text(vocab, "{\n\"a\": 0,\n\"\\u0120t\": 1,\n\"\\\"\": -2\n}\n");  // the keys escaped as JSON allows
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":4: ") && Contains("-2"));
  write_vocab_lines(vocab, Entries{{"a", "0"}, {"c", "[1,\n2]"}, {"b", "1.5"}});  // "b" first in key order, after a line break
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":5: ") && Contains("\"b\"") && Contains("1.5"));

  // Two tokens with one id: the later line is named, with the earlier.
  write_vocab_lines(vocab, Entries{{"a", "0"}, {"z", "1"}, {"b", "1"}, {"c", "2"}});
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":4: ") && Contains("\"b\"") && Contains("\"z\" (line 3)"));

  // Ids that skip one: the token with the largest id, and the missing id.
  write_vocab_lines(vocab, Entries{{"a", "0"}, {"b", "7"}, {"c", "1"}});
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":3: ") && Contains("\"b\"") && Contains("id 2 is missing"));

  // A byte without its token.
  Entries entries;
  for (const auto& [token, id] : byte_entries())
    if (token != "Ċ") entries.emplace_back(token, std::to_string(entries.size()));
  write_vocab_lines(vocab, entries);
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ": ") && Contains("0x0A") && Contains("\"Ċ\""));

  test::write_text(vocab, "{\"a\": 0,\n\"b\": 1");
  CHECK_THAT(load_error(vocab, merges), Contains(vocab + ":2:"));
  CHECK_THAT(load_error(dir.file("absent.json"), merges), Contains(dir.file("absent.json") + ": cannot open"));
}

TEST_CASE("malformed merges.txt files name their line") {
  test::TempDir dir;
  const BpeTokenizer bytes = byte_tokenizer(dir);
  const Trained trained = train(bytes.pretokenize(kCorpus), 100);
  write_trained(dir, trained, "vocab.json", "merges.txt");
  const std::string vocab = dir.file("vocab.json"), merges = dir.file("bad_merges.txt");
  const std::string first = spell(trained.merges[0].first) + " " + spell(trained.merges[0].second) + "\n";
  const std::string second = spell(trained.merges[1].first) + " " + spell(trained.merges[1].second) + "\n";

  const std::vector<std::pair<std::string, std::string>> cases = {
      // {file, what the message holds besides PATH:LINE}
      {"#version: 0.2\n" + first + "Ġ\n", ":3: "},
      {"#version: 0.2\nĠ t h\n", ":2: "},
      {"#version: 0.2\n" + first + "Ġ  t\n", ":3: "},
      {"#version: 0.2\n" + first + " Ġt\n", ":3: "},
      {first + second + "Ġ zqzq\n", ":3: the merge's token \"zqzq\""},
      {"#version: 0.2\n" + first + "ÿ Ā\n", ":3: the merge of \"ÿ\" and \"Ā\" makes \"ÿĀ\""},
      {"#version: 0.2\n" + first + second + first, ":4: the merge " + nlohmann::json(first.substr(0, first.size() - 1)).dump() + " is also on line 2"},
      {"#version: 0.2\n" + first + "\n" + second, ":3: a blank line"},
  };
  for (const auto& [text, expected] : cases) {
    INFO("merges.txt " << nlohmann::json(text).dump());
    test::write_text(merges, text);
    CHECK_THAT(load_error(vocab, merges), Contains(merges + expected));
  }

  // Accepted: CRLF line ends, no "#version" line, blank lines after the last merge.
  std::string crlf, plain;
  for (const auto& [a, b] : trained.merges) {
    crlf += spell(a) + " " + spell(b) + "\r\n";
    plain += spell(a) + " " + spell(b) + "\n";
  }
  const BpeTokenizer reference = BpeTokenizer::load(vocab, dir.file("merges.txt"));
  for (const std::string& text : {crlf, plain + "\n\n"}) {
    test::write_text(merges, text);
    const BpeTokenizer tok = BpeTokenizer::load(vocab, merges);
    CHECK(tok.encode(kCorpus) == reference.encode(kCorpus));
  }
}

TEST_CASE("pretokenize agrees with Python's regex module") {
  if (std::system("python3 -c 'import regex' > /dev/null 2>&1") != 0) {
    WARN("not compared: python3 with the `regex` module (GPT-2's own pre-tokenizer engine) was not found");
    return;
  }
  test::TempDir dir;
  const BpeTokenizer tok = byte_tokenizer(dir);
  std::vector<std::string> texts = {kCorpus, "Hello world", "a\n\nb", "  hi", " 's", "IT'S", "x\u0085y"};
  rng::Stream s(4242);
  for (int i = 0; i < 500; ++i) texts.push_back(random_text(s, false));
  test::write_text(dir.file("texts.json"), nlohmann::json(texts).dump());
  test::write_text(dir.file("split.py"),
                   "import json, sys, regex\n"
                   "pattern = regex.compile(r\"\"\"" + kPattern + "\"\"\")\n"
                   "texts = json.load(open(sys.argv[1], encoding='utf-8'))\n"
                   "json.dump([pattern.findall(t) for t in texts], open(sys.argv[2], 'w', encoding='utf-8'))\n");
  const std::string command =
      "python3 " + dir.file("split.py") + " " + dir.file("texts.json") + " " + dir.file("pieces.json");
  REQUIRE(std::system(command.c_str()) == 0);
  const nlohmann::json expected = nlohmann::json::parse(test::read_text(dir.file("pieces.json")));
  REQUIRE(expected.size() == texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    INFO("text " << nlohmann::json(texts[i]).dump());
    CHECK(strings(tok.pretokenize(texts[i])) == expected[i].get<std::vector<std::string>>());
  }
}
