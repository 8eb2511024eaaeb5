#include "nn/training.hpp"

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/fault.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "kernels/cpu/linear_attention.hpp"
#include "kernels/cpu/linear_attention_backward.hpp"
#include "nn/device_ops.hpp"

namespace aiopt::nn {

std::string_view to_string(TrainAttention attention) {
  switch (attention) {
    case TrainAttention::flash: return "flash";
    case TrainAttention::naive: return "naive";
    case TrainAttention::linear_elu: return "linear_elu";
    case TrainAttention::performer: return "performer";
  }
  return "?";
}

TrainAttention parse_train_attention(std::string_view name) {
  for (auto a : {TrainAttention::flash, TrainAttention::naive, TrainAttention::linear_elu, TrainAttention::performer})
    if (name == to_string(a)) return a;
  if (name == "linformer")
    throw InputError("attention 'linformer' cannot train the GPT: it projects the keys and values along the whole "
                     "sequence, so every projected row mixes in later positions and no causal mask applies "
                     "(allowed: flash, naive, linear_elu, performer)");
  throw InputError("attention '" + std::string(name) + "' is unknown (allowed: flash, naive, linear_elu, performer)");
}

bool is_softmax(TrainAttention attention) {
  return attention == TrainAttention::flash || attention == TrainAttention::naive;
}

std::size_t performer_features(std::size_t head_dim) { return 4 * head_dim; }

void TrainingOptions::validate() const {
  if (storage != DType::f32 && storage != DType::f16 && storage != DType::bf16)
    throw InputError("training storage precision '" + to_string(storage) + "' is not supported; use f32, f16 or bf16");
  if (static_cast<bool>(fake_quant.apply) == fake_quant.name.empty())
    throw InputError("training: a fake quantization needs both a name and a rounding");
  if (distill.teacher) {
    try {
      kernels::cpu::check_distillation(distill.loss, "training distillation");
    } catch (const std::invalid_argument& e) {
      throw InputError(e.what());
    }
  }
}

namespace {

std::int64_t dim(std::size_t n) { return static_cast<std::int64_t>(n); }

void check_adaptation(const GptWeights& weights, const Adaptation& a) {
  if (a.grads && !a.adapters) throw std::logic_error("training: adapter gradients without adapters");
  if (a.adapters) {
    const GptConfig& m = a.adapters->model();
    if (m.layers != weights.config.layers || m.channels != weights.config.channels)
      throw InputError("training: adapters for " + m.describe() + " given for a model " + weights.config.describe());
    if (a.adapters->adapters().front().a.device() != weights.wte.device())
      throw InputError("training: adapters on " + to_string(a.adapters->adapters().front().a.device()) +
                       " for weights on " + to_string(weights.wte.device()));
  }
  if (a.base && !weights.wte.device().is_cpu())
    throw InputError("training: QLoRA's int4 base runs on the CPU only (no CUDA dequantization kernel yet)");
}

// What one block keeps for its backward. Under selective recomputation ln1, merged, ln2 and gelu
// stay empty and are recomputed from x, att, mid and fc.
struct BlockActivations {
  Tensor x;                          // (B, T, C) the residual stream entering the block
  Tensor ln1, ln1_mean, ln1_rstd;    // (B, T, C), (B, T), (B, T)
  Tensor q, k, v;                    // (B, H, T, d)
  Tensor att;                        // (B, H, T, d) attention output
  Tensor lse;                        // (B, H, T) flash only
  Tensor phi_q, phi_k;               // (B, H, T, F) linear attention only: the feature maps of q, k
  Tensor merged;                     // (B, T, C) att with the heads merged, c_proj's input
  Tensor mid;                        // (B, T, C) x + attention projection
  Tensor ln2, ln2_mean, ln2_rstd;    // (B, T, C), (B, T), (B, T)
  Tensor fc;                         // (B, T, 4C) before GELU
  Tensor gelu;                       // (B, T, 4C)
};

// The pass over one batch: shapes, options, the device's ops and the weights the products read.
class Pass {
 public:
  Pass(const GptWeights& weights, std::size_t batch, std::size_t len, const TrainingOptions& options, void* stream,
       const Adaptation& adaptation = {})
      : w_(weights), cfg_(weights.config), opt_(options), lora_(adaptation),
        lora_scale_(adaptation.adapters ? adaptation.adapters->config().scale() : 0.0f),
        ops_{weights.wte.device(), stream, options.storage},
        B_(batch), T_(len),
        C_(cfg_.channels), H_(cfg_.heads), d_(cfg_.head_dim()), V_(cfg_.vocab), rows_(batch * len),
        shape_(AttentionShape::self(batch, cfg_.heads, len, cfg_.head_dim(), true)) {
    check_adaptation(weights, adaptation);
    if (is_softmax(opt_.attention)) return;
    if (!device().is_cpu())
      throw InputError("training attention '" + std::string(to_string(opt_.attention)) + "' is not implemented on " +
                       to_string(device()) + "; it runs on the CPU only");
    linear_.batch = B_;
    linear_.heads = H_;
    linear_.seq_len = T_;
    linear_.head_dim = d_;
    linear_.features = opt_.attention == TrainAttention::performer ? performer_features(d_) : d_;
    linear_.causal = true;
    if (opt_.attention == TrainAttention::performer)
      for (std::size_t l = 0; l < cfg_.layers; ++l) {
        projections_.emplace_back(Device::cpu(), linear_.features * d_);
        kernels::cpu::orthogonal_gaussian_projection(projections_.back().data(), linear_.features, d_,
                                                     rng::bits(opt_.feature_seed, l));
      }
  }

