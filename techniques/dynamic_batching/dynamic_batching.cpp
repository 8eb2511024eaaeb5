#include "techniques/dynamic_batching/dynamic_batching.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>

#include "core/error.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "nn/decoding.hpp"
#include "nn/model_cache.hpp"
#include "nn/paged_kv_cache.hpp"
#include "techniques/dynamic_batching/calibration.hpp"
#include "techniques/dynamic_batching/executor.hpp"
#include "techniques/dynamic_batching/serving_metrics.hpp"
#include "techniques/technique_parts.hpp"

namespace aiopt {

namespace db = dynamic_batching;

// ---- parameters and variants

static std::string summary() {
  return "a Poisson or traced stream of requests served one at a time, in static or dynamic batches, or "
         "continuously (admitted and retired every step) through a paged KV cache";
}

static std::vector<ParamSpec> params() {
  return {
      choice_param("model", "small", "tiny", {"tiny", "small", "medium"}, "",
                   "the served model's preset, trained by nn::standard_training and kept in the model cache"),
      real_param("rate", 8.0, 40.0, 0.0, unbounded, "req/s", "λ: requests per second offered (> 0)"),
      choice_param("arrivals", "poisson", std::nullopt, {"poisson", "bursty"}, "",
                   "poisson: exponential gaps; bursty: gamma gaps of the same mean with burst_cv"),
      real_param("burst_cv", 3.0, std::nullopt, 0.0, unbounded, "",
                 "bursty: the coefficient of variation of the gaps (> 1; Poisson's is 1)"),
      integer_param("requests", 64, 24, 1, unbounded, "requests", "requests in the stream"),
      string_param("prompt_lens", "uniform:8,48",
                   "prompt lengths: fixed:N, uniform:LO,HI or lognormal:MEDIAN,SIGMA,MAX (tokens)"),
      string_param("output_lens", "uniform:8,48", "output lengths, as prompt_lens; a request stops at its length"),
      string_param("trace", "",
                   "a CSV file of arrival_s,prompt_len,output_len rows in place of the generated stream"),
      integer_param("max_batch", 16, 8, 1, unbounded, "sequences",
                    "sequences in one step; static waits for this many (sequential: 1)"),
      integer_param("max_step_tokens", 256, 64, 1, unbounded, "tokens",
                    "continuous: new tokens in one step; longer prompts are prefilled in chunks"),
      real_param("batch_timeout_ms", 200.0, std::nullopt, 0.0, unbounded, "ms",
                 "static: the longest the oldest waiting request waits for a full batch"),
      real_param("window_ms", 10.0, std::nullopt, 0.0, unbounded, "ms",
                 "dynamic: how long a batch gathers after its first request arrived"),
      integer_param("block_size", 16, std::nullopt, 1, unbounded, "positions", "continuous: positions per KV block"),
      integer_param("kv_blocks", 0, std::nullopt, 0, unbounded, "blocks",
                    "continuous: blocks in the pool; 0: as many positions as the contiguous cache of max_batch "
                    "slots (fewer make it preempt)"),
      choice_param("clock", "real", std::nullopt, {"real", "virtual"}, "",
                   "real: the model serves on this machine; virtual: no model runs, each step takes the step-cost "
                   "model's time"),
      choice_param("costs", "measured", std::nullopt, {"measured", "given"}, "",
                   "virtual: the step costs measured on this machine with the model, or the cost_ parameters"),
      real_param("cost_fixed_ms", 0.0, std::nullopt, 0.0, unbounded, "ms", "given costs: ms per step"),
      real_param("cost_per_token_ms", 0.0, std::nullopt, 0.0, unbounded, "ms", "given costs: ms per new token"),
      real_param("cost_per_sequence_ms", 0.0, std::nullopt, 0.0, unbounded, "ms",
                 "given costs: ms per sequence in the step"),
      real_param("cost_per_kilo_key_read_ms", 0.0, std::nullopt, 0.0, unbounded, "ms",
                 "given costs: ms per 1000 keys read by attention"),
      real_param("slo_ttft_ms", 1000.0, std::nullopt, 0.0, unbounded, "ms", "goodput: the longest time to first token"),
      real_param("slo_tpot_ms", 100.0, std::nullopt, 0.0, unbounded, "ms",
                 "goodput: the longest time per output token"),
  };
}

const VariantTable<db::Policy>& db::policies() {
  static const VariantTable<Policy> table(
      "dynamic_batching",
      {
          {Policy::sequential, "sequential", "one request at a time, prefill then decode to its end", true},
          {Policy::static_batch, "static",
           "waits for max_batch requests (or batch_timeout_ms); the batch runs and is released together"},
          {Policy::dynamic, "dynamic", "the requests waiting window_ms after the first; runs to its end as a batch"},
          {Policy::continuous, "continuous",
           "iteration-level: admits and retires requests every step, chunked prefill, paged KV cache"},
      });
  return table;
}

static std::vector<Variant> variants() { return db::policies().variants(); }

// ---- the case

namespace {

struct Workload {
  std::vector<db::Request> requests;
  std::size_t longest = 0;  // cache positions of the longest request the stream may hold
  std::string limits;       // where `longest` comes from, for messages
};

Workload make_workload(const Case& c) {
  Workload w;
  const std::string& trace = c.params.string("trace");
  if (!trace.empty()) {
    w.requests = db::read_trace(trace);
    for (const auto& r : w.requests) w.longest = std::max(w.longest, db::cache_positions(r));
    w.limits = "the trace " + trace + " has a request of " + std::to_string(w.longest) + " cache positions";
    return w;
  }
  db::WorkloadSpec spec;
  spec.arrivals = c.params.string("arrivals") == "bursty" ? db::Arrivals::bursty : db::Arrivals::poisson;
  spec.rate = c.params.real("rate");
  spec.burst_cv = c.params.real("burst_cv");
  spec.requests = static_cast<std::size_t>(c.params.integer("requests"));
  spec.prompt_lens = db::LengthDistribution::parse(c.params.string("prompt_lens"), "prompt_lens");
  spec.output_lens = db::LengthDistribution::parse(c.params.string("output_lens"), "output_lens");
  spec.validate();
  w.requests = db::make_workload(spec, rng::bits(c.seed, 11));
  // A server knows its limits, not the lengths to come: a slot holds the longest the
  // distributions allow.
  w.longest = spec.prompt_lens.max() + spec.output_lens.max() - 1;
  w.limits = "prompt_lens (at most " + std::to_string(spec.prompt_lens.max()) + ") and output_lens (at most " +
             std::to_string(spec.output_lens.max()) + ") allow a request of " + std::to_string(w.longest) +
             " cache positions (prompt + output − 1)";
  return w;
}

nn::TrainConfig model_config(const Case& c) { return nn::standard_training(c.params.string("model")); }

db::SchedulerSettings settings(const Case& c) {
  db::SchedulerSettings s;
  s.policy = db::policies().parse(c.variant);
  s.max_batch = s.policy == db::Policy::sequential ? 1 : static_cast<std::size_t>(c.params.integer("max_batch"));
  s.max_step_tokens = static_cast<std::size_t>(c.params.integer("max_step_tokens"));
  s.batch_timeout_s = c.params.real("batch_timeout_ms") * 1e-3;
  s.window_s = c.params.real("window_ms") * 1e-3;
  return s;
}

// The pool: request-level policies hold one slot of the longest request per sequence;
// continuous the same positions (or kv_blocks) in blocks of block_size.
std::pair<std::size_t, std::size_t> pool_shape(const Case& c, const db::SchedulerSettings& s, std::size_t longest) {
  if (s.policy != db::Policy::continuous) return {s.max_batch, longest};
  const auto block = static_cast<std::size_t>(c.params.integer("block_size"));
  std::size_t blocks = static_cast<std::size_t>(c.params.integer("kv_blocks"));
  if (blocks == 0) blocks = (static_cast<std::size_t>(c.params.integer("max_batch")) * longest + block - 1) / block;
  return {blocks, block};
}

bool uses_model(const Case& c) { return c.params.string("clock") == "real" || c.params.string("costs") == "measured"; }

db::StepCost given_costs(const Case& c) {
  return {c.params.real("cost_fixed_ms"), c.params.real("cost_per_token_ms"), c.params.real("cost_per_sequence_ms"),
          c.params.real("cost_per_kilo_key_read_ms"), {}};
}

// Prompts from the corpus's validation text: request i's from a seeded offset.
std::vector<std::vector<std::int32_t>> make_prompts(const Case& c, const std::vector<db::Request>& requests) {
  std::size_t longest = 0;
  for (const auto& r : requests) longest = std::max(longest, r.prompt_len);
  const std::vector<std::int32_t> text = nn::load_tokens(model_config(c).data, longest + 1).validation;
  if (text.size() <= longest)
    throw InputError("dynamic_batching: the corpus's validation text has " + std::to_string(text.size()) +
                     " tokens, fewer than the longest prompt of " + std::to_string(longest));
  std::vector<std::vector<std::int32_t>> prompts;
  const std::uint64_t seed = rng::bits(c.seed, 12);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const std::size_t n = requests[i].prompt_len, at = rng::bits(seed, i) % (text.size() - n);
    prompts.emplace_back(text.begin() + static_cast<std::ptrdiff_t>(at),
                         text.begin() + static_cast<std::ptrdiff_t>(at + n));
  }
  return prompts;
}

Metric plain(std::string name, double value, std::string unit, Better better, bool compared = true) {
  return {std::move(name), value, std::move(unit), better, compared};
}

void add_summary(std::vector<Metric>& out, const db::ServingSummary& s) {
  out.push_back(time_metric("output_tokens_per_s", s.output_tokens_per_s, "tok/s", Better::higher));
  out.push_back(time_metric("requests_per_s", s.requests_per_s, "req/s", Better::higher));
  out.push_back(time_metric("goodput_requests_per_s", s.goodput_requests_per_s, "req/s", Better::higher));
  out.push_back(time_metric("slo_attainment", s.slo_attainment, "", Better::higher));
  for (const auto& [name, p] : {std::pair{"ttft", s.ttft_ms}, std::pair{"tpot", s.tpot_ms}, std::pair{"e2e", s.e2e_ms}}) {
    out.push_back(time_metric(std::string(name) + "_p50_ms", p.p50, "ms", Better::lower));
    out.push_back(time_metric(std::string(name) + "_p90_ms", p.p90, "ms", Better::lower));
    out.push_back(time_metric(std::string(name) + "_p99_ms", p.p99, "ms", Better::lower));
  }
}

void add_costs(std::vector<Metric>& out, const db::StepCost& c) {
  out.push_back(plain("cost_fixed_ms", c.fixed_ms, "ms", Better::lower, false));
  out.push_back(plain("cost_per_token_ms", c.per_token_ms, "ms", Better::lower, false));
  out.push_back(plain("cost_per_sequence_ms", c.per_sequence_ms, "ms", Better::lower, false));
  out.push_back(plain("cost_per_kilo_key_read_ms", c.per_kilo_key_read_ms, "ms", Better::lower, false));
}

class ServingRun : public Run {
 public:
  ServingRun(const Case& c, const Device& device, Workload workload)
      : settings_(settings(c)), requests_(std::move(workload.requests)), longest_(workload.longest),
        slo_{c.params.real("slo_ttft_ms"), c.params.real("slo_tpot_ms")}, real_(c.params.string("clock") == "real"),
        seed_(c.seed) {
    std::tie(blocks_, block_size_) = pool_shape(c, settings_, longest_);
    prompts_ = real_ ? make_prompts(c, requests_) : placeholder_prompts();
    if (uses_model(c)) model_ = std::make_unique<nn::Gpt>(nn::trained_model(model_config(c), device).weights);
    if (real_) {
      memory::Scope scope(device);
      cache_ = std::make_unique<nn::PagedKvCache>(model_->config(), blocks_, block_size_, device);
      pool_bytes_ = scope.peak_bytes();
    }
    cost_ = c.params.string("costs") == "given" ? given_costs(c) : std::optional<db::StepCost>{};
  }

