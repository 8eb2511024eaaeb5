// Safetensors checkpoints: our own files round-trip bit for bit; GPT-2-named files (written here
// by a small independent writer, in GPT-2's Conv1D layout with the "transformer." prefix and the
// attn.bias buffers) load with their weights transposed; F16 and BF16 tensors widen exactly; and
// every kind of damaged file is an InputError naming the file and the reason.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/half.hpp"
#include "core/rng.hpp"
#include "nn/checkpoint.hpp"
#include "nn/safetensors.hpp"
#include "support/files.hpp"
#include "support/input_error.hpp"
#include "support/process.hpp"
#include "support/safetensors_writer.hpp"

using namespace aiopt;
using namespace aiopt::nn;
using aiopt::test::TempDir;
using namespace aiopt::test;
using nlohmann::json;

namespace {

const RawTensor& find(const std::vector<RawTensor>& tensors, const std::string& name) {
  for (const auto& t : tensors)
    if (t.name == name) return t;
  FAIL("no tensor " << name);
  throw std::logic_error("unreachable");
}

float element(const RawTensor& t, std::size_t i) {
  float v;
  std::memcpy(&v, t.bytes.data() + 4 * i, 4);
  return v;
}

// Bit-identical tensors: same shape, same bytes.
bool identical(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.bytes() == b.bytes() &&
         std::memcmp(a.data<float>(), b.data<float>(), a.bytes()) == 0;
}

// A valid one-tensor file's parts, for corrupting one at a time.
const std::string two_floats = f32_bytes({1.5f, -2.0f});
std::string one_tensor_header(const std::string& entry) { return "{\"x\":" + entry + "}"; }
const std::string good_entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

// The model dimensions `got` holds are `want`'s.
void check_dimensions(const GptConfig& got, const GptConfig& want) {
  CHECK(got.layers == want.layers);
  CHECK(got.channels == want.channels);
  CHECK(got.heads == want.heads);
  CHECK(got.context == want.context);
  CHECK(got.vocab == want.vocab);
}

// Runs `load`, which must throw an InputError whose message names `path` and gives `reason`.
template <class Load>
void check_input_error(const Load& load, const std::string& path, const std::string& reason) {
  aiopt::test::check_input_error(load, {path, reason});
}

// A default model saved by save_checkpoint at `path`, read back as the independent writer's
// tensors and metadata, for rewriting with one thing spoilt.
struct SavedModel {
  std::vector<RawTensor> tensors;
  json metadata;
};
SavedModel save_default_model(const std::string& path) {
  const GptWeights w = GptWeights::initialize(GptConfig{}, 1, Device::cpu());
  save_checkpoint(w, path);
  SavedModel saved{{}, json(SafetensorsFile(path).metadata())};
  for (const auto& [name, t] : w.named())
    saved.tensors.push_back(
        {name, "F32", t->shape(), std::string(reinterpret_cast<const char*>(t->data<float>()), t->bytes())});
  return saved;
}

}  // namespace

// ---- the safetensors reader

TEST_CASE("a valid safetensors file reads back its tensors and metadata", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ok.safetensors");
  write_raw(path, R"({"__metadata__":{"k":"v"},"x":)" + good_entry + "}", two_floats);
  const SafetensorsFile file(path);
  CHECK(file.metadata().at("k") == "v");
  REQUIRE(file.entries().size() == 1);
  const Tensor x = file.read_f32("x");
  CHECK(x.shape() == std::vector<std::int64_t>{2});
  CHECK(x.data<float>()[0] == 1.5f);
  CHECK(x.data<float>()[1] == -2.0f);
}

