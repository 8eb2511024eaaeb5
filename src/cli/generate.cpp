// aiopt generate: autoregressive generation with the GPT (random weights from a preset, or a
// checkpoint: aiopt's own file or a published GPT-2 folder with its tokenizer), printing the new
// tokens, their text, and the prefill and decode speeds.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/blas_warnings.hpp"
#include "cli/commands.hpp"
#include "cli/device_flag.hpp"
#include "cli/model_flags.hpp"
#include "cli/number_checks.hpp"
#include "core/error.hpp"
#include "core/threads.hpp"
#include "nn/pretrained.hpp"
#include "nn/config.hpp"
#include "nn/decoding.hpp"

namespace aiopt::cli {

namespace {

struct GenerateOptions {
  ModelFlags model;
  std::string checkpoint;
  std::string logits_out;
  std::string prompt_tokens;
  std::optional<std::string> prompt;
  std::size_t tokens = 32;
  float temperature = 0.0f;
  std::size_t top_k = 0;
  std::uint64_t seed = 1;
  std::string device = "cpu";
  std::string kv_cache = "f32";
  std::optional<int> threads;
};

std::vector<std::int32_t> parse_token_list(const std::string& text) {
  std::vector<std::int32_t> out;
  std::size_t start = 0;
  for (;;) {
    const auto comma = text.find(',', start);
    const std::string item = text.substr(start, comma - start);
    std::size_t used = 0;
    long long value = -1;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || value < 0 || value > INT32_MAX)
      throw InputError("--prompt-tokens: '" + item + "' is not a token id (allowed: comma-separated integers >= 0)");
    out.push_back(static_cast<std::int32_t>(value));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// The model: a checkpoint, whose dimensions the preset and overrides must not contradict (a lone
// GPT-2 file takes its head count from --heads), or random weights of the preset with the
// overrides applied.
struct LoadedModel {
  nn::GptWeights weights;
  std::optional<nn::BpeTokenizer> tokenizer;
  std::string origin;
};

LoadedModel load_model(const GenerateOptions& o, const Device& device) {
  if (!o.checkpoint.empty()) {
    nn::PretrainedModel m = nn::load_pretrained(o.checkpoint, device, o.model.heads());
    o.model.check_agree(m.weights.config, "--checkpoint", o.checkpoint);
    char line[200];
    std::snprintf(line, sizeof line, "%s, %.1f MB, %s, loaded in %.0f ms", m.info.format.c_str(),
                  static_cast<double>(m.info.bytes) / 1e6, m.info.hash.c_str(), m.load_ms);
    return {std::move(m.weights), std::move(m.tokenizer), o.checkpoint + ": " + line};
  }
  const nn::GptConfig config = o.model.applied_to(nn::preset(o.model.preset_name()));
  config.validate();
  return {nn::GptWeights::initialize(config, o.seed, device), std::nullopt,
          "random weights, seed " + std::to_string(o.seed)};
}

// The length of the well-formed UTF-8 sequence of two to four bytes at s[i], 0 where there is none
// (a stray continuation byte, a cut or overlong sequence, a surrogate, past U+10FFFF).
std::size_t utf8_sequence(const std::string& s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u; };
  const unsigned c = byte(0);
  const auto continuation = [&](std::size_t k) { return (byte(k) & 0xC0u) == 0x80u; };
  if (c >= 0xC2 && c <= 0xDF) return continuation(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    const unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return byte(1) >= lo && byte(1) <= hi && continuation(2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    const unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return byte(1) >= lo && byte(1) <= hi && continuation(2) && continuation(3) ? 4 : 0;
  }
  return 0;
}

// Bytes as text: printable ASCII and well-formed UTF-8 as they are; control bytes and bytes that
// are not UTF-8 (a token may end inside a character) escaped as in C, so the line stays valid text.
std::string escaped(const std::string& bytes) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '\\' || c == '"') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else if (const std::size_t n = utf8_sequence(bytes, i)) {
      out.append(bytes, i, n);
      i += n - 1;
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

// The text of `tokens`, escaped; an id past the tokenizer's vocabulary (a model may have more
// rows than its tokenizer has tokens, and a random one picks them) shown as <|id N|>.
std::string decoded(const nn::BpeTokenizer& tokenizer, const std::vector<std::int32_t>& tokens) {
  std::string out;
  std::vector<std::int32_t> run;
  for (const std::int32_t t : tokens) {
    if (static_cast<std::size_t>(t) < tokenizer.vocab_size()) {
      run.push_back(t);
      continue;
    }
    out += escaped(tokenizer.decode(run)) + "<|id " + std::to_string(t) + "|>";
    run.clear();
  }
  return out + escaped(tokenizer.decode(run));
}

// The logits of every position of prompt + new tokens, one forward over the whole sequence, as
// JSON {"tokens": [...], "logits": [[vocab floats] per position]}: for comparing with another
// implementation.
void write_logits(nn::Gpt& model, const std::vector<std::int32_t>& prompt, const std::vector<std::int32_t>& tokens,
                  const std::string& path) {
  std::vector<std::int32_t> all = prompt;
  all.insert(all.end(), tokens.begin(), tokens.end());
  if (all.size() > model.config().context) all.resize(model.config().context);
  const Tensor logits = model.forward(all, 1, all.size(), nn::Logits::all);
  const Tensor host = logits.to(Device::cpu());
  const std::size_t V = model.config().vocab;
  nlohmann::json rows = nlohmann::json::array();
  for (std::size_t t = 0; t < all.size(); ++t)
    rows.push_back(std::vector<float>(host.data<float>() + t * V, host.data<float>() + (t + 1) * V));
  std::ofstream out(path);
  out << nlohmann::json{{"tokens", all}, {"logits", rows}}.dump() << "\n";
  if (!out) throw InputError("--logits " + path + ": cannot write the file");
}

int run_generate(const GenerateOptions& o) {
  if (o.threads) set_threads(*o.threads);
  warn_about_blas_kernels();
  if (o.kv_cache != "f32" && o.kv_cache != "i8" && o.kv_cache != "none")
    throw InputError("--kv-cache '" + o.kv_cache + "' is unknown (allowed: f32, i8, none)");
  if (o.tokens == 0) throw InputError("--tokens must be at least 1");
  if (o.prompt_tokens.empty() && !o.prompt) throw InputError("generate needs --prompt-tokens 1,2,3 or --prompt TEXT");
  const nn::SamplingParams sampling{o.temperature, o.top_k, o.seed};
  sampling.validate();
  const Device device = parse_device(o.device);
  LoadedModel loaded = load_model(o, device);
  nn::Gpt model(std::move(loaded.weights));
  const nn::GptConfig& config = model.config();
  const std::optional<nn::BpeTokenizer>& tokenizer = loaded.tokenizer;

  std::vector<std::int32_t> prompt;
  if (o.prompt) {
    if (o.prompt->empty()) throw InputError("--prompt is empty");
    if (tokenizer) {
      prompt = tokenizer->encode(*o.prompt);
    } else {
      if (config.vocab < 256)
        throw InputError("--prompt needs a tokenizer (vocab.json and merges.txt beside the checkpoint) or a "
                         "vocabulary of at least 256 (bytes are the tokens); this model has " +
                         std::to_string(config.vocab) + "; use --prompt-tokens");
      for (const char c : *o.prompt) prompt.push_back(static_cast<unsigned char>(c));
    }
  } else {
    prompt = parse_token_list(o.prompt_tokens);
    for (const std::int32_t t : prompt)
      if (static_cast<std::size_t>(t) >= config.vocab)
        throw InputError("--prompt-tokens: token " + std::to_string(t) + " is outside the vocabulary [0, " +
                         std::to_string(config.vocab) + ")");
  }
  std::optional<DType> cache;
  if (o.kv_cache != "none") cache = parse_dtype(o.kv_cache);

  // Warm-up, not timed: the thread pools, BLAS and (on CUDA) the context start here, so the
  // prefill below measures the model's work alone.
  model.forward(std::span(prompt).first(1), 1, 1, nn::Logits::last);
  const nn::Generation g = nn::generate(model, prompt, o.tokens, sampling, cache);

  std::cout << "model: " << config.describe() << " (" << loaded.origin << ") on " << to_string(device) << ", "
            << threads() << " threads\n";
  std::cout << "kv cache: " << o.kv_cache << "\n";
  std::cout << "prompt: " << prompt.size() << " tokens\n";
  std::cout << "tokens:";
  for (const std::int32_t t : g.tokens) std::cout << " " << t;
  std::cout << "\n";
  if (tokenizer)
    std::cout << "text: \"" << decoded(*tokenizer, g.tokens) << "\"\n";
  else if (config.vocab == 256)
    std::cout << "text: \"" << escaped(std::string(g.tokens.begin(), g.tokens.end())) << "\"\n";
  if (!o.logits_out.empty()) write_logits(model, prompt, g.tokens, o.logits_out);
  char line[160];
  std::snprintf(line, sizeof line, "prefill: %.3f ms (%zu tokens, %.1f tokens/s)\n", g.prefill_ms, prompt.size(),
                1000.0 * static_cast<double>(prompt.size()) / g.prefill_ms);
  std::cout << line;
  if (!g.step_ms.empty()) {
    const double decode_ms = std::accumulate(g.step_ms.begin(), g.step_ms.end(), 0.0);
    const double per_token = decode_ms / static_cast<double>(g.step_ms.size());
    std::snprintf(line, sizeof line, "decode: %.3f ms/token (%zu steps, %.1f tokens/s)\n", per_token, g.step_ms.size(),
                  1000.0 / per_token);
    std::cout << line;
  }
  const double total_ms = g.prefill_ms + std::accumulate(g.step_ms.begin(), g.step_ms.end(), 0.0);
  std::snprintf(line, sizeof line, "total: %.3f ms (%zu new tokens, %.1f tokens/s)\n", total_ms, g.tokens.size(),
                1000.0 * static_cast<double>(g.tokens.size()) / total_ms);
  std::cout << line;
  return 0;
}

}  // namespace

void add_generate(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<GenerateOptions>();
  auto* cmd = app.add_subcommand("generate", "Generate tokens with the GPT and time prefill and decode");
  add_model_flags(*cmd, o->model, true);
  cmd->add_option("--checkpoint", o->checkpoint,
                  "Load the weights: a Hugging Face GPT-2 folder (config.json, model.safetensors, vocab.json, "
                  "merges.txt) or a safetensors file")
      ->check(CLI::ExistingPath);
  cmd->add_option("--logits", o->logits_out,
                  "Write every position's logits (prompt and new tokens) as JSON to this file");
  auto* tokens_opt = cmd->add_option("--prompt-tokens", o->prompt_tokens, "The prompt as token ids: 1,2,3");
  cmd->add_option("--prompt", o->prompt,
                  "The prompt as text: encoded by the checkpoint's tokenizer, else one token per byte")
      ->excludes(tokens_opt);
  cmd->add_option("--tokens", o->tokens, "New tokens to generate (default 32)");
  cmd->add_option("--temperature", o->temperature, "0: greedy (default); else sample softmax(logits / T)")
      ->check(non_negative_number());
  cmd->add_option("--top-k", o->top_k, "Sample among the k most likely tokens (default 0: all)");
  cmd->add_option("--seed", o->seed, "Seed for the random weights and the sampling (default 1)");
  cmd->add_option("--device", o->device, "cpu (default), cuda or cuda:N");
  cmd->add_option("--kv-cache", o->kv_cache, "f32 (default), i8, or none: recompute the whole prefix every step")
      ->check(CLI::IsMember({"f32", "i8", "none"}));
  cmd->add_option("--threads", o->threads, "CPU threads for OpenMP and OpenBLAS (default: all cores)")
      ->check(positive_number());
  cmd->callback([o, &exit_code] { exit_code = run_generate(*o); });
}

}  // namespace aiopt::cli