  const Device& device() const { return ops_.device; }

  Tensor f32(std::vector<std::int64_t> shape) const { return Tensor::empty(std::move(shape), DType::f32, device()); }
  Tensor btc() const { return f32({dim(B_), dim(T_), dim(C_)}); }
  Tensor bhtd() const { return f32({dim(B_), dim(H_), dim(T_), dim(d_)}); }
  Tensor bhtf() const { return f32({dim(B_), dim(H_), dim(T_), dim(linear_.features)}); }

  // Rounds t to the storage precision, as a 16-bit tensor would hold it.
  void store(Tensor& t) const { ops_.round_through(opt_.storage, t.data<float>(), static_cast<std::size_t>(t.numel())); }

  Tensor embed(const std::int32_t* tokens) const {
    Tensor x = btc();
    ops_.embedding(tokens, w_.wte.data<float>(), w_.wpe.data<float>(), x.data<float>(), B_, T_, 0, V_, cfg_.context,
                   C_);
    store(x);
    return x;
  }

  // The block's forward from a.x; fills `a` by the policy and returns the block's output, or
  // nothing with `output` false: re-running a segment's last block for its activations needs
  // everything but its final projection, whose output the forward already passed on.
  Tensor block_forward(std::size_t layer, BlockActivations& a, bool output = true) const {
    const BlockWeights& w = w_.blocks[layer];
    const std::size_t bt = rows_;
    a.ln1_mean = f32({dim(bt)});
    a.ln1_rstd = f32({dim(bt)});
    Tensor ln1 = layernorm_1(w, a);
    {
      Tensor qkv = f32({dim(B_), dim(T_), 3 * dim(C_)});  // (B, T, 3, H, d)
      block_linear(layer, BlockLinear::attn_qkv, ln1, qkv);
      store(qkv);
      a.q = bhtd();
      a.k = bhtd();
      a.v = bhtd();
      ops_.split_qkv(qkv.data<float>(), a.q.data<float>(), a.k.data<float>(), a.v.data<float>(), B_, T_, H_, d_, T_, 0);
    }
    if (!opt_.selective) a.ln1 = std::move(ln1);
    ln1 = Tensor();
    a.att = bhtd();
    if (opt_.attention == TrainAttention::flash) {
      a.lse = f32({dim(B_), dim(H_), dim(T_)});
      ops_.attention_flash(a.q.data<float>(), a.k.data<float>(), a.v.data<float>(), a.att.data<float>(),
                           a.lse.data<float>(), shape_);
    } else if (opt_.attention == TrainAttention::naive) {
      Tensor scores = f32({dim(B_), dim(H_), dim(T_), dim(T_)});  // (B, H, T, T)
      ops_.attention_naive(a.q.data<float>(), a.k.data<float>(), a.v.data<float>(), a.att.data<float>(),
                           scores.data<float>(), shape_);
    } else {
      linear_attention_forward(layer, a);
    }
    store(a.att);
    Tensor merged = merge(a);
    a.mid = btc();
    block_linear(layer, BlockLinear::attn_proj, merged, a.mid);
    ops_.residual_add(a.x.data<float>(), a.mid.data<float>(), a.mid.data<float>(), bt * C_);
    store(a.mid);
    if (!opt_.selective) a.merged = std::move(merged);
    merged = Tensor();
    a.ln2_mean = f32({dim(bt)});
    a.ln2_rstd = f32({dim(bt)});
    Tensor ln2 = layernorm_2(w, a);
    a.fc = f32({dim(B_), dim(T_), 4 * dim(C_)});
    block_linear(layer, BlockLinear::mlp_fc, ln2, a.fc);
    store(a.fc);
    if (!opt_.selective) a.ln2 = std::move(ln2);
    ln2 = Tensor();
    Tensor gelu = activate(a);
    if (!output) {
      if (!opt_.selective) a.gelu = std::move(gelu);
      return Tensor();
    }
    Tensor out = btc();
    block_linear(layer, BlockLinear::mlp_proj, gelu, out);
    ops_.residual_add(a.mid.data<float>(), out.data<float>(), out.data<float>(), bt * C_);
    store(out);
    if (!opt_.selective) a.gelu = std::move(gelu);
    return out;
  }