  void step() override {
    if (real_) {
      db::RealExecutor exec(*model_, *cache_);
      log_ = db::serve(requests_, prompts_, settings_, cache_->tables(), exec);
    } else {
      nn::BlockTables tables(blocks_, block_size_);
      db::VirtualExecutor exec(costs(), tables, rng::bits(seed_, 14));
      log_ = db::serve(requests_, prompts_, settings_, tables, exec);
    }
  }

  std::vector<Metric> finish() override {
    if (log_.requests.empty()) throw std::logic_error("dynamic_batching: finish() before any step");
    const db::ServingSummary s = db::summarize(log_, settings_.max_batch, slo_);
    std::vector<Metric> out;
    add_summary(out, s);
    out.push_back(plain("batch_occupancy", s.batch_occupancy, "", Better::higher, false));
    out.push_back(plain("mean_step_sequences", s.mean_step_sequences, "", Better::higher, false));
    out.push_back(plain("mean_step_tokens", s.mean_step_tokens, "tok", Better::higher, false));
    out.push_back(plain("steps", static_cast<double>(s.steps), "", Better::lower, false));
    out.push_back(plain("preemptions", static_cast<double>(s.preemptions), "", Better::lower));
    out.push_back(plain("kv_blocks", static_cast<double>(blocks_), "", Better::lower, false));
    out.push_back(plain("kv_block_positions", static_cast<double>(block_size_), "", Better::lower, false));
    out.push_back(plain("kv_peak_blocks", static_cast<double>(log_.peak_blocks), "", Better::lower, false));
    out.push_back(plain("kv_peak_positions", static_cast<double>(log_.peak_blocks * block_size_), "", Better::lower));
    out.push_back(plain("kv_waste_positions_per_sequence", s.kv_waste_positions_per_sequence, "", Better::lower));
    out.push_back(plain("kv_written_fraction", s.kv_written_fraction, "", Better::higher));
    if (!real_) {
      add_costs(out, costs());
      return out;
    }
    // The pool as the tracked allocator counted it, and its peak use at that size per block.
    out.push_back(plain("kv_pool_bytes", static_cast<double>(pool_bytes_), "B", Better::lower));
    out.push_back(plain("kv_peak_bytes", static_cast<double>(log_.peak_blocks * (pool_bytes_ / blocks_)), "B",
                        Better::lower));
    check_tokens(out);
    // The step-cost model fitted to this run's own steps, and the virtual clock driven by it on
    // the same stream: how far the scheduler on predicted time lands from what the machine did.
    // Its coefficients are what costs=given takes for what-if runs.
    std::vector<db::StepShape> shapes;
    std::vector<double> ms;
    for (const db::StepRecord& st : log_.steps) {
      shapes.push_back(st.shape);
      ms.push_back(st.ms);
    }
    const db::StepCost fitted = db::StepCost::fit(shapes, ms);
    // The mean of a few replays, each drawing its own residuals: one draw of the tails is as
    // noisy as the real run's, and the comparison should carry only the latter's noise.
    constexpr std::uint64_t replays = 8;
    db::ServingSummary v;
    for (std::uint64_t k = 0; k < replays; ++k) {
      const db::ServingSummary one = db::summarize(replay(fitted, k), settings_.max_batch, slo_);
      v.output_tokens_per_s += one.output_tokens_per_s / replays;
      for (auto [mean, of] : {std::pair{&v.ttft_ms, &one.ttft_ms}, std::pair{&v.e2e_ms, &one.e2e_ms}}) {
        mean->p50 += of->p50 / replays;
        mean->p99 += of->p99 / replays;
      }
    }
    auto ratio = [&](const std::string& name, double virt, double real) {
      out.push_back(plain("virtual_over_real_" + name, real > 0.0 ? virt / real : 0.0, "x", Better::higher, false));
    };
    ratio("output_tokens_per_s", v.output_tokens_per_s, s.output_tokens_per_s);
    ratio("ttft_p50", v.ttft_ms.p50, s.ttft_ms.p50);
    ratio("ttft_p99", v.ttft_ms.p99, s.ttft_ms.p99);
    ratio("e2e_p50", v.e2e_ms.p50, s.e2e_ms.p50);
    ratio("e2e_p99", v.e2e_ms.p99, s.e2e_ms.p99);
    add_costs(out, fitted);
    return out;
  }

