#pragma once
// GPT checkpoints in safetensors (nn/safetensors.hpp). Our own files hold the GptWeights tensors
// under their GPT-2 names with our (out, in) linear layout, and the config in the header's
// __metadata__. GPT-2 checkpoints (as published: optional "transformer." prefix, Conv1D weights
// (in, out), attn.bias/masked_bias buffers, no metadata) are recognised by their names, their
// dimensions inferred from the tensor shapes, and their Conv1D weights transposed.
#include <functional>
#include <map>
#include <string>

#include "core/device.hpp"
#include "nn/safetensors.hpp"
#include "nn/weights.hpp"

namespace aiopt::nn {

// `extra_metadata` joins the header's __metadata__ (the config's own keys take precedence).
void save_checkpoint(const GptWeights& weights, const std::string& path,
                     const std::map<std::string, std::string>& extra_metadata = {});

// Throws InputError (exit code 2) naming the file and the reason for a missing, truncated or
// inconsistent file: a header that is not JSON, offsets outside the data, a missing or
// misshapen tensor, an unsupported dtype; and for weights whose __metadata__ "attention" (written
// by `aiopt train`) is not softmax attention (flash or naive), which the model cannot run.
GptWeights load_checkpoint(const std::string& path, const Device& device);
// The same from a file already opened (its header read and checked).
GptWeights load_checkpoint(const SafetensorsFile& file, const Device& device);
// Host weights from an aiopt-gpt `file` with the tensors whose names `skip` picks left empty
// (they take no memory), for a caller that reads them one at a time (SafetensorsFile::read_f32)
// and keeps something smaller. InputError as load_checkpoint, and for a GPT-2 checkpoint.
GptWeights load_checkpoint_except(const SafetensorsFile& file, const std::function<bool(const std::string&)>& skip);

}  // namespace aiopt::nn
