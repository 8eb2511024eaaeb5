// Published checkpoints: a Hugging Face GPT-2 folder (model.safetensors with "format": "pt",
// config.json) or its shards load to the very weights that were saved, whatever their width;
// config.json is checked against the tensors, and what aiopt does not implement is refused naming
// the key; the checkpoint's identity (bytes, content hash, config) is reported; and `aiopt
// generate` runs such a folder as it runs its own files.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "nn/checkpoint.hpp"
#include "nn/gpt.hpp"
#include "nn/model_cache.hpp"
#include "nn/pretrained.hpp"
#include "support/bpe_files.hpp"
#include "support/files.hpp"
#include "support/input_error.hpp"
#include "support/model_cache.hpp"
#include "support/process.hpp"
#include "support/safetensors_writer.hpp"

using namespace aiopt;
using namespace aiopt::nn;
using namespace aiopt::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The model: 3 layers, 96 channels, 4 heads (96 is no published GPT-2 width, so only
// config.json can say 4), context 32, vocabulary 300.
const GptConfig small_gpt2{.layers = 3, .channels = 96, .heads = 4, .context = 32, .vocab = 300};

GptWeights random_model(std::uint64_t seed = 7) { return GptWeights::initialize(small_gpt2, seed, Device::cpu()); }

bool same_weights(const GptWeights& a, const GptWeights& b) {
  const auto x = a.named();
  const auto y = b.named();
  if (x.size() != y.size()) return false;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (x[i].first != y[i].first || x[i].second->shape() != y[i].second->shape()) return false;
    if (std::memcmp(x[i].second->data<float>(), y[i].second->data<float>(), x[i].second->bytes()) != 0) return false;
  }
  return true;
}

std::vector<float> logits_of(GptWeights weights, const std::vector<std::int32_t>& tokens) {
  Gpt model(std::move(weights));
  const Tensor out = model.forward(tokens, 1, tokens.size(), Logits::all);
  return {out.data<float>(), out.data<float>() + out.numel()};
}

json read_json(const std::string& path) { return json::parse(read_text(path)); }

}  // namespace

TEST_CASE("a Hugging Face GPT-2 folder loads to the weights that were saved", "[pretrained]") {
  TempDir dir;
  const GptWeights original = random_model();
  write_gpt2_folder(dir.file("gpt2"), original);

  const PretrainedModel m = load_pretrained(dir.file("gpt2"), Device::cpu());
  CHECK(m.weights.config.describe() == small_gpt2.describe());
  CHECK(m.weights.config.heads == 4);  // from config.json: no tensor holds it
  CHECK(same_weights(m.weights, original));
  CHECK_FALSE(m.tokenizer);
  CHECK(m.load_ms > 0.0);

  // The identity a report records.
  CHECK(m.info.format == "gpt2");
  CHECK(m.info.bytes == fs::file_size(dir.file("gpt2/model.safetensors")));
  CHECK(m.info.files == std::vector<std::string>{dir.file("gpt2/model.safetensors"), dir.file("gpt2/config.json")});
  CHECK(m.info.hash.starts_with("xxh3-64:"));
  CHECK(m.info.hash.size() == 8 + 16);
  const json j = json::parse(m.info.to_json().dump());
  CHECK(j.at("config").at("heads") == 4);
  CHECK(j.at("config").at("parameters") == small_gpt2.parameter_count());
  CHECK(j.at("tokenizer").is_null());

  // The same logits as the model that was saved, on fresh random tokens.
  std::vector<std::int32_t> tokens(20);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::int32_t>(rng::bits(31, i) % 300);
  CHECK(logits_of(load_pretrained(dir.file("gpt2"), Device::cpu()).weights, tokens) == logits_of(random_model(), tokens));
}

TEST_CASE("the content hash follows the bytes of the weights", "[pretrained]") {
  TempDir dir;
  write_gpt2_folder(dir.file("a"), random_model(7));
  write_gpt2_folder(dir.file("b"), random_model(7));
  write_gpt2_folder(dir.file("c"), random_model(8));
  const std::string a = inspect_checkpoint(dir.file("a")).hash;
  CHECK(inspect_checkpoint(dir.file("b")).hash == a);
  CHECK(inspect_checkpoint(dir.file("c")).hash != a);
}