 private:
  std::vector<std::vector<std::int32_t>> placeholder_prompts() const {
    std::vector<std::vector<std::int32_t>> p;
    for (const auto& r : requests_) p.emplace_back(r.prompt_len, 0);
    return p;
  }

  // The virtual clock's step costs: given, or measured once on the model (calibration.hpp).
  db::StepCost costs() {
    if (!cost_) {
      const db::MeasuredSteps m =
          db::measure_steps(*model_, std::max<std::size_t>(settings_.max_batch, 1), settings_.max_step_tokens,
                            longest_, 3, rng::bits(seed_, 13));
      cost_ = db::StepCost::fit(m.shapes, m.ms);
    }
    return *cost_;
  }

  db::ServeLog replay(const db::StepCost& cost, std::uint64_t draw) const {
    nn::BlockTables tables(blocks_, block_size_);
    db::VirtualExecutor exec(cost, tables, rng::bits(rng::bits(seed_, 14), draw));
    return db::serve(requests_, prompts_, settings_, tables, exec);
  }

  // Every request's greedy tokens against the same request generated alone with a contiguous
  // KV cache (nn::generate): batching, chunking, paging and preemption must not change them.
  void check_tokens(std::vector<Metric>& out) const {
    std::size_t same = 0, all = 0, first_bad = requests_.size();
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      const nn::Generation alone =
          nn::generate(*model_, prompts_[i], requests_[i].output_len, nn::SamplingParams{}, DType::f32);
      const auto& got = log_.requests[i].tokens;
      for (std::size_t t = 0; t < alone.tokens.size(); ++t) {
        const bool eq = t < got.size() && got[t] == alone.tokens[t];
        same += eq;
        ++all;
        if (!eq && first_bad == requests_.size()) first_bad = i;
      }
    }
    if (same != all) {
      std::ostringstream m;
      m << "dynamic_batching: variant " << db::policies().name(settings_.policy) << ": " << same << " of " << all
        << " greedy tokens equal those of each request generated alone (first differing: request " << first_bad
        << "); batching must not change a request's tokens";
      throw CheckFailed(m.str());
    }
    out.push_back(plain("tokens_identical", static_cast<double>(same) / static_cast<double>(all), "", Better::higher));
  }

