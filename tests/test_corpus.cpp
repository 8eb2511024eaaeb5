// The training data: the synthetic language's determinism, alphabet and grammar
// (parsed back from the text with the rules nn/corpus.cpp documents), its
// unigram entropy, file splits, and the batch sampler and validation windows.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "nn/batches.hpp"
#include "nn/corpus.hpp"
#include "support/files.hpp"

using namespace aiopt;
using nn::SyntheticCorpus;

namespace {

std::vector<std::string> sentences(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text) {
    if (c == '.') {
      out.push_back(cur);
      cur.clear();
    } else if (!(cur.empty() && (c == ' ' || c == '\n'))) {
      cur += c;
    }
  }
  return out;  // the last, cut sentence (no '.') is dropped
}

std::vector<std::string> words(const std::string& sentence) {
  std::istringstream in(sentence);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool ends_with(const std::string& w, const std::string& suffix) {
  return w.size() >= suffix.size() && w.compare(w.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Only verbs end in t or n (nn/corpus.cpp's lexicon rule).
bool is_verb(const std::string& w) { return !w.empty() && (w.back() == 't' || w.back() == 'n'); }

// A verb's number: dialect 0 singular "-t", plural "-n"; dialect 1 singular
// "-n", plural "-nt".
bool verb_is_plural(const std::string& w, int dialect) { return dialect == 0 ? w.back() == 'n' : ends_with(w, "nt"); }

// The subject's number from its first word: a determiner says it, a numeral is
// plural, a name singular.
bool subject_is_plural(std::string first, int dialect) {
  first[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(first[0])));
  if (std::isdigit(static_cast<unsigned char>(first[0]))) return true;
  const std::set<std::string> plural_dets =
      dialect == 0 ? std::set<std::string>{"kas", "tes", "mos"} : std::set<std::string>{"kai", "tei", "moi"};
  return plural_dets.count(first) > 0;
}

std::vector<std::int32_t> bytes_of(const std::string& s) { return std::vector<std::int32_t>(s.begin(), s.end()); }

}  // namespace

TEST_CASE("the synthetic corpus is deterministic per seed, dialect and stream", "[corpus]") {
  const SyntheticCorpus a{7, 0}, b{8, 0}, d1{7, 1};
  const auto text = a.generate(20000);
  CHECK(text.size() == 20000);
  CHECK(text == a.generate(20000));
  CHECK(text.substr(0, 5000) == a.generate(5000));  // a prefix of a longer run
  CHECK(text != b.generate(20000));
  CHECK(text != a.generate(20000, 1));  // train and validation streams differ
  CHECK(text != d1.generate(20000));
  // Golden starts: the same text on every machine, and a change to the language
  // (which every trained result depends on) must be deliberate.
  CHECK(SyntheticCorpus{1, 0}.generate(60) == "4 kesomi sa mepen tes riles mamiburi vimen. Mo dar livut Pub");
  CHECK(SyntheticCorpus{1, 1}.generate(60) == "Te mamibur boran. Tei vedekemur gu te ripil Rabi zumint. 9 m");
  CHECK_THROWS_AS((SyntheticCorpus{1, 2}.generate(10)), InputError);
}

TEST_CASE("the corpus is printable text over a small alphabet", "[corpus]") {
  for (int dialect : {0, 1}) {
    const auto text = SyntheticCorpus{3, dialect}.generate(200000);
    std::set<char> alphabet;
    for (char c : text) {
      const auto u = static_cast<unsigned char>(c);
      REQUIRE((u == '\n' || (u >= 32 && u < 127)));
      alphabet.insert(c);
    }
    CHECK(alphabet.size() >= 30);  // letters, capitals, digits, space, '.', '\n'
    CHECK(alphabet.size() <= 70);
    CHECK(std::count(text.begin(), text.end(), '.') > 2000);  // sentences of ~10 words
  }
}

TEST_CASE("the main verb agrees with the subject across relative clauses and phrases", "[corpus]") {
  for (int dialect : {0, 1}) {
    const auto text = SyntheticCorpus{11, dialect}.generate(300000);
    std::size_t checked = 0, plural = 0, with_modifier = 0, relative_checked = 0;
    for (const auto& s : sentences(text)) {
      const auto w = words(s);
      REQUIRE(w.size() >= 2);
      // Dialect 0 is SVO with nothing after the object but phrases without
      // verbs: the main verb is the last verb. Dialect 1 is verb-final: the
      // last word.
      std::string main_verb;
      if (dialect == 1) {
        main_verb = w.back();
      } else {
        for (const auto& x : w)
          if (is_verb(x)) main_verb = x;
      }
      INFO("dialect " << dialect << ": " << s);
      REQUIRE(is_verb(main_verb));
      const bool pl = subject_is_plural(w[0], dialect);
      REQUIRE(verb_is_plural(main_verb, dialect) == pl);
      ++checked;
      plural += pl;
      const bool modified =
          std::any_of(w.begin(), w.end(), [](const std::string& x) { return x == "sa" || x == "so"; });
      with_modifier += modified;
      // A subject relative "sa V ..." (dialect 0) agrees with the subject too.
      const auto sa = std::find(w.begin(), w.end(), "sa");
      if (dialect == 0 && sa != w.end()) {
        REQUIRE(is_verb(*(sa + 1)));
        REQUIRE(verb_is_plural(*(sa + 1), dialect) == pl);
        ++relative_checked;
      }
    }
    CHECK(checked > 4000);
    // Both numbers and the long-range cases are well represented.
    CHECK(plural > checked / 4);
    CHECK(plural < 3 * checked / 4);
    CHECK(with_modifier > checked / 5);
    if (dialect == 0) CHECK(relative_checked > checked / 10);
  }
}

TEST_CASE("adjectives agree with their determiner's class and number", "[corpus]") {
  // Dialect 0: det [adj] noun; an adjective ends in the determiner's vowel and
  // plural mark (ka → -a, kas → -as), a noun in a consonant or "i".
  const auto text = SyntheticCorpus{5, 0}.generate(200000);
  const std::set<std::string> dets = {"ka", "kas", "te", "tes", "mo", "mos"};
  std::size_t adjectives = 0;
  for (const auto& s : sentences(text)) {
    auto w = words(s);
    w[0][0] = static_cast<char>(std::tolower(static_cast<unsigned char>(w[0][0])));
    for (std::size_t i = 0; i + 1 < w.size(); ++i) {
      if (!dets.count(w[i])) continue;
      const std::string& next = w[i + 1];
      const std::string mark = w[i].substr(1);  // "a", "as", ...
      const char last = next.back();
      const bool looks_adjective = last == 'a' || last == 'e' || last == 'o' || ends_with(next, "as") ||
                                   ends_with(next, "es") || ends_with(next, "os");
      if (!looks_adjective) continue;
      INFO(s << " at " << w[i] << " " << next);
      REQUIRE(ends_with(next, mark));
      if (mark.size() == 1) REQUIRE(next.back() != 's');
      ++adjectives;
    }
  }
  CHECK(adjectives > 2000);
}

TEST_CASE(
    "unigram entropy: the corpus between 2.5 and 3.3 nats, and exact on "
    "known inputs",
    "[corpus]") {
  // English text has a byte unigram entropy near 2.9 nats (4.1 bits); our
  // language, with five vowels and a dozen consonants, measures 2.87 (dialect
  // 0) and 2.90 (dialect 1) nats. The range keeps it a text-like target:
  // uniform over the ~45 symbols used would be ln 45 = 3.8.
  for (int dialect : {0, 1}) {
    const auto h = nn::unigram_entropy(bytes_of(SyntheticCorpus{1, dialect}.generate(1 << 20)));
    INFO("dialect " << dialect << ": " << h << " nats");
    CHECK(h > 2.5);
    CHECK(h < 3.3);
  }
  CHECK(nn::unigram_entropy(bytes_of("aaaa")) == 0.0);
  CHECK(nn::unigram_entropy(bytes_of("abab")) == Approx(std::log(2.0)).epsilon(1e-12));
  CHECK(nn::unigram_entropy(bytes_of("abcd")) == Approx(std::log(4.0)).epsilon(1e-12));
}

TEST_CASE("synthetic_tokens: train and validation from different streams", "[corpus]") {
  const auto split = nn::synthetic_tokens(SyntheticCorpus{2, 0}, 30000, 10000);
  REQUIRE(split.train.size() == 30000);
  REQUIRE(split.validation.size() == 10000);
  CHECK(split.train == bytes_of(SyntheticCorpus{2, 0}.generate(30000, 0)));
  CHECK(split.validation == bytes_of(SyntheticCorpus{2, 0}.generate(10000, 1)));
  CHECK(!std::equal(split.validation.begin(), split.validation.end(), split.train.begin()));
}

TEST_CASE("file_tokens splits a file's bytes and names the file in errors", "[corpus]") {
  test::TempDir dir;
  const auto path = dir.file("data.txt");
  std::string content;
  for (int i = 0; i < 1000; ++i) content += static_cast<char>(i % 256);
  test::write_text(path, content);
  const auto split = nn::file_tokens(path, 0.1, 50);
  REQUIRE(split.train.size() == 900);
  REQUIRE(split.validation.size() == 100);
  CHECK(split.train[255] == 255);  // bytes are unsigned tokens
  CHECK(split.validation[0] == 900 % 256);
  CHECK_THROWS_WITH(nn::file_tokens(path, 0.1, 200), Catch::Contains("data.txt") && Catch::Contains("too small"));
  CHECK_THROWS_AS(nn::file_tokens(path, 0.1, 200), InputError);
  CHECK_THROWS_WITH(nn::file_tokens(dir.file("missing.txt"), 0.1, 1), Catch::Contains("missing.txt"));
  CHECK_THROWS_AS(nn::file_tokens(dir.file("missing.txt"), 0.1, 1), InputError);
  CHECK_THROWS_AS(nn::file_tokens(path, 0.0, 1), InputError);
  CHECK_THROWS_AS(nn::file_tokens(path, 0.6, 1), InputError);
}

TEST_CASE(
    "BatchSampler: targets are the inputs shifted by one, and resume "
    "repeats the windows",
    "[batches]") {
  std::vector<std::int32_t> tokens(5000);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int32_t>(i);  // token = position
  nn::BatchSampler sampler(tokens, 4, 16, 99);
  std::vector<nn::Batch> first;
  for (int i = 0; i < 5; ++i) first.push_back(sampler.next());
  CHECK(sampler.draws() == 20);
  std::set<std::int32_t> starts;
  for (const auto& b : first) {
    REQUIRE(b.batch == 4);
    REQUIRE(b.seq_len == 16);
    REQUIRE(b.inputs.size() == 64);
    for (std::size_t r = 0; r < 4; ++r) {
      starts.insert(b.inputs[r * 16]);
      for (std::size_t t = 0; t < 16; ++t) {
        REQUIRE(b.targets[r * 16 + t] == b.inputs[r * 16 + t] + 1);
        if (t > 0) REQUIRE(b.inputs[r * 16 + t] == b.inputs[r * 16 + t - 1] + 1);  // contiguous windows
      }
      REQUIRE(b.targets[r * 16 + 15] < 5000);
    }
  }
  CHECK(starts.size() > 15);  // random offsets, not one window repeated

  nn::BatchSampler resumed(tokens, 4, 16, 99);
  resumed.set_draws(8);
  for (int i = 2; i < 5; ++i) {
    const auto b = resumed.next();
    CHECK(b.inputs == first[i].inputs);
    CHECK(b.targets == first[i].targets);
  }
  nn::BatchSampler other_seed(tokens, 4, 16, 100);
  CHECK(other_seed.next().inputs != first[0].inputs);

  // The smallest corpus: one window, at offset 0.
  std::vector<std::int32_t> tiny = {1, 2, 3};
  nn::BatchSampler one(tiny, 2, 2, 1);
  const auto b = one.next();
  CHECK(b.inputs == std::vector<std::int32_t>{1, 2, 1, 2});
  CHECK(b.targets == std::vector<std::int32_t>{2, 3, 2, 3});

  CHECK_THROWS_AS(nn::BatchSampler(tiny, 1, 3, 1), InputError);
  CHECK_THROWS_AS(nn::BatchSampler(tokens, 0, 3, 1), InputError);
  CHECK_THROWS_AS(nn::BatchSampler(tokens, 1, 0, 1), InputError);
}

TEST_CASE("validation_batches: fixed, non-overlapping, evenly spread windows", "[batches]") {
  std::vector<std::int32_t> tokens(1001);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int32_t>(i);
  const auto a = nn::validation_batches(tokens, 3, 10, 4);  // 100 windows fit; 12 are used
  const auto again = nn::validation_batches(tokens, 3, 10, 4);
  REQUIRE(a.size() == 4);
  std::vector<std::int32_t> starts;
  for (std::size_t j = 0; j < a.size(); ++j) {
    CHECK(a[j].inputs == again[j].inputs);
    CHECK(a[j].targets == again[j].targets);
    for (std::size_t r = 0; r < 3; ++r) {
      starts.push_back(a[j].inputs[r * 10]);
      for (std::size_t t = 0; t < 10; ++t) REQUIRE(a[j].targets[r * 10 + t] == a[j].inputs[r * 10 + t] + 1);
    }
  }
  for (std::size_t i = 1; i < starts.size(); ++i) {
    REQUIRE(starts[i] % 10 == 0);
    REQUIRE(starts[i] - starts[i - 1] >= 80);  // evenly spread: 100/12 windows apart, rounded down
  }
  CHECK(starts.front() == 0);
  CHECK(starts.back() >= 900);

  CHECK(nn::validation_batches(tokens, 50, 10, 100).size() == 2);  // all 100 windows
  CHECK_THROWS_AS(nn::validation_batches(tokens, 200, 10, 1), InputError);
  CHECK_THROWS_AS(nn::validation_batches(std::vector<std::int32_t>(10), 1, 10, 1), InputError);
  CHECK_THROWS_AS(nn::validation_batches(tokens, 1, 10, 0), InputError);
}