TEST_CASE("config.json's n_layer n_embd n_positions and vocab_size are checked against the tensors", "[pretrained]") {
  TempDir dir;
  write_gpt2_folder(dir.file("m"), random_model());
  const std::string config = dir.file("m/config.json");
  const json good = read_json(config);
  const auto refused_with = [&](const char* key, const json& value, const std::vector<std::string>& parts) {
    json j = good;
    j[key] = value;
    write_text(config, j.dump());
    std::vector<std::string> all = parts;
    all.push_back(config);
    check_input_error([&] { load_pretrained(dir.file("m"), Device::cpu()); }, all);
  };
  SECTION("n_embd") { refused_with("n_embd", 128, {"n_embd"}); }
  SECTION("n_layer") { refused_with("n_layer", 4, {"n_layer"}); }
  SECTION("n_positions") { refused_with("n_positions", 64, {"n_positions"}); }
  SECTION("vocab_size") { refused_with("vocab_size", 301, {"vocab_size"}); }
  SECTION("n_head not dividing n_embd") { refused_with("n_head", 5, {"heads (5)"}); }
  SECTION("n_head not an integer") { refused_with("n_head", "four", {"\"n_head\" must be a positive integer"}); }
}

TEST_CASE("what aiopt's GPT does not compute is refused naming the key", "[pretrained]") {
  TempDir dir;
  write_gpt2_folder(dir.file("m"), random_model());
  const std::string config = dir.file("m/config.json");
  const json good = read_json(config);
  const auto refused_with = [&](const char* key, const json& value, const std::string& part) {
    json j = good;
    j[key] = value;
    write_text(config, j.dump());
    check_input_error([&] { load_pretrained(dir.file("m"), Device::cpu()); }, {config, std::string("\"") + key + "\"", part});
  };
  SECTION("another architecture") { refused_with("model_type", "gpt_neox", "GPT-2-family"); }
  SECTION("an activation other than the tanh GELU") { refused_with("activation_function", "relu", "gelu_new"); }
  SECTION("an exact GELU") { refused_with("activation_function", "gelu", "tanh GELU"); }
  SECTION("a wider MLP") { refused_with("n_inner", 512, "4 × n_embd"); }
  SECTION("untied embeddings") { refused_with("tie_word_embeddings", false, "ties the output head"); }
  SECTION("cross-attention") { refused_with("add_cross_attention", true, "without cross-attention"); }
  SECTION("attention scaled by the layer") { refused_with("scale_attn_by_inverse_layer_idx", true, "layer index"); }
  SECTION("the same tanh GELU by its other name loads") {
    json j = good;
    j["activation_function"] = "gelu_pytorch_tanh";
    write_text(config, j.dump());
    CHECK(load_pretrained(dir.file("m"), Device::cpu()).weights.config.heads == 4);
  }
}

TEST_CASE("a damaged published folder is refused naming the file and the tensor", "[pretrained]") {
  TempDir dir;
  const GptWeights original = random_model();
  const std::string folder = dir.file("m"), weights = dir.file("m/model.safetensors");
  write_gpt2_folder(folder, original);
  std::vector<RawTensor> tensors = gpt2_tensors(original);
  const auto load = [&] { load_pretrained(folder, Device::cpu()); };

  SECTION("a missing tensor") {
    std::erase_if(tensors, [](const RawTensor& t) { return t.name == "transformer.h.2.ln_2.bias"; });
    write_file(weights, tensors, {{"format", "pt"}});
    check_input_error(load, {weights, "'transformer.h.2.ln_2.bias' is missing"});
  }
  SECTION("a wrong shape") {
    for (auto& t : tensors)
      if (t.name == "transformer.h.0.mlp.c_fc.bias") t = {t.name, "F32", {100}, f32_bytes(random_values(100, 3))};
    write_file(weights, tensors, {{"format", "pt"}});
    check_input_error(load, {weights, "transformer.h.0.mlp.c_fc.bias", "(100)"});
  }
  SECTION("an output head that is not the token embedding") {
    for (auto& t : tensors)
      if (t.name == "lm_head.weight") t.bytes = f32_bytes(random_values(300 * 96, 9));
    write_file(weights, tensors, {{"format", "pt"}});
    check_input_error(load, {weights, "lm_head.weight"});
  }
  SECTION("a format that is neither aiopt-gpt nor pt") {
    write_file(weights, tensors, {{"format", "tf"}});
    check_input_error(load, {weights, "'tf'", "pt"});
  }
  SECTION("a folder without weights") {
    fs::remove(weights);
    check_input_error(load, {folder, "model.safetensors"});
  }
  SECTION("a vocabulary without its merges") {
    write_text(dir.file("m/vocab.json"), "{}");
    check_input_error(load, {"vocab.json", "merges.txt"});
  }
}

