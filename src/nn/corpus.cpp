#include "nn/corpus.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <stdexcept>
#include <string_view>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace aiopt::nn {

// The language (both dialects share the stems and the alphabet: a–z, A–Z for names and sentence
// starts, the digits, space, '.', ',' and '\n'):
//
//   sentence  = subject [modifier] predicate "."       (the first letter capitalized)
//   subject   = det [adj] noun | numeral [adj] noun-plural | name
//   modifier  = "sa" relative-VP      the verb agrees with the subject (a subject relative)
//             | "so" NP verb          the verb agrees with that NP, not the subject (an attractor)
//             | preposition NP        that NP's number is independent of the subject's
//   predicate = dialect 0: verb [object]      dialect 1: [object] verb   (verb-final)
//
// Agreement: three noun classes, each with its own determiners and adjective endings; the
// adjective ends in its noun's class vowel (a, e, o) plus the plural mark, exactly as the
// determiner does (ka/kas, te/tes, mo/mos). Verbs end in t or n and nothing else does; the main
// verb agrees in number with the subject across the modifier:
//                 noun plural   adjective plural   determiner plural   verb sg / pl
//   dialect 0     stem + "i"    + "s"              kas tes mos         stem + "t" / + "n"
//   dialect 1     stem + "ur"   + "i"              kai tei moi         stem + "n" / + "nt"
// Nouns select their verbs and adjectives: each verb and adjective allows one or two classes.
// Words are drawn with Zipf weights (1/rank); dialect 1 ranks the same words in another order.
// Numerals (2–12) take a plural noun; names are singular and of class 0.
namespace {

constexpr std::uint64_t kLexiconSeed = 0x5eed1e71c0ffeeULL;  // the language is one for every corpus seed
constexpr int kClasses = 3;
constexpr char kClassVowel[kClasses] = {'a', 'e', 'o'};
constexpr const char* kDeterminer[kClasses] = {"k", "t", "m"};  // + class vowel + plural mark

// A categorical distribution with Zipf weights over a list of words.
struct Zipf {
  std::vector<std::uint32_t> words;        // indices into a category
  std::vector<std::uint64_t> cumulative;   // integer weights: exact, the same on every machine
};

std::size_t draw(rng::Stream& s, const Zipf& z) {
  // Multiply-shift maps 32 random bits onto [0, total) without a division.
  const std::uint64_t r = ((s.next_bits() >> 32) * z.cumulative.back()) >> 32;
  const auto it = std::upper_bound(z.cumulative.begin(), z.cumulative.end(), r);
  return z.words[static_cast<std::size_t>(it - z.cumulative.begin())];
}

bool chance(rng::Stream& s, float p) { return s.uniform() < p; }

std::size_t below(rng::Stream& s, std::size_t n) { return static_cast<std::size_t>(s.next_bits() % n); }

struct Verb {
  std::string stem;
  bool transitive = false;
  unsigned classes = 0;  // bit c: a subject of class c may take this verb
};
struct Adjective {
  std::string stem;
  unsigned classes = 0;
};
struct Noun {
  std::string stem;
  int noun_class = 0;
};

struct Lexicon {
  std::vector<Noun> nouns;
  std::vector<Verb> verbs;
  std::vector<Adjective> adjectives;
  std::vector<std::string> names;
  std::vector<std::string> prepositions = {"ve", "ru", "dal", "ipo", "gu", "sel"};
  // Per dialect: Zipf tables per class (nouns, adjectives, intransitive verbs, transitive verbs).
  Zipf noun_of_class[kClasses], adjective_of_class[kClasses];
  Zipf intransitive_of_class[kClasses], transitive_of_class[kClasses];
  Zipf names_zipf, prepositions_zipf;
};

// Builds `count` distinct words with `make`, none already in `taken`.
template <class Make>
std::vector<std::string> invent(rng::Stream& s, std::set<std::string>& taken, std::size_t count, Make make) {
  std::vector<std::string> out;
  while (out.size() < count) {
    std::string w = make(s);
    if (taken.insert(w).second) out.push_back(std::move(w));
  }
  return out;
}

std::string syllables(rng::Stream& s, std::size_t count) {
  static constexpr std::string_view onsets = "bdgklmprsvz";
  static constexpr std::string_view vowels = "aeiou";
  std::string w;
  for (std::size_t i = 0; i < count; ++i) {
    w += onsets[below(s, onsets.size())];
    w += vowels[below(s, vowels.size())];
  }
  return w;
}

unsigned class_set(rng::Stream& s) {
  // One class (60%) or two.
  const unsigned first = 1u << below(s, kClasses);
  if (chance(s, 0.6f)) return first;
  unsigned second = first;
  while (second == first) second = 1u << below(s, kClasses);
  return first | second;
}

// Zipf over the `members` in their order, after a dialect's reordering of ranks.
Zipf zipf_over(std::vector<std::uint32_t> members, int dialect) {
  if (dialect == 1) {
    // Another, fixed ranking of the same words: a deterministic shuffle.
    rng::Stream s(kLexiconSeed + 1 + members.size());
    for (std::size_t i = members.size(); i > 1; --i) std::swap(members[i - 1], members[below(s, i)]);
  }
  Zipf z;
  z.words = std::move(members);
  std::uint64_t total = 0;
  for (std::size_t r = 0; r < z.words.size(); ++r) {
    total += (std::uint64_t{1} << 20) / (r + 1);
    z.cumulative.push_back(total);
  }
  return z;
}

Lexicon make_lexicon(int dialect) {
  rng::Stream s(kLexiconSeed);
  Lexicon lex;
  std::set<std::string> taken = {"sa", "so", "ka", "kas", "kai", "te", "tes", "tei", "mo", "mos", "moi"};
  for (const auto& p : lex.prepositions) taken.insert(p);
  // Nouns end in a consonant other than t, n and s, so no noun form looks like a verb or adjective.
  const auto nouns = invent(s, taken, 120, [](rng::Stream& r) {
    static constexpr std::string_view finals = "kprlmv";
    return syllables(r, 1 + below(r, 2) + (chance(r, 0.5f) ? 1 : 0)) + finals[below(r, finals.size())];
  });
  for (std::size_t i = 0; i < nouns.size(); ++i) lex.nouns.push_back({nouns[i], static_cast<int>(i % kClasses)});
  // Verb stems end in a vowel; the agreement suffix (t, n, nt) ends every verb form.
  const auto verbs = invent(s, taken, 56, [](rng::Stream& r) { return syllables(r, 2 + (chance(r, 0.3f) ? 1 : 0)); });
  for (std::size_t i = 0; i < verbs.size(); ++i) lex.verbs.push_back({verbs[i], i % 5 < 3, class_set(s)});
  // Adjective stems end in l, r, m or k; the class vowel follows.
  const auto adjectives = invent(s, taken, 40, [](rng::Stream& r) {
    static constexpr std::string_view finals = "lrmk";
    return syllables(r, 1 + below(r, 2)) + finals[below(r, finals.size())];
  });
  for (const auto& a : adjectives) lex.adjectives.push_back({a, class_set(s)});
  lex.names = invent(s, taken, 14, [](rng::Stream& r) {
    std::string w = syllables(r, 2);
    w[0] = static_cast<char>(w[0] - 'a' + 'A');
    return w;
  });

  for (int c = 0; c < kClasses; ++c) {
    std::vector<std::uint32_t> n, a, vi, vt;
    for (std::uint32_t i = 0; i < lex.nouns.size(); ++i)
      if (lex.nouns[i].noun_class == c) n.push_back(i);
    for (std::uint32_t i = 0; i < lex.adjectives.size(); ++i)
      if (lex.adjectives[i].classes & (1u << c)) a.push_back(i);
    for (std::uint32_t i = 0; i < lex.verbs.size(); ++i)
      if (lex.verbs[i].classes & (1u << c)) (lex.verbs[i].transitive ? vt : vi).push_back(i);
    lex.noun_of_class[c] = zipf_over(n, dialect);
    lex.adjective_of_class[c] = zipf_over(a, dialect);
    lex.intransitive_of_class[c] = zipf_over(vi, dialect);
    lex.transitive_of_class[c] = zipf_over(vt, dialect);
    // The fixed lexicon seed gives every class words of each kind; this guards edits to it.
    if (n.empty() || a.empty() || vi.empty() || vt.empty())
      throw std::logic_error("synthetic corpus: the lexicon leaves noun class " + std::to_string(c) +
                             " without nouns, adjectives or verbs of both kinds");
  }
  std::vector<std::uint32_t> all_names(lex.names.size()), all_preps(lex.prepositions.size());
  for (std::uint32_t i = 0; i < all_names.size(); ++i) all_names[i] = i;
  for (std::uint32_t i = 0; i < all_preps.size(); ++i) all_preps[i] = i;
  lex.names_zipf = zipf_over(all_names, dialect);
  lex.prepositions_zipf = zipf_over(all_preps, dialect);
  return lex;
}

class SentenceWriter {
 public:
  SentenceWriter(const Lexicon& lex, int dialect, std::string& out) : lex_(lex), dialect_(dialect), out_(out) {}