TEST_CASE("F16 and BF16 tensors widen to f32 exactly", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("half.safetensors");
  const std::vector<float> values = random_values(37, 5);
  std::vector<std::uint16_t> h(values.size()), b(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    h[i] = float_to_f16(values[i]);
    b[i] = float_to_bf16(values[i]);
  }
  write_file(path, {{"h", "F16", {37}, u16_bytes(h)}, {"b", "BF16", {37}, u16_bytes(b)}});
  const SafetensorsFile file(path);
  const Tensor th = file.read_f32("h"), tb = file.read_f32("b");
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    wrong += th.data<float>()[i] != f16_to_float(h[i]);
    wrong += tb.data<float>()[i] != bf16_to_float(b[i]);
  }
  CHECK(wrong == 0);
}

TEST_CASE("every damaged safetensors file is an InputError naming the file and the reason", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  const auto fails_with = [&](const std::string& reason) {
    const auto read_all = [&] {
      const SafetensorsFile file(path);
      for (const auto& [name, e] : file.entries()) file.read_f32(name);
    };
    check_input_error(read_all, path, reason);
  };

  SECTION("missing file") { fails_with("cannot open"); }
  SECTION("shorter than 8 bytes") {
    write_bytes(path, "abc");
    fails_with("shorter than the 8-byte header length");
  }
  SECTION("header length beyond the file") {
    write_bytes(path, le64(1000) + "{}");
    fails_with("header length 1000 reaches past the end of the file");
  }
  // Each damaged file as its header text, its data section, and the reason the error must name.
  struct Damage {
    const char* what;
    std::string header;
    std::string data;
    const char* reason;
  };
  const std::string overlapping =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  const std::string gapped =
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  const Damage damages[] = {
      {"header not JSON", "{\"x\": [", "", "the header is not JSON"},
      {"header not an object", "[1, 2]", "", "must be a JSON object"},
      {"entry not an object", one_tensor_header("3"), two_floats, "tensor 'x': the header entry must be an object"},
      {"missing field", one_tensor_header(R"({"dtype":"F32","shape":[2]})"), two_floats, "tensor 'x': the header entry has no 'data_offsets'"},
      {"dtype not a string", one_tensor_header(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"), two_floats, "'dtype' must be a string"},
      {"negative dimension", one_tensor_header(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), two_floats, "'shape' must be an array of non-negative integers"},
      {"offsets not a pair", one_tensor_header(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4,8]})"), two_floats, "'data_offsets' must be [begin, end]"},
      {"offsets backwards", one_tensor_header(R"({"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), two_floats, "end before they begin"},
      {"unknown dtype", one_tensor_header(R"({"dtype":"F17","shape":[2],"data_offsets":[0,8]})"), two_floats, "unknown dtype 'F17'"},
      {"unsupported dtype", one_tensor_header(R"({"dtype":"I32","shape":[2],"data_offsets":[0,8]})"), two_floats, "tensor 'x': dtype I32 is not supported; supported: F32, F16, BF16"},
      {"size not dtype x shape", one_tensor_header(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), two_floats, "hold 8 bytes, but dtype F32 × shape [3] is 12 bytes"},
      {"offsets past the data (a truncated file)", one_tensor_header(good_entry), two_floats.substr(0, 6), "reach past the data section's 6 bytes"},
      {"overlapping tensors", overlapping, two_floats, "overlap tensor 'a'"},
      {"a gap between tensors", gapped, two_floats + two_floats, "of the data section to no tensor"},
      {"trailing garbage", one_tensor_header(good_entry), two_floats + "junk", "4 trailing bytes after the last tensor"},
      {"metadata not strings", R"({"__metadata__":{"layers":2},"x":)" + good_entry + "}", two_floats, "'__metadata__' key 'layers' must be a string"},
  };
  for (const Damage& d : damages) {
    DYNAMIC_SECTION(d.what) {
      write_raw(path, d.header, d.data);
      fails_with(d.reason);
    }
  }
}

// ---- checkpoints

TEST_CASE("save then load gives bit-identical tensors and the same config", "[checkpoint]") {
  TempDir dir;
  // layernorm_eps is not a round decimal: the metadata must carry it exactly.
  const GptConfig config{
      .layers = 3, .channels = 24, .heads = 3, .context = 20, .vocab = 37, .layernorm_eps = 3.3e-6f};
  const GptWeights saved = GptWeights::initialize(config, 11, Device::cpu());
  save_checkpoint(saved, dir.file("m.safetensors"));
  const GptWeights loaded = load_checkpoint(dir.file("m.safetensors"), Device::cpu());

  check_dimensions(loaded.config, config);
  CHECK(loaded.config.layernorm_eps == config.layernorm_eps);
  const auto a = saved.named();
  const auto b = loaded.named();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    CHECK(a[i].first == b[i].first);
    CHECK(identical(*a[i].second, *b[i].second));
  }
  const SafetensorsFile file(dir.file("m.safetensors"));
  CHECK(file.metadata().at("format") == "aiopt-gpt");
  CHECK(file.metadata().at("layers") == "3");
}