  // The block's backward: accumulates its parameter gradients into g and returns ∂L/∂(a.x) from
  // dout = ∂L/∂(block output). Releases a's tensors as soon as they are no longer needed.
  Tensor block_backward(std::size_t layer, BlockWeights& g, BlockActivations& a, Tensor dout) const {
    const BlockWeights& w = w_.blocks[layer];
    const std::size_t bt = rows_;
    // out = mid + gelu·Wᵀ + b
    {
      Tensor gelu = a.gelu.numel() ? std::move(a.gelu) : activate(a);
      Tensor dgelu = f32({dim(B_), dim(T_), 4 * dim(C_)});
      block_linear_backward(layer, BlockLinear::mlp_proj, g, gelu, dout, dgelu);
      store(dgelu);
      gelu = Tensor();
      // fc's gradient overwrites fc once GELU's backward has read it.
      ops_.gelu_tanh_backward(a.fc.data<float>(), dgelu.data<float>(), dgelu.data<float>(), bt * 4 * C_);
      store(dgelu);
      Tensor ln2 = a.ln2.numel() ? std::move(a.ln2) : layernorm_2(w, a);
      Tensor dln2 = btc();
      block_linear_backward(layer, BlockLinear::mlp_fc, g, ln2, dgelu, dln2);
      store(dln2);
      a.fc = Tensor();
      dgelu = Tensor();
      ln2 = Tensor();
      // dmid = dout (residual) + LN2's backward.
      Tensor dmid2 = btc();
      ops_.layernorm_backward(dln2.data<float>(), a.mid.data<float>(), w.ln_2_weight.data<float>(),
                              a.ln2_mean.data<float>(), a.ln2_rstd.data<float>(), dmid2.data<float>(),
                              grad(g.ln_2_weight), grad(g.ln_2_bias), bt, C_);
      ops_.residual_add(dout.data<float>(), dmid2.data<float>(), dout.data<float>(), bt * C_);
      store(dout);
      a.mid = Tensor();
    }
    Tensor& dmid = dout;
    // mid = x + merged·Wᵀ + b
    Tensor datt = bhtd();
    {
      Tensor merged = a.merged.numel() ? std::move(a.merged) : merge(a);
      Tensor dmerged = btc();
      block_linear_backward(layer, BlockLinear::attn_proj, g, merged, dmid, dmerged);
      store(dmerged);
      ops_.split_heads(dmerged.data<float>(), datt.data<float>(), B_, T_, H_, d_);
    }
    Tensor dqkv = f32({dim(B_), dim(T_), 3 * dim(C_)});
    {
      Tensor dq = bhtd(), dk = bhtd(), dv = bhtd();
      if (opt_.attention == TrainAttention::flash) {
        ops_.attention_flash_backward(a.q.data<float>(), a.k.data<float>(), a.v.data<float>(), a.att.data<float>(),
                                      datt.data<float>(), a.lse.data<float>(), dq.data<float>(), dk.data<float>(),
                                      dv.data<float>(), shape_);
      } else if (opt_.attention == TrainAttention::naive) {
        Tensor scores = f32({dim(B_), dim(H_), dim(T_), dim(T_)});  // (B, H, T, T)
        ops_.attention_naive_backward(a.q.data<float>(), a.k.data<float>(), a.v.data<float>(), a.att.data<float>(),
                                      datt.data<float>(), dq.data<float>(), dk.data<float>(), dv.data<float>(),
                                      scores.data<float>(), shape_);
      } else {
        linear_attention_backward(layer, a, datt, dq, dk, dv);
      }
      a.q = Tensor(), a.k = Tensor(), a.v = Tensor(), a.att = Tensor(), a.lse = Tensor();
      a.phi_q = Tensor(), a.phi_k = Tensor();
      datt = Tensor();
      ops_.merge_qkv(dq.data<float>(), dk.data<float>(), dv.data<float>(), dqkv.data<float>(), B_, T_, H_, d_);
      store(dqkv);
    }
    Tensor ln1 = a.ln1.numel() ? std::move(a.ln1) : layernorm_1(w, a);
    Tensor dln1 = btc();
    block_linear_backward(layer, BlockLinear::attn_qkv, g, ln1, dqkv, dln1);
    store(dln1);
    ln1 = Tensor();
    dqkv = Tensor();
    Tensor dx1 = btc();
    ops_.layernorm_backward(dln1.data<float>(), a.x.data<float>(), w.ln_1_weight.data<float>(), a.ln1_mean.data<float>(),
                            a.ln1_rstd.data<float>(), dx1.data<float>(), grad(g.ln_1_weight), grad(g.ln_1_bias), bt,
                            C_);
    ops_.residual_add(dmid.data<float>(), dx1.data<float>(), dmid.data<float>(), bt * C_);
    store(dmid);
    a = BlockActivations();
    return dout;
  }

