#pragma once
// The serving loop (TECHNIQUES.md §11): requests arrive, a policy decides which of them run in each
// engine step and with how many new tokens, and every token's time is recorded. Written once for
// both clocks: an Executor runs the step on the model in real time, or advances a virtual clock by
// the step-cost model, and the policies cannot tell which.
//
// Policies:
//   sequential  one request at a time, prefill then decode to its end (request-level, batch 1)
//   static      waits until max_batch requests wait, or the oldest has waited batch_timeout_s; the
//               batch prefills and decodes together and all of it
//               finishes together: slots and responses are released when its last request ends
//   dynamic     as static, but the batch is whatever waits window_s after its first request
//               arrived (at most max_batch), so a light load is not held back for a full batch
//   continuous  iteration-level (Orca): every step retires finished requests and admits waiting
//               ones while max_batch and the paged cache's free blocks allow; decode tokens first,
//               then prompt chunks up to max_step_tokens (chunked prefill). When a decoding
//               sequence needs a block and none is free, the latest admitted sequence is preempted
//               by recompute: its blocks are freed, it returns to the head of the queue with its
//               prompt and the tokens it has generated, and is prefilled again when readmitted.
// The request-level policies reserve a contiguous slot of the longest request per sequence (the
// tables' block_size); continuous takes blocks as sequences grow.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "nn/block_tables.hpp"
#include "nn/gpt.hpp"
#include "techniques/dynamic_batching/step_cost.hpp"
#include "techniques/dynamic_batching/workload.hpp"

namespace aiopt::dynamic_batching {

enum class Policy { sequential, static_batch, dynamic, continuous };

struct SchedulerSettings {
  Policy policy = Policy::continuous;
  std::size_t max_batch = 16;         // sequences in one step (static: the batch it waits for)
  std::size_t max_step_tokens = 256;  // continuous: new tokens in one step; prompts are chunked to fit
  double batch_timeout_s = 0.5;       // static: the longest the oldest waiting request waits for a full batch
  double window_s = 0.02;             // dynamic: how long a batch gathers after its first request arrived
};

// Runs engine steps and keeps the time.
class Executor {
 public:
  virtual ~Executor() = default;
  virtual double now() const = 0;         // seconds since serving began
  virtual void wait_until(double t) = 0;  // idle until t (seconds)
  // One step: each sequence's new tokens, for which the tables already hold blocks. Advances the
  // tables' lengths and returns each sequence's next (greedy) token; a virtual executor, which
  // runs no model, returns 0s.
  virtual std::vector<std::int32_t> run(std::span<const nn::Gpt::RaggedSequence> batch, const StepShape& shape) = 0;
};

struct RequestRecord {
  double arrival_s = 0.0;
  double first_token_s = 0.0;  // its first output token produced
  double last_token_s = 0.0;   // its last output token produced
  double done_s = 0.0;         // its response released (static, dynamic: when its batch ends)
  std::size_t prompt_len = 0, output_len = 0;
  std::size_t preemptions = 0;
  std::vector<std::int32_t> tokens;  // the output tokens
  std::vector<double> token_s;       // when each was produced
};

struct StepRecord {
  double start_s = 0.0;
  double ms = 0.0;
  StepShape shape;
  // The cache after the step: positions its tables hold and positions written, over the
  // sequences holding blocks.
  std::size_t reserved_positions = 0, written_positions = 0, cached_sequences = 0;
};

struct ServeLog {
  std::vector<RequestRecord> requests;  // by request id
  std::vector<StepRecord> steps;
  std::size_t preemptions = 0;
  std::size_t peak_blocks = 0;  // most blocks in use at once
};

// Serves `requests` (sorted by arrival; prompts[i] has requests[i].prompt_len tokens) to the end.
// `tables` must start empty; every block is back in the pool when it returns. InputError when a
// request needs more positions than one slot (request-level policies) or the whole pool
// (continuous) can hold.
ServeLog serve(std::span<const Request> requests, std::span<const std::vector<std::int32_t>> prompts,
               const SchedulerSettings& settings, nn::BlockTables& tables, Executor& executor);

// Positions a request occupies in the cache: its prompt and every output token but the last,
// which is never fed back.
inline std::size_t cache_positions(const Request& r) { return r.prompt_len + r.output_len - 1; }

}  // namespace aiopt::dynamic_batching