  db::SchedulerSettings settings_;
  std::vector<db::Request> requests_;
  std::size_t longest_;
  db::Slo slo_;
  bool real_;
  std::uint64_t seed_;
  std::size_t blocks_ = 0, block_size_ = 0, pool_bytes_ = 0;
  std::vector<std::vector<std::int32_t>> prompts_;
  std::unique_ptr<nn::Gpt> model_;
  std::unique_ptr<nn::PagedKvCache> cache_;
  std::optional<db::StepCost> cost_;
  db::ServeLog log_;
};

}  // namespace

// ---- prepare

static void check(const Case& c, DeviceKind) {
  const db::SchedulerSettings s = settings(c);
  const Workload w = make_workload(c);  // validates the stream: rates, lengths, the trace file
  const bool given = c.params.string("costs") == "given";
  if (given) {
    const db::StepCost cost = given_costs(c);
    if (cost.fixed_ms + cost.per_token_ms + cost.per_sequence_ms + cost.per_kilo_key_read_ms <= 0.0)
      throw InputError("dynamic_batching: costs=given needs at least one of cost_fixed_ms, cost_per_token_ms, "
                       "cost_per_sequence_ms, cost_per_kilo_key_read_ms above 0");
  }
  if (uses_model(c)) {
    const nn::GptConfig model = model_config(c).model;
    if (w.longest > model.context)
      throw InputError("dynamic_batching: " + w.limits + " and the model '" + c.params.string("model") +
                       "' has a context of " + std::to_string(model.context));
    if (s.policy == db::Policy::continuous && static_cast<std::size_t>(c.params.integer("block_size")) > model.context)
      throw InputError("dynamic_batching: block_size " + std::to_string(c.params.integer("block_size")) +
                       " exceeds the model's context of " + std::to_string(model.context));
  }
  const auto [blocks, block] = pool_shape(c, s, w.longest);
  if (s.policy == db::Policy::continuous && blocks * block < w.longest)
    throw InputError("dynamic_batching: kv_blocks " + std::to_string(blocks) + " of " + std::to_string(block) +
                     " positions hold " + std::to_string(blocks * block) + "; a request may need " +
                     std::to_string(w.longest) + "; allowed: kv_blocks >= " +
                     std::to_string((w.longest + block - 1) / block));
}

static std::unique_ptr<Run> start(const Case& c, const Device& device) {
  return std::make_unique<ServingRun>(c, device, make_workload(c));
}

std::unique_ptr<Technique> make_dynamic_batching() {
  return make_technique({"dynamic_batching", "latency vs throughput in serving", summary, params, variants, check,
                         start});
}

}  // namespace aiopt
