#include "nn/model_cache.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <system_error>
#include <unistd.h>

#include "core/error.hpp"
#include "nn/checkpoint.hpp"
#include "nn/safetensors.hpp"

namespace aiopt::nn {

namespace {

std::uint64_t fnv1a(const std::string& text) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// The cached file made for `identity` (its validation loss into `out`), its weights loaded onto
// `device` unless `device` is null; false when the file is absent, unreadable or made for another
// configuration.
bool load_cached(const std::filesystem::path& path, const std::string& identity, const Device* device,
                 CachedModel& out) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return false;
  try {
    const SafetensorsFile file(path.string());
    const auto& meta = file.metadata();
    const auto id = meta.find("identity");
    const auto loss = meta.find("validation_loss");
    if (id == meta.end() || id->second != identity || loss == meta.end()) return false;
    if (device) out.weights = load_checkpoint(file, *device);
    out.validation_loss = std::stod(loss->second);
    out.from_cache = true;
    out.path = path;
    return true;
  } catch (const std::exception&) {
    return false;  // a damaged file is trained over
  }
}

std::filesystem::path model_file(const std::filesystem::path& dir, const std::string& key) {
  return dir / ("model-" + key + ".safetensors");
}

// Round-trips exactly through std::stod.
std::string exact_text(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", v);
  return text;
}

}  // namespace

std::filesystem::path model_cache_directory() {
  if (const char* dir = std::getenv("AIOPT_CACHE"); dir && *dir) return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::filesystem::path(xdg) / "aiopt";
  if (const char* home = std::getenv("HOME"); home && *home)
    return std::filesystem::path(home) / ".cache" / "aiopt";
  return std::filesystem::temp_directory_path() / "aiopt-cache";
}

std::string model_cache_key(const TrainConfig& config) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(fnv1a("aiopt-model-1 " + config.identity().dump())));
  return hex;
}

CachedModel trained_model(const TrainConfig& config, const Device& device,
                          const std::function<void(const StepRecord&)>& on_step,
                          const std::function<void(const EvalRecord&)>& on_eval) {
  config.validate();
  if (!is_softmax(config.training.attention))
    throw InputError("model cache: a model trained with '" + std::string(to_string(config.training.attention)) +
                     "' attention cannot be served: its users run the model's softmax forward (nn/gpt.hpp)");
  const std::string identity = config.identity().dump();
  const std::filesystem::path dir = model_cache_directory();
  const std::string key = model_cache_key(config);
  const std::filesystem::path path = model_file(dir, key);
  CachedModel out;
  if (load_cached(path, identity, &device, out)) return out;

  const auto start = std::chrono::steady_clock::now();
  Trainer trainer(config, device);
  if (config.distillation)
    trainer.set_teacher(std::make_shared<Gpt>(trained_model(*config.distillation->teacher, device).weights));
  trainer.run(on_step, on_eval);
  out.training_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out.validation_loss = trainer.evals().back().loss;
  out.weights = GptWeights::allocate(config.model, device);
  out.weights.copy_from(trainer.weights());

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::filesystem::path temporary =
      dir / ("model-" + key + "." + std::to_string(::getpid()) + ".tmp");
  try {
    save_checkpoint(out.weights, temporary.string(), {{"identity", identity},
                                                      {"validation_loss", exact_text(out.validation_loss)}});
    std::filesystem::rename(temporary, path);
    out.path = path;
  } catch (const std::exception&) {
    std::filesystem::remove(temporary, ec);  // an unwritable cache only costs the next run a retraining
  }
  return out;
}

CachedModel trained_model_file(const TrainConfig& config) {
  config.validate();
  const std::filesystem::path path = model_file(model_cache_directory(), model_cache_key(config));
  CachedModel out;
  if (load_cached(path, config.identity().dump(), nullptr, out)) return out;
  out = trained_model(config, Device::cpu());
  if (!out.path.empty()) out.weights = GptWeights();
  return out;
}

}  // namespace aiopt::nn
