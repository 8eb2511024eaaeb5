#pragma once
// GPT checkpoints in safetensors (nn/safetensors.hpp), one file or Hugging Face shards
// (nn/checkpoint_files.hpp). Our own files hold the GptWeights tensors under their GPT-2 names with
// our (out, in) linear layout, and the config in the header's __metadata__ ("format":
// "aiopt-gpt"). GPT-2 checkpoints (as Hugging Face publishes them: "format": "pt" or no format,
// optional "transformer." prefix, Conv1D weights (in, out), attn.bias/masked_bias buffers) are
// recognised by their names, their dimensions read from config.json (nn/pretrained.hpp) or the
// tensor shapes, and their Conv1D weights transposed.
#include <functional>
#include <map>
#include <optional>
#include <string>

#include "core/device.hpp"
#include "nn/checkpoint_files.hpp"
#include "nn/safetensors.hpp"
#include "nn/weights.hpp"

namespace aiopt::nn {

// What the tensors of a GPT-2 checkpoint do not say.
struct Gpt2Hints {
  // The dimensions a config.json declares: every tensor's shape must agree with them.
  std::optional<GptConfig> declared;
  std::string declared_by;  // the config.json's path, for the messages
  // The head count of a lone file (no tensor holds it), from --heads or the `heads` parameter.
  std::optional<std::size_t> heads;
};

// `extra_metadata` joins the header's __metadata__ (the config's own keys take precedence).
void save_checkpoint(const GptWeights& weights, const std::string& path,
                     const std::map<std::string, std::string>& extra_metadata = {});

// Throws InputError (exit code 2) naming the file and the reason for a missing, truncated or
// inconsistent file: a header that is not JSON, offsets outside the data, a missing or
// misshapen tensor (naming the tensor and the config key it contradicts), an unsupported dtype,
// a __metadata__ "format" other than "aiopt-gpt" or "pt", an lm_head.weight that differs from
// wte.weight (the model ties them); and for weights whose __metadata__ "attention" (written by
// `aiopt train`) is not softmax attention (flash or naive), which the model cannot run.
GptWeights load_checkpoint(const CheckpointFiles& files, const Device& device, const Gpt2Hints& hints = {});
GptWeights load_checkpoint(const std::string& path, const Device& device);  // one safetensors file
GptWeights load_checkpoint(const SafetensorsFile& file, const Device& device);
// The config alone, from the headers (and the hints), with no tensor read: the same checks of
// names and shapes as load_checkpoint but for the tensors' values.
GptConfig checkpoint_config(const CheckpointFiles& files, const Gpt2Hints& hints = {});
// "aiopt-gpt" or "gpt2"; InputError for any other __metadata__ "format".
std::string checkpoint_format(const CheckpointFiles& files);
// Host weights from an aiopt-gpt `file` with the tensors whose names `skip` picks left empty
// (they take no memory), for a caller that reads them one at a time (SafetensorsFile::read_f32)
// and keeps something smaller. InputError as load_checkpoint, and for a GPT-2 checkpoint.
GptWeights load_checkpoint_except(const SafetensorsFile& file, const std::function<bool(const std::string&)>& skip);

}  // namespace aiopt::nn
