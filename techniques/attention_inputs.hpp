#pragma once
// Where an attention technique's q, k, v come from: generated (`inputs=random`, each technique's
// own distribution) or taken from one attention layer of the trained GPT running on its
// validation text (`inputs=trained`, nn/attention_capture.hpp). The parameters, their check
// and the capture, shared by flash_attention and linear_attention.
//   inputs   random | trained
//   preset   the trained model (tiny | small | medium: the presets the standard recipe trains)
//   layer    its block whose q, k, v are taken
// With trained inputs the shape comes from the model and the text: `heads` and `head_dim` must be
// the model's, `seq_len` (a window of validation text) at most its context, and `batch` is the
// number of windows.
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "harness/param.hpp"
#include "nn/attention_capture.hpp"

namespace aiopt::attention_inputs {

// A case's trained-input source.
struct Trained {
  std::string preset;
  std::size_t layer = 0;

  std::string describe() const;  // "layer 0 of the trained tiny model"
  // q, k, v: (batch, H, seq_len, d), the model's H and d (nn::capture_trained_attention).
  nn::AttentionCapture capture(std::size_t batch, std::size_t seq_len) const;
};

// The three ParamSpecs, inputs=random by default.
std::vector<ParamSpec> specs();

// The case's source: nullopt for inputs=random.
std::optional<Trained> trained(const Params& params);

// For inputs=trained, throws InputError naming `technique`, the model's values and what to set
// unless heads and head_dim are the model's, seq_len is at most its context, layer one of its
// blocks and batch at most the number of windows of seq_len tokens in its validation text.
void check_shape(const std::string& technique, const Params& params, std::size_t batch, std::size_t heads,
                 std::size_t seq_len, std::size_t head_dim);

}  // namespace aiopt::attention_inputs