TEST_CASE("sharded weights load through model.safetensors.index.json", "[pretrained]") {
  TempDir dir;
  const GptWeights original = random_model();
  const std::string folder = dir.file("m");
  fs::create_directories(folder);
  write_text(dir.file("m/config.json"), gpt2_config_json(small_gpt2).dump());
  // The blocks in a second file, the rest in the first, as save_pretrained shards by size.
  std::vector<RawTensor> first, second;
  json map = json::object();
  for (RawTensor& t : gpt2_tensors(original)) {
    const bool block = t.name.starts_with("transformer.h.");
    map[t.name] = block ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors";
    (block ? second : first).push_back(std::move(t));
  }
  write_file(dir.file("m/model-00001-of-00002.safetensors"), first, {{"format", "pt"}});
  write_file(dir.file("m/model-00002-of-00002.safetensors"), second, {{"format", "pt"}});
  const json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", map}};
  write_text(dir.file("m/model.safetensors.index.json"), index.dump());

  const PretrainedModel m = load_pretrained(folder, Device::cpu());
  CHECK(same_weights(m.weights, original));
  CHECK(m.info.bytes == fs::file_size(dir.file("m/model-00001-of-00002.safetensors")) +
                            fs::file_size(dir.file("m/model-00002-of-00002.safetensors")));
  CHECK(m.info.files.size() == 3);

  SECTION("an index naming a shard that is not there") {
    fs::remove(dir.file("m/model-00002-of-00002.safetensors"));
    check_input_error([&] { load_pretrained(folder, Device::cpu()); }, {"model-00002-of-00002.safetensors"});
  }
  SECTION("an index placing a tensor in the wrong shard") {
    json wrong = index;
    wrong["weight_map"]["transformer.wte.weight"] = "model-00002-of-00002.safetensors";
    write_text(dir.file("m/model.safetensors.index.json"), wrong.dump());
    check_input_error([&] { load_pretrained(folder, Device::cpu()); }, {"transformer.wte.weight"});
  }
}

TEST_CASE("a lone GPT-2 file takes its head count from the caller", "[pretrained]") {
  TempDir dir;
  const GptWeights original = random_model();
  write_file(dir.file("lone.safetensors"), gpt2_tensors(original), {{"format", "pt"}});
  check_input_error([&] { load_pretrained(dir.file("lone.safetensors"), Device::cpu()); },
                {dir.file("lone.safetensors"), "give --heads"});
  const PretrainedModel m = load_pretrained(dir.file("lone.safetensors"), Device::cpu(), 4);
  CHECK(m.weights.config.heads == 4);
  CHECK(same_weights(m.weights, original));
}

// ---- through the CLI