  // LN_f, the tied LM head and the fused loss: the cross-entropy, or with `teacher` (the
  // teacher's (B, T, V) logits on the device) the distillation loss of opt_.distill. With `grads`,
  // also the head's backward: returns ∂L/∂x_L and accumulates into grads.wte, ln_f. losses: (B·T)
  // on the device.
  Tensor head(const Tensor& x, const std::int32_t* targets, Tensor& losses, GptWeights* grads, float grad_scale,
              const float* teacher = nullptr) const {
    const std::size_t bt = rows_;
    Tensor mean = f32({dim(bt)}), rstd = f32({dim(bt)});
    Tensor xf = btc();
    Tensor logits = logits_of(x, xf, mean, rstd);  // (B, T, V), then its own gradient
    if (!teacher) {
      ops_.softmax_cross_entropy(logits.data<float>(), targets, losses.data<float>(),
                                 grads ? logits.data<float>() : nullptr, bt, V_, grad_scale);
    } else {
      kernels::cpu::Distillation d = opt_.distill.loss;
      // The fault "knowledge_distillation.alpha_swapped" (tests only, core/fault.hpp) weights the
      // soft term by 1 − α and the hard one by α.
      if (fault::active("knowledge_distillation.alpha_swapped")) d.alpha = 1.0f - d.alpha;
      if (grads)
        ops_.distillation_loss_backward(logits.data<float>(), teacher, targets, losses.data<float>(),
                                        static_cast<float*>(nullptr), static_cast<float*>(nullptr),
                                        logits.data<float>(), bt, V_, d, grad_scale);
      else
        ops_.distillation_loss(logits.data<float>(), teacher, targets, losses.data<float>(),
                               static_cast<float*>(nullptr), static_cast<float*>(nullptr), bt, V_, d);
    }
    if (!grads) return Tensor();
    store(logits);
    Tensor dxf = btc();
    ops_.linear_backward(xf.data<float>(), w_.wte.data<float>(), logits.data<float>(), dxf.data<float>(),
                         grad(grads->wte), nullptr, bt, C_, V_);
    store(dxf);
    logits = Tensor();
    Tensor dx = btc();
    ops_.layernorm_backward(dxf.data<float>(), x.data<float>(), w_.ln_f_weight.data<float>(), mean.data<float>(),
                            rstd.data<float>(), dx.data<float>(), grad(grads->ln_f_weight), grad(grads->ln_f_bias),
                            bt, C_);
    store(dx);
    return dx;
  }

  // LN_f and the tied LM head: the (B, T, V) logits of the final residual stream x.
  Tensor logits(const Tensor& x) const {
    Tensor mean = f32({dim(rows_)}), rstd = f32({dim(rows_)});
    Tensor xf = btc();
    return logits_of(x, xf, mean, rstd);
  }

  void embedding_backward(const std::int32_t* tokens, const Tensor& dx, GptWeights& grads) const {
    if (frozen(grads.wte) && frozen(grads.wpe)) return;
    if (frozen(grads.wte) || frozen(grads.wpe))
      throw InputError("training: wte and wpe are frozen together or not at all");
    ops_.embedding_backward(tokens, dx.data<float>(), grads.wte.data<float>(), grads.wpe.data<float>(), B_, T_, V_, C_);
  }

  void round_gradients(GptWeights& grads) const {
    for (auto& [name, t] : grads.named())
      if (!frozen(*t)) store(*t);
    if (lora_.grads)
      for (auto& [name, t] : lora_.grads->named()) store(*t);
  }

 private:
  // LN_f into xf (saving mean and rstd), then the logits.
  Tensor logits_of(const Tensor& x, Tensor& xf, Tensor& mean, Tensor& rstd) const {
    ops_.layernorm_forward(x.data<float>(), w_.ln_f_weight.data<float>(), w_.ln_f_bias.data<float>(), xf.data<float>(),
                           mean.data<float>(), rstd.data<float>(), rows_, C_, cfg_.layernorm_eps);
    store(xf);
    Tensor logits = f32({dim(B_), dim(T_), dim(V_)});
    ops_.linear(xf.data<float>(), w_.wte.data<float>(), nullptr, logits.data<float>(), rows_, C_, V_);
    store(logits);
    return logits;
  }

  // A frozen parameter's gradient tensor is empty: its kernels get null and skip it.
  static bool frozen(const Tensor& grad) { return grad.numel() == 0; }
  static float* grad(Tensor& t) { return frozen(t) ? nullptr : t.data<float>(); }

  // W of block `layer`'s `linear`: the fp32 weight, or QLoRA's int4 base dequantized into scratch.
  const float* weight(std::size_t layer, BlockLinear linear, Tensor& scratch) const {
    const Tensor& w = block_linear_weight(w_.blocks[layer], linear);
    if (!lora_.base) return w.data<float>();
    const LinearDims s = block_linear_dims(cfg_, linear);
    scratch = f32({dim(s.out), dim(s.in)});
    lora_.base->dequantize(layer, linear, scratch.data<float>());
    return scratch.data<float>();
  }

  // y = x·Wᵀ + b of a block linear layer, plus its adapters' terms on their output slices.
  void block_linear(std::size_t layer, BlockLinear linear, const Tensor& x, Tensor& y) const {
    const LinearDims s = block_linear_dims(cfg_, linear);
    {
      Tensor scratch;
      ops_.linear(x.data<float>(), weight(layer, linear, scratch),
                  block_linear_bias(w_.blocks[layer], linear).data<float>(), y.data<float>(), rows_, s.in, s.out);
    }
    if (!lora_.adapters) return;
    for (const LoraAdapters::Adapter* a : lora_.adapters->at(layer, linear))
      ops_.lora_adapter_forward(x.data<float>(), a->a.data<float>(), a->b.data<float>(), lora_scale_, nullptr,
                                y.data<float>() + a->site.offset, s.out, lora_shape(a->site));
  }