  void sentence(rng::Stream& s) {
    const std::size_t start = out_.size();
    // The subject.
    int subject_class = 0;
    bool plural = false;
    const float kind = s.uniform();
    if (kind < 0.08f) {
      word(lex_.names[draw(s, lex_.names_zipf)]);
    } else if (kind < 0.16f) {
      plural = true;
      subject_class = static_cast<int>(below(s, kClasses));
      word(std::to_string(2 + below(s, 11)));
      if (chance(s, 0.3f) && dialect_ == 0) adjective(s, subject_class, true);
      noun(s, subject_class, true);
      if (chance(s, 0.3f) && dialect_ == 1) adjective(s, subject_class, true);
    } else {
      plural = chance(s, 0.4f);
      subject_class = static_cast<int>(below(s, kClasses));
      noun_phrase(s, subject_class, plural, 0.35f);
    }
    // The modifier between the subject and its verb.
    const float modifier = s.uniform();
    if (modifier < 0.2f) {
      word("sa");
      predicate(s, subject_class, plural, 0.5f);
    } else if (modifier < 0.35f) {
      word("so");
      const int c = static_cast<int>(below(s, kClasses));
      const bool pl = chance(s, 0.5f);
      noun_phrase(s, c, pl, 0.2f);
      verb(s, lex_.transitive_of_class[c], pl);
    } else if (modifier < 0.55f) {
      preposition_phrase(s);
    }
    predicate(s, subject_class, plural, 0.65f);
    if (out_.back() == ' ') out_.pop_back();
    out_ += '.';
    if (out_[start] >= 'a' && out_[start] <= 'z') out_[start] = static_cast<char>(out_[start] - 'a' + 'A');
  }