TEST_CASE("aiopt generate runs a published folder as it runs the same weights in its own file", "[pretrained][cli]") {
  TempDir dir;
  const GptWeights original = random_model();
  write_gpt2_folder(dir.file("hf"), original);
  save_checkpoint(original, dir.file("own.safetensors"));
  const auto generate = [&](const std::string& checkpoint, const std::string& logits,
                            std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"generate", "--checkpoint", checkpoint, "--prompt-tokens", "5,17,250,3",
                                     "--tokens", "12", "--logits", logits};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_aiopt(args);
  };
  const ProcessResult hf = generate(dir.file("hf"), dir.file("hf.json"));
  const ProcessResult own = generate(dir.file("own.safetensors"), dir.file("own.json"));
  INFO(hf.err);
  REQUIRE(hf.exit_code == 0);
  REQUIRE(own.exit_code == 0);
  CHECK(hf.out.find("(" + dir.file("hf") + ": gpt2, ") != std::string::npos);
  CHECK(hf.out.find("xxh3-64:") != std::string::npos);
  const json a = read_json(dir.file("hf.json")), b = read_json(dir.file("own.json"));
  CHECK(a.at("tokens").size() == 16);
  CHECK(a.at("tokens") == b.at("tokens"));
  CHECK(a.at("logits").size() == 16);
  CHECK(a.at("logits").at(0).size() == 300);
  CHECK(a.at("logits") == b.at("logits"));

  // A lone file with --heads, and the exit code 2 cases.
  write_file(dir.file("lone.safetensors"), gpt2_tensors(original), {{"format", "pt"}});
  CHECK(generate(dir.file("lone.safetensors"), dir.file("lone.json"), {"--heads", "4"}).exit_code == 0);
  CHECK(read_json(dir.file("lone.json")).at("tokens") == a.at("tokens"));
  const ProcessResult no_heads = generate(dir.file("lone.safetensors"), dir.file("x.json"));
  CHECK(no_heads.exit_code == 2);
  CHECK(no_heads.err.find("--heads") != std::string::npos);
  const ProcessResult conflict = generate(dir.file("hf"), dir.file("x.json"), {"--heads", "8"});
  CHECK(conflict.exit_code == 2);
  CHECK(conflict.err.find("--heads 8 conflicts") != std::string::npos);
  json config = read_json(dir.file("hf/config.json"));
  config["model_type"] = "llama";
  write_text(dir.file("hf/config.json"), config.dump());
  const ProcessResult other = generate(dir.file("hf"), dir.file("x.json"));
  CHECK(other.exit_code == 2);
  CHECK(other.err.find("\"model_type\" is \"llama\"") != std::string::npos);
}

TEST_CASE("aiopt train --init fine-tunes a published folder's weights", "[pretrained][cli]") {
  // The tiny preset's trained model as a Hugging Face folder: a run started from it begins at the
  // trained model's loss, far below a random start's (about ln 256 = 5.5 nats on bytes).
  const TestModelCache cache_dir;
  TempDir dir;
  const nn::CachedModel trained = nn::trained_model(nn::standard_training("tiny"), Device::cpu());
  write_gpt2_folder(dir.file("hf"), trained.weights);
  const auto first_loss = [](const std::string& out) {
    const auto at = out.find("step      1/");
    REQUIRE(at != std::string::npos);
    return std::stod(out.substr(out.find("loss ", at) + 5));
  };
  const std::vector<std::string> recipe = {"--steps", "2", "--batch", "4", "--seq-len", "32", "--eval-every", "0",
                                           "--log-every", "1", "--threads", "1"};
  std::vector<std::string> args = {"train", "--preset", "tiny"};
  args.insert(args.end(), recipe.begin(), recipe.end());
  const ProcessResult scratch = run_aiopt(args);
  args = {"train", "--init", dir.file("hf"), "--out", dir.file("tuned.safetensors")};
  args.insert(args.end(), recipe.begin(), recipe.end());
  const ProcessResult tuned = run_aiopt(args);
  INFO(tuned.err);
  REQUIRE(scratch.exit_code == 0);
  REQUIRE(tuned.exit_code == 0);
  CHECK(tuned.out.find("init: " + dir.file("hf") + " (gpt2, ") != std::string::npos);
  CHECK(first_loss(scratch.out) > 5.0);
  CHECK(first_loss(tuned.out) < trained.validation_loss + 0.5);
  CHECK(load_pretrained(dir.file("tuned.safetensors"), Device::cpu()).weights.config.describe() ==
        trained.weights.config.describe());

  // What contradicts the checkpoint is refused.
  const ProcessResult wider = run_aiopt({"train", "--init", dir.file("hf"), "--channels", "128", "--steps", "1"});
  CHECK(wider.exit_code == 2);
  CHECK(wider.err.find("--channels 128 conflicts with --init") != std::string::npos);
  const ProcessResult both = run_aiopt({"train", "--init", dir.file("hf"), "--resume", dir.file("hf/config.json")});
  CHECK(both.exit_code == 2);
  CHECK(both.err.find("--init and --resume") != std::string::npos);
}

// ---- with its tokenizer

