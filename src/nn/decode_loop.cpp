#include "nn/decode_loop.hpp"

#include <algorithm>

#include "core/tensor.hpp"

namespace aiopt::nn {

std::vector<std::int32_t> decode(Gpt& model, std::span<const std::int32_t> prompt, std::size_t batch,
                                 std::size_t steps, KvCache* cache, const DecodeHooks& hooks) {
  const std::size_t P = prompt.size() / batch, total = P + steps, V = model.config().vocab;
  std::vector<std::int32_t> tokens(steps * batch);
  std::vector<std::int32_t> sequence(batch * total);  // (batch, P + steps): the prompt, then the tokens fed
  for (std::size_t b = 0; b < batch; ++b)
    std::copy_n(prompt.begin() + static_cast<std::ptrdiff_t>(b * P), P,
                sequence.begin() + static_cast<std::ptrdiff_t>(b * total));
  std::vector<std::int32_t> input;  // (batch, len): this step's tokens
  if (cache) cache->clear();

  for (std::size_t t = 0; t < steps; ++t) {
    const bool whole = t == 0 || !cache;
    const std::size_t start = whole ? 0 : P + t - 1;
    const std::size_t len = whole ? P + t : 1;
    input.resize(batch * len);
    for (std::size_t b = 0; b < batch; ++b)
      std::copy_n(sequence.begin() + static_cast<std::ptrdiff_t>(b * total + start), len,
                  input.begin() + static_cast<std::ptrdiff_t>(b * len));
    const auto step = [&] {
      const Tensor logits = cache ? model.step(input, batch, len, *cache, Logits::last)
                                  : model.forward(input, batch, len, Logits::last);
      // (batch, 1, vocab) on the model's device.
      Tensor copy;
      const Tensor* host = &logits;
      if (!logits.device().is_cpu()) {
        copy = logits.to(Device::cpu(), model.stream());
        host = &copy;
      }
      hooks.choose(t, {host->data<float>(), batch * V}, std::span(tokens).subspan(t * batch, batch));
    };
    if (hooks.run) {
      hooks.run(t, step);
    } else {
      step();
    }
    if (hooks.after) hooks.after(t);
    for (std::size_t b = 0; b < batch; ++b)
      sequence[b * total + P + t] = hooks.feed ? hooks.feed(t, b) : tokens[t * batch + b];
  }
  return tokens;
}

}  // namespace aiopt::nn
