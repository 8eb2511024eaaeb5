#pragma once
// What a serving run measured (TECHNIQUES.md §11), from its log: throughput, the latencies of every
// request at p50/p90/p99, goodput under an SLO, batch occupancy and the KV cache's waste.
//   TTFT  time to first token: first token produced − arrival
//   TPOT  time per output token after the first: (last token − first token) / (output − 1);
//         requests of one output token have none
//   E2E   end to end: response released − arrival
// Rates are taken over the arrival window, from the first arrival to the last: output tokens
// produced in it and requests completed in it, over its length. A server that keeps up with λ
// shows λ there; one that does not shows what it serves. (Over the whole span a finite stream's
// last responses, which come after the last arrival, would pull every rate below λ.) A stream
// whose requests all arrive at once is taken over its whole span.
#include <cstddef>

#include "techniques/dynamic_batching/scheduler.hpp"

namespace aiopt::dynamic_batching {

struct Percentiles {
  double p50 = 0.0, p90 = 0.0, p99 = 0.0;
};

// A request meets the SLO when its TTFT and its TPOT are both within their bounds.
struct Slo {
  double ttft_ms = 1000.0;
  double tpot_ms = 100.0;
};

struct ServingSummary {
  double span_s = 0.0;    // first arrival to last response
  double window_s = 0.0;  // first arrival to last arrival (the span when they coincide)
  double output_tokens_per_s = 0.0, requests_per_s = 0.0;
  double goodput_requests_per_s = 0.0;  // requests meeting the SLO completed per second of the window
  double slo_attainment = 0.0;          // their fraction
  Percentiles ttft_ms, tpot_ms, e2e_ms;
  double mean_step_sequences = 0.0, mean_step_tokens = 0.0;
  double batch_occupancy = 0.0;  // mean sequences per step / max_batch
  // Over the steps: positions reserved but not written per sequence holding blocks, and the
  // written fraction of what was reserved.
  double kv_waste_positions_per_sequence = 0.0;
  double kv_written_fraction = 0.0;
  std::size_t steps = 0, preemptions = 0;
};

ServingSummary summarize(const ServeLog& log, std::size_t max_batch, const Slo& slo);

}  // namespace aiopt::dynamic_batching