TEST_CASE("a GPT-2 checkpoint loads with its Conv1D weights transposed", "[checkpoint]") {
  TempDir dir;
  const std::int64_t L = 2, C = 8, V = 11, T = 6;
  const auto tensors = gpt2_tensors(L, C, V, T);
  write_file(dir.file("gpt2.safetensors"), tensors, {{"heads", "2"}});
  const GptWeights w = load_checkpoint(dir.file("gpt2.safetensors"), Device::cpu());

  check_dimensions(w.config, {.layers = 2, .channels = 8, .heads = 2, .context = 6, .vocab = 11});

  // One element by hand: our c_attn weight (3C, C) at (out 13, in 5) is GPT-2's (C, 3C) at (5, 13).
  const RawTensor& c_attn = find(tensors, "transformer.h.1.attn.c_attn.weight");
  CHECK(w.blocks[1].attn_c_attn_weight.shape() == std::vector<std::int64_t>{3 * C, C});
  CHECK(w.blocks[1].attn_c_attn_weight.data<float>()[13 * C + 5] == element(c_attn, 5 * (3 * C) + 13));

  // Every tensor, every element: Conv1D weights transposed, everything else as stored.
  for (const auto& [name, t] : w.named()) {
    INFO(name);
    const bool embedding = name == "wte" || name == "wpe";
    const RawTensor& raw = find(tensors, "transformer." + name + (embedding ? ".weight" : ""));
    const bool conv1d = name.ends_with("c_attn.weight") || name.ends_with("c_proj.weight") ||
                        name.ends_with("c_fc.weight");
    const float* got = t->data<float>();
    std::size_t wrong = 0;
    if (conv1d) {
      const std::int64_t out = t->shape()[0], in = t->shape()[1];
      CHECK(raw.shape == std::vector<std::int64_t>{in, out});
      for (std::int64_t o = 0; o < out; ++o)
        for (std::int64_t i = 0; i < in; ++i) wrong += got[o * in + i] != element(raw, i * out + o);
    } else {
      CHECK(raw.shape == t->shape());
      for (std::int64_t i = 0; i < t->numel(); ++i) wrong += got[i] != element(raw, i);
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE("GPT-2 checkpoints without the prefix and at a published width need no heads", "[checkpoint]") {
  TempDir dir;
  auto tensors = gpt2_tensors(1, 768, 3, 2);
  for (auto& t : tensors) t.name.erase(0, t.name.starts_with("transformer.") ? 12 : 0);
  write_file(dir.file("gpt2.safetensors"), tensors);
  const GptWeights w = load_checkpoint(dir.file("gpt2.safetensors"), Device::cpu());
  CHECK(w.config.heads == 12);
  CHECK(w.config.channels == 768);
}

TEST_CASE("bad checkpoints are InputErrors naming the file and the tensor", "[checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  const auto fails_with = [&](const std::string& reason) {
    check_input_error([&] { load_checkpoint(path, Device::cpu()); }, path, reason);
  };
  auto tensors = gpt2_tensors(2, 8, 11, 6);

  SECTION("a missing tensor") {
    std::erase_if(tensors, [](const RawTensor& t) { return t.name == "transformer.h.1.mlp.c_fc.bias"; });
    write_file(path, tensors, {{"heads", "2"}});
    fails_with("tensor 'transformer.h.1.mlp.c_fc.bias' is missing");
  }
  SECTION("a misshapen tensor") {
    for (auto& t : tensors)
      if (t.name == "transformer.h.0.attn.c_proj.bias") t = {t.name, "F32", {7}, f32_bytes(random_values(7, 1))};
    write_file(path, tensors, {{"heads", "2"}});
    fails_with("tensor 'transformer.h.0.attn.c_proj.bias' has shape (7), expected (8)");
  }
  SECTION("a Conv1D weight in the wrong layout") {
    for (auto& t : tensors)
      if (t.name == "transformer.h.0.mlp.c_fc.weight") t.shape = {32, 8};
    write_file(path, tensors, {{"heads", "2"}});
    fails_with("tensor 'transformer.h.0.mlp.c_fc.weight' has shape (32, 8), expected (8, 32) (Conv1D layout");
  }
  SECTION("an unknown tensor") {
    tensors.push_back({"transformer.h.0.attn.q_proj.weight", "F32", {1}, f32_bytes({1.0f})});
    write_file(path, tensors, {{"heads", "2"}});
    fails_with("tensor 'transformer.h.0.attn.q_proj.weight' is not a GPT-2 parameter");
  }
  SECTION("heads neither stored nor standard") {
    write_file(path, tensors);
    fails_with("give --heads (or the 'heads' parameter), or load the folder with its config.json");
  }
  SECTION("heads that do not divide the width") {
    write_file(path, tensors, {{"heads", "3"}});
    fails_with("must be a multiple of heads (3)");
  }
  SECTION("neither format") {
    write_file(path, {{"weights", "F32", {2}, two_floats}});
    fails_with("neither an aiopt-gpt checkpoint");
  }
  SECTION("an unknown format") {
    write_file(path, {{"wte", "F32", {2}, two_floats}}, {{"format", "other"}});
    fails_with("\"format\" is 'other'");
  }
  SECTION("our format with a bad config") {
    SavedModel saved = save_default_model(path);
    saved.metadata["layers"] = "two";
    write_file(path, saved.tensors, saved.metadata);
    fails_with("__metadata__ 'layers' = 'two' is not a non-negative integer");
  }
  SECTION("our format with a tensor of another model") {
    SavedModel saved = save_default_model(path);
    saved.tensors.push_back({"h.2.ln_1.weight", "F32", {64}, f32_bytes(random_values(64, 3))});
    write_file(path, saved.tensors, saved.metadata);
    fails_with("tensor 'h.2.ln_1.weight' is not a parameter of model L2 d64");
  }
  SECTION("a damaged file") {
    write_bytes(path, "abc");
    fails_with("shorter than the 8-byte header length");
  }
}

// ---- through the CLI

TEST_CASE("aiopt generate loads a checkpoint, and exits 2 on a bad one", "[checkpoint][cli]") {
  TempDir dir;
  GptConfig config;  // L2 d64 h4 ctx128 vocab256
  save_checkpoint(GptWeights::initialize(config, 3, Device::cpu()), dir.file("good.safetensors"));
  auto good = aiopt::test::run_aiopt(
      {"generate", "--checkpoint", dir.file("good.safetensors"), "--prompt-tokens", "1,2,3", "--tokens", "4"});
  INFO(good.err);
  CHECK(good.exit_code == 0);

  write_raw(dir.file("bad.safetensors"), "{\"x\": [", "");
  auto bad = aiopt::test::run_aiopt(
      {"generate", "--checkpoint", dir.file("bad.safetensors"), "--prompt-tokens", "1,2,3", "--tokens", "4"});
  CHECK(bad.exit_code == 2);
  CHECK(bad.err.find(dir.file("bad.safetensors")) != std::string::npos);
  CHECK(bad.err.find("the header is not JSON") != std::string::npos);
}
