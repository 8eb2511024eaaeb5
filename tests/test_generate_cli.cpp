// aiopt generate end to end on the tiny preset: the output parses, a seed fixes the tokens, the
// KV cache does not change greedy tokens, and bad flags exit 2 with a message.
#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "nn/checkpoint.hpp"
#include "nn/weights.hpp"
#include "support/files.hpp"
#include "support/process.hpp"

using aiopt::test::run_aiopt;
using aiopt::test::TempDir;

namespace {

std::vector<std::string> tiny(std::vector<std::string> more) {
  std::vector<std::string> args{"generate", "--preset", "tiny", "--threads", "1"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// The value after "key: " on its line of the output.
std::string field(const std::string& out, const std::string& key) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ": ", 0) == 0) return line.substr(key.size() + 2);
  FAIL("no '" << key << ":' line in:\n" << out);
  return {};
}

std::vector<int> tokens_of(const std::string& out) {
  std::istringstream in(field(out, "tokens"));
  std::vector<int> t;
  for (int v; in >> v;) t.push_back(v);
  return t;
}

// Whether `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, at most U+10FFFF).
bool valid_utf8(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    // The sequence's length, and the range of its second byte (which rules out the overlong
    // forms, the surrogates and what lies past U+10FFFF).
    std::size_t n = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      n = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      lo = c == 0xE0 ? 0xA0 : 0x80;
      hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      lo = c == 0xF0 ? 0x90 : 0x80;
      hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return false;
    }
    i += n;
  }
  return true;
}