  // Its backward: dx written; W's and b's gradients accumulated into g unless frozen (empty), the
  // adapters' into the adaptation's grads. u = x·Aᵀ is recomputed (rank columns, a small product
  // beside the layer's own) rather than kept.
  void block_linear_backward(std::size_t layer, BlockLinear linear, BlockWeights& g, const Tensor& x,
                             const Tensor& dy, Tensor& dx) const {
    const LinearDims s = block_linear_dims(cfg_, linear);
    {
      Tensor scratch;
      ops_.linear_backward(x.data<float>(), weight(layer, linear, scratch), dy.data<float>(), dx.data<float>(),
                           grad(block_linear_weight(g, linear)), grad(block_linear_bias(g, linear)), rows_, s.in,
                           s.out);
    }
    if (!lora_.adapters) return;
    const auto adapters = lora_.adapters->at(layer, linear);
    const auto grads = lora_.grads->at(layer, linear);
    for (std::size_t i = 0; i < adapters.size(); ++i)
      ops_.lora_adapter_backward(x.data<float>(), adapters[i]->a.data<float>(), adapters[i]->b.data<float>(), nullptr,
                                 dy.data<float>() + adapters[i]->site.offset, s.out, lora_scale_,
                                 dx.data<float>(), grads[i]->a.data<float>(), grads[i]->b.data<float>(),
                                 lora_shape(adapters[i]->site));
  }

  kernels::cpu::LoraShape lora_shape(const LoraSite& site) const {
    return {rows_, site.in, site.out, lora_.adapters->config().rank};
  }

  // Causal linear attention (CPU): the feature maps of q and k, kept in `a` for the backward,
  // then linear_attention over them into a.att.
  void linear_attention_forward(std::size_t layer, BlockActivations& a) const {
    namespace cpu = kernels::cpu;
    const std::size_t G = B_ * H_, F = linear_.features;
    a.phi_q = bhtf();
    a.phi_k = bhtf();
    if (opt_.attention == TrainAttention::linear_elu) {
      cpu::elu_feature_map(a.q.data<float>(), a.phi_q.data<float>(), G * T_ * F);
      cpu::elu_feature_map(a.k.data<float>(), a.phi_k.data<float>(), G * T_ * F);
    } else {
      // Queries stabilized per row, keys per (b, h): constants that cancel in every out_i
      // (cpu::favor_feature_map), so the backward holds them fixed.
      const float* w = projections_[layer].data();
      cpu::favor_feature_map(a.q.data<float>(), w, a.phi_q.data<float>(), G, T_, d_, F, cpu::FavorRole::query);
      cpu::favor_feature_map(a.k.data<float>(), w, a.phi_k.data<float>(), G, T_, d_, F, cpu::FavorRole::key);
    }
    Tensor workspace = f32({dim(cpu::linear_attention_workspace_elements(linear_))});
    cpu::linear_attention(a.phi_q.data<float>(), a.phi_k.data<float>(), a.v.data<float>(), a.att.data<float>(),
                          workspace.data<float>(), linear_);
  }

  // Its backward: datt through the attention to dφq, dφk, dv, then through the feature maps to
  // dq, dk. a.att is the forward's output.
  void linear_attention_backward(std::size_t layer, const BlockActivations& a, const Tensor& datt, Tensor& dq,
                                 Tensor& dk, Tensor& dv) const {
    namespace cpu = kernels::cpu;
    const std::size_t G = B_ * H_, F = linear_.features;
    Tensor dphi_q = bhtf(), dphi_k = bhtf();
    {
      Tensor workspace = f32({dim(cpu::linear_attention_backward_workspace_elements(linear_))});
      cpu::linear_attention_causal_backward(a.phi_q.data<float>(), a.phi_k.data<float>(), a.v.data<float>(),
                                            a.att.data<float>(), datt.data<float>(), dphi_q.data<float>(),
                                            dphi_k.data<float>(), dv.data<float>(), workspace.data<float>(), linear_);
    }
    if (opt_.attention == TrainAttention::linear_elu) {
      cpu::elu_feature_map_backward(a.q.data<float>(), a.phi_q.data<float>(), dphi_q.data<float>(), dq.data<float>(),
                                    G * T_ * F);
      cpu::elu_feature_map_backward(a.k.data<float>(), a.phi_k.data<float>(), dphi_k.data<float>(), dk.data<float>(),
                                    G * T_ * F);
    } else {
      const float* w = projections_[layer].data();
      cpu::favor_feature_map_backward(a.q.data<float>(), w, a.phi_q.data<float>(), dphi_q.data<float>(),
                                      dq.data<float>(), G * T_, d_, F);
      cpu::favor_feature_map_backward(a.k.data<float>(), w, a.phi_k.data<float>(), dphi_k.data<float>(),
                                      dk.data<float>(), G * T_, d_, F);
    }
  }

