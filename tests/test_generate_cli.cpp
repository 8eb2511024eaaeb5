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

}  // namespace

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