TEST_CASE("a folder's tokenizer encodes the prompt and decodes the text", "[pretrained][cli]") {
  TempDir dir;
  std::filesystem::create_directories(dir.file("hf"));
  const Trained trained = write_tokenizer(dir, "hf");
  const std::size_t tokenizer_vocab = trained.tokens.size() + kSpecials.size();
  GptConfig config = small_gpt2;
  config.vocab = tokenizer_vocab + 1000;  // more rows than the tokenizer has tokens, as padded models have
  write_gpt2_folder(dir.file("hf"), GptWeights::initialize(config, 7, Device::cpu()));

  const PretrainedModel m = load_pretrained(dir.file("hf"), Device::cpu());
  REQUIRE(m.tokenizer);
  CHECK(m.tokenizer->vocab_size() == tokenizer_vocab);
  CHECK(m.info.tokenizer == dir.file("hf"));

  const std::string prompt = "The fox returns; the café serves 🙂";
  const ProcessResult r = run_aiopt({"generate", "--checkpoint", dir.file("hf"), "--prompt", prompt, "--tokens", "6",
                                     "--logits", dir.file("l.json")});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::vector<std::int32_t> want = m.tokenizer->encode(prompt);
  CHECK(want.size() < prompt.size() / 2);  // merged tokens, not bytes
  const json tokens = read_json(dir.file("l.json")).at("tokens");
  CHECK(std::vector<std::int32_t>(tokens.begin(), tokens.begin() + static_cast<long>(want.size())) == want);
  CHECK(r.out.find("prompt: " + std::to_string(want.size()) + " tokens") != std::string::npos);
  // The text line: the new tokens decoded, printed as valid UTF-8 (bytes that end inside a
  // character escaped), so it is never empty for six tokens.
  const auto text = r.out.find("text: \"");
  REQUIRE(text != std::string::npos);
  CHECK(r.out.find("\"\n", text) > text + 7);
  // Ids past the tokenizer's (a random model repeats the prompt's last token, here one of them)
  // are shown as <|id N|>, not an error.
  const std::string past = std::to_string(tokenizer_vocab + 500);
  const ProcessResult padded = run_aiopt({"generate", "--checkpoint", dir.file("hf"), "--prompt-tokens", "5," + past,
                                          "--tokens", "4"});
  INFO(padded.out);
  CHECK(padded.exit_code == 0);
  CHECK(padded.out.find("<|id " + past + "|>") != std::string::npos);

  // A tokenizer larger than the model's vocabulary is refused.
  config.vocab = tokenizer_vocab - 1;
  write_gpt2_folder(dir.file("hf"), GptWeights::initialize(config, 7, Device::cpu()));
  check_input_error([&] { load_pretrained(dir.file("hf"), Device::cpu()); },
                    {"tokenizer has " + std::to_string(tokenizer_vocab) + " tokens"});
}

TEST_CASE("aiopt train --init encodes --data with the checkpoint's tokenizer", "[pretrained][cli]") {
  TempDir dir;
  std::filesystem::create_directories(dir.file("hf"));
  const Trained trained = write_tokenizer(dir, "hf");
  GptConfig config{.layers = 1, .channels = 64, .heads = 4, .context = 64, .vocab = trained.tokens.size() + 2};
  write_gpt2_folder(dir.file("hf"), GptWeights::initialize(config, 7, Device::cpu()));
  std::string text;
  while (text.size() < 40000) text += kCorpus;
  write_text(dir.file("book.txt"), text);
  const ProcessResult r = run_aiopt({"train", "--init", dir.file("hf"), "--data", dir.file("book.txt"), "--steps",
                                     "2", "--batch", "2", "--seq-len", "32", "--eval-every", "0", "--out",
                                     dir.file("tuned.safetensors")});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("data: " + dir.file("book.txt") + ", encoded by " + dir.file("hf")) != std::string::npos);
  // The tokens counted are BPE tokens: fewer than the file's bytes.
  const auto at = r.out.find("encoded by " + dir.file("hf") + ": ");
  REQUIRE(at != std::string::npos);
  const std::size_t train_tokens = std::stoul(r.out.substr(at + 13 + dir.file("hf").size()));
  CHECK(train_tokens < text.size() * 9 / 10 * 2 / 3);
  // The file it wrote names the tokenizer, so generate finds it again.
  const PretrainedModel tuned = load_pretrained(dir.file("tuned.safetensors"), Device::cpu());
  CHECK(tuned.info.tokenizer == std::filesystem::absolute(dir.file("hf")).string());
  CHECK(tuned.tokenizer);
}