  Tensor layernorm_1(const BlockWeights& w, BlockActivations& a) const {
    Tensor y = btc();
    ops_.layernorm_forward(a.x.data<float>(), w.ln_1_weight.data<float>(), w.ln_1_bias.data<float>(), y.data<float>(),
                           a.ln1_mean.data<float>(), a.ln1_rstd.data<float>(), rows_, C_, cfg_.layernorm_eps);
    store(y);
    return y;
  }
  Tensor layernorm_2(const BlockWeights& w, BlockActivations& a) const {
    Tensor y = btc();
    ops_.layernorm_forward(a.mid.data<float>(), w.ln_2_weight.data<float>(), w.ln_2_bias.data<float>(),
                           y.data<float>(), a.ln2_mean.data<float>(), a.ln2_rstd.data<float>(), rows_, C_,
                           cfg_.layernorm_eps);
    store(y);
    return y;
  }
  Tensor merge(const BlockActivations& a) const {
    Tensor y = btc();
    ops_.merge_heads(a.att.data<float>(), y.data<float>(), B_, T_, H_, d_);
    return y;
  }
  Tensor activate(const BlockActivations& a) const {
    Tensor y = f32({dim(B_), dim(T_), 4 * dim(C_)});
    ops_.gelu_tanh(a.fc.data<float>(), y.data<float>(), rows_ * 4 * C_);
    store(y);
    return y;
  }

