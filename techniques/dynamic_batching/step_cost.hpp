#pragma once
// The step-cost model of the virtual clock (TECHNIQUES.md §11): one engine step's time as a linear
// function of what it computes, fitted by least squares from measured steps, so that the scheduler
// can run on predicted time: a larger model, another machine's measured costs, request rates this
// machine cannot serve.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace aiopt::dynamic_batching {

// What one step computes, as the model sees it.
struct StepShape {
  std::size_t tokens = 0;     // new tokens in the step (rows of every product)
  std::size_t sequences = 0;  // sequences in the step (LM-head rows, per-sequence overheads)
  double key_reads = 0.0;     // Σ over the new tokens of the keys each attends to
  // The shape of `len` new tokens of one sequence that had `start` positions before the step.
  void add(std::size_t start, std::size_t len);
};

// ms = fixed + per_token·tokens + per_sequence·sequences + per_kilo_key_read·key_reads/1000.
struct StepCost {
  double fixed_ms = 0.0;
  double per_token_ms = 0.0;
  double per_sequence_ms = 0.0;
  double per_kilo_key_read_ms = 0.0;

  // What the fitted steps took beyond the prediction (measured − predicted, mean 0): the noise
  // and the stalls of the machine they ran on, which a mean cannot show and a p99 is made of.
  // Empty for given costs.
  std::vector<double> residual_ms;

  double predict_ms(const StepShape& s) const;
  // Step `step`'s time on a virtual clock: the prediction plus a residual drawn with replacement
  // (counter-based, so the same seed and step give the same time), at least 0.
  double sample_ms(const StepShape& s, std::uint64_t seed, std::uint64_t step) const;
  // Least squares over measured steps (at least four; InputError otherwise). A feature that does
  // not vary apart from the others (every step of one sequence) and a coefficient the data would
  // make negative are held at 0 and the rest refitted, so that no step is predicted to take less
  // time for doing more.
  static StepCost fit(std::span<const StepShape> shapes, std::span<const double> ms);
  std::string describe() const;
};

}  // namespace aiopt::dynamic_batching
