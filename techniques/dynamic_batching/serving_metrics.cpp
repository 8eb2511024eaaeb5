#include "techniques/dynamic_batching/serving_metrics.hpp"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "harness/statistics.hpp"

namespace aiopt::dynamic_batching {

namespace {

Percentiles percentiles(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  return {quantile_sorted(v, 0.5), quantile_sorted(v, 0.9), quantile_sorted(v, 0.99)};
}

}  // namespace

ServingSummary summarize(const ServeLog& log, std::size_t max_batch, const Slo& slo) {
  if (log.requests.empty()) throw std::invalid_argument("summarize: no requests");
  ServingSummary s;
  std::vector<double> ttft, tpot, e2e;
  double first = log.requests.front().arrival_s, last_arrival = first, last_done = 0.0;
  for (const RequestRecord& r : log.requests) {
    first = std::min(first, r.arrival_s);
    last_arrival = std::max(last_arrival, r.arrival_s);
    last_done = std::max(last_done, r.done_s);
  }
  s.span_s = last_done - first;
  const bool windowed = last_arrival > first;
  s.window_s = windowed ? last_arrival - first : s.span_s;
  const double end = windowed ? last_arrival : last_done;
  auto inside = [&](double t) { return t >= first && t <= end; };
  std::size_t tokens = 0, done = 0, good = 0, good_done = 0;
  for (const RequestRecord& r : log.requests) {
    for (const double t : r.token_s) tokens += inside(t);
    done += inside(r.done_s);
    const double t = (r.first_token_s - r.arrival_s) * 1e3;
    ttft.push_back(t);
    e2e.push_back((r.done_s - r.arrival_s) * 1e3);
    double per_token = 0.0;
    if (r.output_len > 1) {
      per_token = (r.last_token_s - r.first_token_s) * 1e3 / static_cast<double>(r.output_len - 1);
      tpot.push_back(per_token);
    }
    const bool met = t <= slo.ttft_ms && per_token <= slo.tpot_ms;
    good += met;
    good_done += met && inside(r.done_s);
  }
  const double window = s.window_s > 0.0 ? s.window_s : 1e-9;
  s.output_tokens_per_s = static_cast<double>(tokens) / window;
  s.requests_per_s = static_cast<double>(done) / window;
  s.goodput_requests_per_s = static_cast<double>(good_done) / window;
  s.slo_attainment = static_cast<double>(good) / static_cast<double>(log.requests.size());
  s.ttft_ms = percentiles(std::move(ttft));
  s.tpot_ms = percentiles(std::move(tpot));
  s.e2e_ms = percentiles(std::move(e2e));
  double seqs = 0.0, rows = 0.0, waste = 0.0, reserved = 0.0, written = 0.0;
  std::size_t cached_steps = 0;
  for (const StepRecord& st : log.steps) {
    seqs += static_cast<double>(st.shape.sequences);
    rows += static_cast<double>(st.shape.tokens);
    if (st.cached_sequences > 0) {
      ++cached_steps;
      waste += static_cast<double>(st.reserved_positions - st.written_positions) /
               static_cast<double>(st.cached_sequences);
    }
    reserved += static_cast<double>(st.reserved_positions);
    written += static_cast<double>(st.written_positions);
  }
  s.steps = log.steps.size();
  const double steps = s.steps > 0 ? static_cast<double>(s.steps) : 1.0;
  s.mean_step_sequences = seqs / steps;
  s.mean_step_tokens = rows / steps;
  s.batch_occupancy = s.mean_step_sequences / static_cast<double>(max_batch);
  s.kv_waste_positions_per_sequence = cached_steps > 0 ? waste / static_cast<double>(cached_steps) : 0.0;
  s.kv_written_fraction = reserved > 0.0 ? written / reserved : 0.0;
  s.preemptions = log.preemptions;
  return s;
}

}  // namespace aiopt::dynamic_batching