  const GptWeights& w_;
  const GptConfig& cfg_;
  const TrainingOptions& opt_;
  Adaptation lora_;
  float lora_scale_ = 0.0f;
  DeviceOps ops_;
  std::size_t B_, T_, C_, H_, d_, V_, rows_;
  AttentionShape shape_;
  kernels::cpu::LinearAttentionShape linear_;          // linear attention only
  std::vector<memory::Buffer<float>> projections_;     // performer: W (F, d) of every layer
};

void check_batch(const GptConfig& cfg, const Batch& batch) {
  const std::size_t n = batch.batch * batch.seq_len;
  if (n == 0) throw InputError("training batch: batch and seq_len must be positive");
  if (batch.inputs.size() != n || batch.targets.size() != n)
    throw InputError("training batch: " + std::to_string(batch.inputs.size()) + " inputs and " +
                     std::to_string(batch.targets.size()) + " targets for " + std::to_string(batch.batch) + " × " +
                     std::to_string(batch.seq_len));
  if (batch.seq_len > cfg.context)
    throw InputError("training batch: sequences of " + std::to_string(batch.seq_len) +
                     " tokens exceed the model's context of " + std::to_string(cfg.context));
  for (std::size_t i = 0; i < n; ++i) {
    if (batch.inputs[i] < 0 || static_cast<std::size_t>(batch.inputs[i]) >= cfg.vocab)
      throw InputError("training batch: input token " + std::to_string(batch.inputs[i]) + " at index " +
                       std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(cfg.vocab) + ")");
    if (batch.targets[i] >= static_cast<std::int32_t>(cfg.vocab))
      throw InputError("training batch: target token " + std::to_string(batch.targets[i]) + " at index " +
                       std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(cfg.vocab) + ")");
  }
}

// Tokens where the kernels read them: the host vector itself, or a device copy (as 4-byte f32
// elements, bit for bit, since DType has no 32-bit integer).
struct DeviceTokens {
  DeviceTokens(const std::vector<std::int32_t>& host, const Device& device, void* stream) {
    ptr = host.data();
    if (device.is_cuda()) {
      copy = Tensor::from_host(std::as_bytes(std::span(host)), {dim(host.size())}, DType::f32, device, stream);
      ptr = reinterpret_cast<const std::int32_t*>(copy.data<float>());
    }
  }
  Tensor copy;
  const std::int32_t* ptr = nullptr;
};

// Mean over the counted targets of the per-position losses (B·T, on the device, written on
// `stream`).
double mean_loss(const Tensor& losses, const std::vector<std::int32_t>& targets, void* stream) {
  const Tensor host = losses.to(Device::cpu(), stream);
  const float* l = host.data<float>();
  double sum = 0.0;
  std::size_t counted = 0;
  for (std::size_t i = 0; i < targets.size(); ++i)
    if (targets[i] >= 0) sum += l[i], ++counted;
  return counted ? sum / static_cast<double>(counted) : 0.0;
}

std::size_t counted_targets(const std::vector<std::int32_t>& targets) {
  std::size_t n = 0;
  for (auto t : targets) n += t >= 0;
  return n;
}

void check_grads(const GptWeights& weights, const GptWeights& grads) {
  const GptConfig& a = weights.config;
  const GptConfig& b = grads.config;
  if (a.layers != b.layers || a.channels != b.channels || a.heads != b.heads || a.context != b.context ||
      a.vocab != b.vocab || grads.blocks.size() != weights.blocks.size())
    throw InputError("training: gradients for " + b.describe() + " given for a model " + a.describe());
  for (const auto& [name, t] : grads.named())
    if (t->numel() != 0 && t->device() != weights.wte.device())
      throw InputError("training: gradient " + name + " on " + to_string(t->device()) + " for weights on " +
                       to_string(weights.wte.device()));
}

// The weights the products read: the fp32 master weights, or a copy rounded to the storage
// precision (what a mixed-precision step casts them to) and fake-quantized (QAT).
const GptWeights& working_weights(const GptWeights& master, const TrainingOptions& options,
                                  std::optional<GptWeights>& rounded, void* stream) {
  if (options.storage == DType::f32 && !options.fake_quant.apply) return master;
  for (const auto& [name, t] : master.named())
    if (t->numel() == 0)
      throw InputError("training: weight " + name + " is not held in fp32 (an int4 base), so it cannot be rounded to " +
                       to_string(options.storage) + " or fake-quantized");
  rounded.emplace(GptWeights::allocate(master.config, master.wte.device()));
  rounded->copy_from(master);
  const DeviceOps ops{master.wte.device(), stream};
  for (auto& [name, t] : rounded->named()) ops.round_through(options.storage, t->data<float>(), t->numel());
  if (options.fake_quant.apply) options.fake_quant.apply(*rounded);
  return *rounded;
}

void check_teacher(const GptWeights& student, const Batch& batch, const Gpt& teacher, std::size_t counted) {
  const GptConfig& t = teacher.config();
  if (teacher.device() != student.wte.device())
    throw InputError("training distillation: the teacher is on " + to_string(teacher.device()) +
                     " and the student on " + to_string(student.wte.device()));
  if (t.vocab != student.config.vocab)
    throw InputError("training distillation: the teacher's vocabulary of " + std::to_string(t.vocab) +
                     " differs from the student's " + std::to_string(student.config.vocab));
  if (batch.seq_len > t.context)
    throw InputError("training distillation: sequences of " + std::to_string(batch.seq_len) +
                     " tokens exceed the teacher's context of " + std::to_string(t.context));
  if (counted != batch.targets.size())
    throw InputError("training distillation: " + std::to_string(batch.targets.size() - counted) +
                     " targets are uncounted (< 0); every position of a distilled batch needs its soft target");
}

// The teacher's (B, T, V) logits for the batch's inputs, on its device, from the inference forward
// (no activations kept, no gradient). The fault "knowledge_distillation.teacher_fed_targets"
// (tests only, core/fault.hpp) feeds it the targets instead: its logits one position ahead.
Tensor teach(Gpt& teacher, const Batch& batch, void* stream) {
  teacher.set_stream(stream);
  const bool ahead = fault::active("knowledge_distillation.teacher_fed_targets");
  return teacher.forward(ahead ? batch.targets : batch.inputs, batch.batch, batch.seq_len, Logits::all);
}

}  // namespace

PassResult forward_backward(const GptWeights& weights, const Batch& batch, GptWeights& grads,
                            const TrainingOptions& options, float grad_scale, void* stream,
                            const Adaptation& adaptation) {
  options.validate();
  check_batch(weights.config, batch);
  check_grads(weights, grads);
  if (adaptation.adapters && !adaptation.grads)
    throw std::logic_error("forward_backward: adapters without a gradient accumulator");
  const std::size_t counted = counted_targets(batch.targets);
  if (options.distill.teacher) check_teacher(weights, batch, *options.distill.teacher, counted);
  std::optional<GptWeights> rounded;
  const GptWeights& w = working_weights(weights, options, rounded, stream);
  const Pass pass(w, batch.batch, batch.seq_len, options, stream, adaptation);
  const DeviceTokens inputs(batch.inputs, pass.device(), stream), targets(batch.targets, pass.device(), stream);
  const Tensor teacher_logits = options.distill.teacher ? teach(*options.distill.teacher, batch, stream) : Tensor();
  const std::size_t L = weights.config.layers;
  const std::size_t k = options.checkpoint_every;

  // Forward. Block l's activations are kept when nothing is recomputed; otherwise only the
  // residual stream entering each segment's first block.
  std::vector<BlockActivations> kept(L);
  Tensor x = pass.embed(inputs.ptr);
  for (std::size_t l = 0; l < L; ++l) {
    BlockActivations a;
    a.x = std::move(x);
    x = pass.block_forward(l, a);
    if (k == 0)
      kept[l] = std::move(a);
    else if (l % k == 0)
      kept[l].x = std::move(a.x);
  }

  Tensor losses = pass.f32({dim(batch.batch * batch.seq_len)});
  const float scale = counted ? grad_scale / static_cast<float>(counted) : 0.0f;
  Tensor dx = pass.head(x, targets.ptr, losses, &grads, scale,
                       options.distill.teacher ? teacher_logits.data<float>() : nullptr);
  x = Tensor();

  // Backward, block by block from the last; with checkpoints, each segment is re-run forward
  // (keeping everything) just before its backward.
  // The fault "gradient_checkpointing.stale_recompute" (tests only, core/fault.hpp) re-runs each
  // block from a stale residual stream: the checkpoint k blocks earlier for a segment's first
  // block (none for the first segment), the previous block's input inside a segment.
  const bool stale = k != 0 && fault::active("gradient_checkpointing.stale_recompute");
  for (std::size_t end = L; end > 0;) {
    const std::size_t begin = k == 0 ? end - 1 : (end - 1) / k * k;
    if (k != 0) {
      if (stale && begin > 0) kept[begin].x = kept[begin - k].x.to(pass.device());
      for (std::size_t l = begin; l + 1 < end; ++l) {
        Tensor out = pass.block_forward(l, kept[l]);
        kept[l + 1].x = stale ? kept[l].x.to(pass.device()) : std::move(out);
      }
      pass.block_forward(end - 1, kept[end - 1], false);
    }
    for (std::size_t l = end; l-- > begin;)
      dx = pass.block_backward(l, grads.blocks[l], kept[l], std::move(dx));
    end = begin;
  }
  pass.embedding_backward(inputs.ptr, dx, grads);
  pass.round_gradients(grads);
  return {mean_loss(losses, batch.targets, stream)};
}

GradientCensus gradient_census(const GptWeights& grads, void* stream, const LoraAdapters* adapter_grads) {
  GradientCensus census;
  std::vector<const Tensor*> tensors;
  for (const auto& [name, t] : grads.named())
    if (t->numel() != 0) tensors.push_back(t);
  if (adapter_grads)
    for (const auto& [name, t] : adapter_grads->named()) tensors.push_back(t);
  if (tensors.empty()) return census;
  const Device& device = tensors.front()->device();
  const bool cuda = device.is_cuda();
#if AIOPT_HAVE_CUDA
  Tensor counts;  // zeros, non-finite: two uint64 counters on the device, zeroed on `stream`
  const std::array<float, 4> zero{};
  if (cuda) counts = Tensor::from_host(std::as_bytes(std::span(zero)), {4}, DType::f32, device, stream);
#endif
  for (const Tensor* t : tensors) {
    const auto n = static_cast<std::size_t>(t->numel());
    census.elements += n;
    if (!cuda) {
      const auto c = kernels::cpu::value_census(t->data<float>(), n);
      census.zeros += c.zeros;
      census.nonfinite += c.nonfinite;
    }
#if AIOPT_HAVE_CUDA
    else {
      kernels::cuda::value_census(t->data<float>(), n, reinterpret_cast<unsigned long long*>(counts.data<float>()),
                                  stream);
    }
#endif
  }
#if AIOPT_HAVE_CUDA
  if (cuda) {
    const Tensor host = counts.to(Device::cpu(), stream);
    const auto* c = reinterpret_cast<const unsigned long long*>(host.data<float>());
    census.zeros = static_cast<std::size_t>(c[0]);
    census.nonfinite = static_cast<std::size_t>(c[1]);
  }
#else
  (void)stream;
#endif
  return census;
}

namespace {

// Evaluation's options: `training`'s attention (and feature_seed); fp32 storage.
TrainingOptions evaluation_options(const TrainingOptions& training) {
  TrainingOptions options;
  options.attention = training.attention;
  options.feature_seed = training.feature_seed;
  return options;
}

// The residual stream after the last block, from the batch's inputs.
Tensor final_stream(const Pass& pass, const std::int32_t* inputs, std::size_t layers) {
  Tensor x = pass.embed(inputs);
  for (std::size_t l = 0; l < layers; ++l) {
    BlockActivations a;
    a.x = std::move(x);
    x = pass.block_forward(l, a);
  }
  return x;
}

}  // namespace

double evaluate_loss(const GptWeights& weights, const Batch& batch, const TrainingOptions& training, void* stream,
                     const Adaptation& adaptation) {
  check_batch(weights.config, batch);
  const TrainingOptions options = evaluation_options(training);
  const Pass pass(weights, batch.batch, batch.seq_len, options, stream, {adaptation.adapters, nullptr, adaptation.base});
  const DeviceTokens inputs(batch.inputs, pass.device(), stream), targets(batch.targets, pass.device(), stream);
  const Tensor x = final_stream(pass, inputs.ptr, weights.blocks.size());
  Tensor losses = pass.f32({dim(batch.batch * batch.seq_len)});
  pass.head(x, targets.ptr, losses, nullptr, 1.0f);
  return mean_loss(losses, batch.targets, stream);
}

Tensor forward_logits(const GptWeights& weights, const Batch& batch, const TrainingOptions& training, void* stream,
                      const Adaptation& adaptation) {
  check_batch(weights.config, batch);
  const TrainingOptions options = evaluation_options(training);
  const Pass pass(weights, batch.batch, batch.seq_len, options, stream, {adaptation.adapters, nullptr, adaptation.base});
  const DeviceTokens inputs(batch.inputs, pass.device(), stream);
  const Tensor x = final_stream(pass, inputs.ptr, weights.blocks.size());
  return pass.logits(x);
}

GptWeights gradients_for(const GptConfig& config, const Device& device,
                         const std::function<bool(const std::string&)>& trainable) {
  GptWeights g;
  g.config = config;
  g.blocks.resize(config.layers);
  for (auto& [name, t] : g.named())
    if (trainable(name)) *t = Tensor::zeros(GptWeights::parameter_shape(config, name), DType::f32, device);
  return g;
}

}  // namespace aiopt::nn
