#pragma once
// Trained models kept on disk, keyed by their full training configuration, so every technique
// that needs a trained model (quality metrics) trains it once per machine and then loads it.
// The directory is $AIOPT_CACHE, else $XDG_CACHE_HOME/aiopt, else ~/.cache/aiopt. A file holds
// the weights and, in its metadata, the configuration it was trained with and its final
// validation loss; a file whose configuration does not match its key is retrained over.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "core/device.hpp"
#include "nn/trainer.hpp"
#include "nn/weights.hpp"

namespace aiopt::nn {

std::filesystem::path model_cache_directory();
// 16 hex digits of a 64-bit FNV-1a hash of the configuration's identity (canonical JSON).
std::string model_cache_key(const TrainConfig& config);

struct CachedModel {
  GptWeights weights;
  double validation_loss = 0.0;
  bool from_cache = false;        // false: trained by this call
  double training_seconds = 0.0;  // 0 when loaded
  std::filesystem::path path;
};

// The trained weights for `config` on `device`: loaded when cached, else trained (reporting
// through the trainer's callbacks) and written atomically (a temporary file renamed into place,
// so concurrent runs never read half a file). A cache directory that cannot be written is not an
// error: the model is trained and returned, and `path` is empty. A config with a distillation
// takes its teacher from this cache too (trained first where absent).
CachedModel trained_model(const TrainConfig& config, const Device& device,
                          const std::function<void(const StepRecord&)>& on_step = {},
                          const std::function<void(const EvalRecord&)>& on_eval = {});

// As trained_model, for a caller that reads the weights from the file tensor by tensor
// (load_checkpoint_except): when the cache holds (or now holds) the model, `weights` is left
// empty and `path` names the file; where the cache cannot be written, `weights` holds the model.
CachedModel trained_model_file(const TrainConfig& config);

}  // namespace aiopt::nn