 private:
  void word(std::string_view w) {
    out_ += w;
    out_ += ' ';
  }

  void noun(rng::Stream& s, int c, bool plural) {
    out_ += lex_.nouns[draw(s, lex_.noun_of_class[c])].stem;
    if (plural) out_ += dialect_ == 0 ? "i" : "ur";
    out_ += ' ';
  }

  // The class vowel and plural mark that determiners and adjectives share.
  void agreement(int c, bool plural) {
    out_ += kClassVowel[c];
    if (plural) out_ += dialect_ == 0 ? 's' : 'i';
    out_ += ' ';
  }

  void adjective(rng::Stream& s, int c, bool plural) {
    out_ += lex_.adjectives[draw(s, lex_.adjective_of_class[c])].stem;
    agreement(c, plural);
  }

  // det [adj] noun (dialect 0) or det noun [adj] (dialect 1).
  void noun_phrase(rng::Stream& s, int c, bool plural, float p_adjective) {
    out_ += kDeterminer[c];
    agreement(c, plural);
    const bool adj = chance(s, p_adjective);
    if (adj && dialect_ == 0) adjective(s, c, plural);
    noun(s, c, plural);
    if (adj && dialect_ == 1) adjective(s, c, plural);
  }

  void preposition_phrase(rng::Stream& s) {
    word(lex_.prepositions[draw(s, lex_.prepositions_zipf)]);
    noun_phrase(s, static_cast<int>(below(s, kClasses)), chance(s, 0.5f), 0.25f);
  }

  void verb(rng::Stream& s, const Zipf& from, bool plural) {
    out_ += lex_.verbs[draw(s, from)].stem;
    if (dialect_ == 0)
      out_ += plural ? "n" : "t";
    else
      out_ += plural ? "nt" : "n";
    out_ += ' ';
  }