// The bytes a quoted "text:" value stands for: its C escapes undone.
std::string unescaped(const std::string& quoted) {
  std::string out;
  for (std::size_t i = 1; i + 1 < quoted.size(); ++i) {
    if (quoted[i] != '\\') {
      out += quoted[i];
      continue;
    }
    const char e = quoted[++i];
    if (e == 'n') {
      out += '\n';
    } else if (e == 't') {
      out += '\t';
    } else if (e == 'x') {
      out += static_cast<char>(std::stoi(quoted.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += e;  // \\ and \"
    }
  }
  return out;
}

}  // namespace

TEST_CASE("generate's text is valid UTF-8 that escapes what is not and stands for the bytes", "[cli][generate]") {
  // Byte tokens from a random model: lone lead bytes (226 repeats, as a random model repeats its
  // last token) and cut sequences, which the line must show escaped, never raw.
  const auto r = run_aiopt(tiny({"--prompt-tokens", "195,169,104,226", "--tokens", "24"}));
  INFO(r.out);
  REQUIRE(r.exit_code == 0);
  const auto t = tokens_of(r.out);
  std::string bytes;
  for (int v : t) bytes += static_cast<char>(v);
  REQUIRE_FALSE(valid_utf8(bytes));  // the case the escaping is for
  const std::string text = field(r.out, "text");
  CHECK(valid_utf8(text));
  CHECK(text.find("\\x") != std::string::npos);
  CHECK(unescaped(text) == bytes);
}

TEST_CASE("generate prints the tokens, the text and the timings", "[cli][generate]") {
  const auto r = run_aiopt(tiny({"--prompt-tokens", "1,2,3,4", "--tokens", "12"}));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto t = tokens_of(r.out);
  REQUIRE(t.size() == 12);
  for (int v : t) CHECK((v >= 0 && v < 256));
  CHECK(field(r.out, "prompt") == "4 tokens");
  CHECK(field(r.out, "kv cache") == "f32");
  CHECK(field(r.out, "text").front() == '"');
  CHECK(std::stod(field(r.out, "prefill")) > 0.0);
  CHECK(std::stod(field(r.out, "decode")) > 0.0);
  CHECK(field(r.out, "decode").find("11 steps") != std::string::npos);
  CHECK(field(r.out, "total").find("tokens/s") != std::string::npos);

  const auto text = run_aiopt(tiny({"--prompt", "Hi\n", "--tokens", "3"}));
  REQUIRE(text.exit_code == 0);
  CHECK(field(text.out, "prompt") == "3 tokens");
}

TEST_CASE("generate: a seed fixes the sampled tokens", "[cli][generate]") {
  const auto args = tiny({"--prompt-tokens", "5,6,7", "--tokens", "16", "--temperature", "1.2", "--top-k", "50",
                          "--seed", "9"});
  const auto a = run_aiopt(args);
  const auto b = run_aiopt(args);
  REQUIRE(a.exit_code == 0);
  REQUIRE(b.exit_code == 0);
  CHECK(tokens_of(a.out) == tokens_of(b.out));
  auto other = args;
  other.back() = "10";
  const auto c = run_aiopt(other);
  REQUIRE(c.exit_code == 0);
  CHECK(tokens_of(c.out) != tokens_of(a.out));
}

TEST_CASE("generate: recompute and the f32 cache give the same greedy tokens", "[cli][generate]") {
  const auto none = run_aiopt(tiny({"--prompt-tokens", "10,20,30,40,50", "--tokens", "20", "--kv-cache", "none"}));
  const auto f32 = run_aiopt(tiny({"--prompt-tokens", "10,20,30,40,50", "--tokens", "20", "--kv-cache", "f32"}));
  const auto i8 = run_aiopt(tiny({"--prompt-tokens", "10,20,30,40,50", "--tokens", "20", "--kv-cache", "i8"}));
  REQUIRE(none.exit_code == 0);
  REQUIRE(f32.exit_code == 0);
  REQUIRE(i8.exit_code == 0);
  CHECK(tokens_of(none.out) == tokens_of(f32.out));
  CHECK(tokens_of(i8.out).size() == 20);
}

TEST_CASE("generate: bad flags exit 2 with a message", "[cli][generate]") {
  struct Bad {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Bad> cases{
      {tiny({"--prompt-tokens", "1,x"}), "--prompt-tokens"},
      {tiny({"--prompt-tokens", "1,256"}), "outside the vocabulary"},
      {tiny({"--prompt-tokens", "1", "--tokens", "500"}), "context"},
      {tiny({"--prompt-tokens", "1", "--tokens", "0"}), "--tokens"},
      {tiny({"--prompt-tokens", "1", "--kv-cache", "f16"}), "--kv-cache"},
      {tiny({"--prompt-tokens", "1", "--device", "tpu"}), "--device"},
      {tiny({"--prompt-tokens", "1", "--temperature", "-1"}), "--temperature"},
      {tiny({"--prompt-tokens", "1", "--heads", "5"}), "heads"},
      {tiny({"--prompt", "hi", "--vocab", "100"}), "--prompt"},
      {tiny({"--prompt", "hi", "--prompt-tokens", "1"}), "excludes"},
      {tiny({}), "--prompt-tokens"},
      {{"generate", "--preset", "huge", "--prompt-tokens", "1"}, "preset"},
      {{"generate", "--preset", "tiny", "--threads", "0", "--prompt-tokens", "1"}, "--threads"},
      {tiny({"--prompt-tokens", "1", "--checkpoint", "/nonexistent/model.safetensors"}), "--checkpoint"},
  };
  for (const auto& c : cases) {
    const auto r = run_aiopt(c.args);
    std::string line;
    for (const auto& a : c.args) line += a + " ";
    INFO(line << "\nstderr: " << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find(c.says) != std::string::npos);
  }
}

TEST_CASE("generate: a checkpoint gives its model, and a conflicting preset is refused", "[cli][generate]") {
  const TempDir dir;
  const std::string path = dir.file("tiny.safetensors");
  // The weights `--preset tiny --seed 4` would make, saved: the same greedy tokens either way.
  aiopt::nn::save_checkpoint(aiopt::nn::GptWeights::initialize(aiopt::nn::preset("tiny"), 4, aiopt::Device::cpu()),
                             path);
  const std::vector<std::string> prompt{"--prompt-tokens", "3,1,4,1,5", "--tokens", "10", "--seed", "4"};
  std::vector<std::string> from_file{"generate", "--checkpoint", path, "--threads", "1"};
  from_file.insert(from_file.end(), prompt.begin(), prompt.end());
  const auto loaded = run_aiopt(from_file);
  const auto random = run_aiopt(tiny(prompt));
  INFO(loaded.err);
  REQUIRE(loaded.exit_code == 0);
  REQUIRE(random.exit_code == 0);
  CHECK(tokens_of(loaded.out) == tokens_of(random.out));
  CHECK(field(loaded.out, "model").find(path) != std::string::npos);

  auto same = from_file;
  same.insert(same.end(), {"--preset", "tiny", "--layers", "2"});
  CHECK(run_aiopt(same).exit_code == 0);
  for (const std::vector<std::string>& conflict : {std::vector<std::string>{"--preset", "small"},
                                                  std::vector<std::string>{"--channels", "128"}}) {
    auto args = from_file;
    args.insert(args.end(), conflict.begin(), conflict.end());
    const auto r = run_aiopt(args);
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("conflicts with --checkpoint") != std::string::npos);
  }
}