  // A verb agreeing with (subject_class, plural), with an object (and the object's optional
  // prepositional phrase) when transitive; the object precedes the verb in dialect 1.
  void predicate(rng::Stream& s, int subject_class, bool plural, float p_transitive) {
    const bool transitive = chance(s, p_transitive);
    const Zipf& verbs = transitive ? lex_.transitive_of_class[subject_class] : lex_.intransitive_of_class[subject_class];
    if (dialect_ == 0) verb(s, verbs, plural);
    if (transitive) {
      if (chance(s, 0.1f)) {
        word(lex_.names[draw(s, lex_.names_zipf)]);
      } else {
        noun_phrase(s, static_cast<int>(below(s, kClasses)), chance(s, 0.4f), 0.3f);
        if (chance(s, 0.15f)) preposition_phrase(s);
      }
    }
    if (dialect_ == 1) verb(s, verbs, plural);
  }

  const Lexicon& lex_;
  int dialect_;
  std::string& out_;
};

}  // namespace

std::string SyntheticCorpus::generate(std::size_t bytes, std::uint64_t stream) const {
  if (dialect != 0 && dialect != 1)
    throw InputError("synthetic corpus: dialect " + std::to_string(dialect) + " is unknown; allowed: 0, 1");
  const Lexicon lex = make_lexicon(dialect);
  // One sequential generator per (seed, dialect, stream): independent streams from one seed.
  rng::Stream s(rng::bits(seed, stream * 2 + static_cast<std::uint64_t>(dialect)));
  std::string text;
  text.reserve(bytes + 256);
  SentenceWriter writer(lex, dialect, text);
  // Paragraphs of 4–11 sentences, separated by a newline; sentences by a space.
  std::size_t left_in_paragraph = 4 + below(s, 8);
  while (text.size() < bytes) {
    writer.sentence(s);
    if (--left_in_paragraph == 0) {
      text += '\n';
      left_in_paragraph = 4 + below(s, 8);
    } else {
      text += ' ';
    }
  }
  text.resize(bytes);
  return text;
}

double unigram_entropy(std::span<const std::int32_t> tokens) {
  if (tokens.empty()) return 0.0;
  std::vector<std::size_t> counts(256, 0);
  for (std::int32_t t : tokens) {
    if (t < 0) throw InputError("unigram_entropy: token " + std::to_string(t) + " is negative");
    if (static_cast<std::size_t>(t) >= counts.size()) counts.resize(static_cast<std::size_t>(t) + 1, 0);
    ++counts[static_cast<std::size_t>(t)];
  }
  const double n = static_cast<double>(tokens.size());
  double h = 0.0;
  for (std::size_t c : counts)
    if (c > 0) {
      const double p = static_cast<double>(c) / n;
      h -= p * std::log(p);
    }
  return h;
}

namespace {

std::vector<std::int32_t> as_tokens(std::string_view bytes) {
  std::vector<std::int32_t> out(bytes.size());
  for (std::size_t i = 0; i < bytes.size(); ++i) out[i] = static_cast<unsigned char>(bytes[i]);
  return out;
}

}  // namespace

TokenSplit synthetic_tokens(const SyntheticCorpus& corpus, std::size_t train_bytes, std::size_t validation_bytes) {
  return {as_tokens(corpus.generate(train_bytes, 0)), as_tokens(corpus.generate(validation_bytes, 1))};
}

TokenSplit file_tokens(const std::filesystem::path& path, double validation_fraction, std::size_t min_split) {
  const std::string where = "data file '" + path.string() + "'";
  if (!(validation_fraction > 0.0 && validation_fraction <= 0.5))
    throw InputError(where + ": validation fraction " + std::to_string(validation_fraction) +
                     " is not allowed; it must be in (0, 0.5]");
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw InputError(where + " is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("cannot read " + where + ": " + std::strerror(errno));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw InputError("cannot read " + where + ": " + std::strerror(errno));
  const std::size_t validation = static_cast<std::size_t>(static_cast<double>(bytes.size()) * validation_fraction);
  const std::size_t train = bytes.size() - validation;
  if (train < min_split || validation < min_split)
    throw InputError(where + " has " + std::to_string(bytes.size()) + " bytes: too small to split into " +
                     std::to_string(train) + " training and " + std::to_string(validation) +
                     " validation tokens with at least " + std::to_string(min_split) + " in each");
  const std::string_view all(bytes);
  return {as_tokens(all.substr(0, train)), as_tokens(all.substr(train))};
}

}  // namespace aiopt::nn
