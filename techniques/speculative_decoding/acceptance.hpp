#pragma once
// The acceptance rule of speculative sampling (Leviathan, Kalman & Matias 2023; Chen et al. 2023):
// a draft token d drawn from the draft's distribution q is kept with probability
// min(1, p(d) / q(d)), p the target's distribution at the same position; the first rejected one is
// replaced by a draw from norm(max(0, p − q)). Whatever q is, each emitted token is then
// distributed exactly as p. With one-hot p and q (temperature 0) the rule keeps a draft token
// while it is the target's argmax and otherwise emits the argmax: greedy speculative decoding.
// A prompt-lookup draft is a q that is one-hot at the looked-up token.
#include <cstdint>
#include <span>
#include <vector>

namespace aiopt::speculative_decoding {

// min(1, p(token) / q(token)); 1 where q(token) is 0 (a token the draft cannot propose is never
// tested). Under the fault "speculative_decoding.accept_always": 1.
double acceptance_probability(std::span<const double> p, std::span<const double> q, std::int32_t token);

// Whether the draft token is kept, for a uniform u in [0, 1): u < acceptance_probability.
bool accept(std::span<const double> p, std::span<const double> q, std::int32_t token, double u);

// The distribution a rejection draws from: max(0, p − q) normalized; p itself where that is all
// zero (p = q, where a rejection has probability 0).
std::vector<double> residual(std::span<const double> p, std::span<const double> q);

// What the rule emits at one position, as a distribution: a draft token v is proposed with
// probability q(v) and kept with acceptance_probability(v), and a rejection, of total probability
// Σ_u q(u)·(1 − acceptance_probability(u)), draws from residual(p, q). Equal to p for a correct
// rule (the runtime check compares them at every position a generation tested).
std::vector<double> emitted_distribution(std::span<const double> p, std::span<const double> q);

// Σ |a − b| / 2.
double total_variation(std::span<const double> a, std::span<const double> b);

}  // namespace aiopt::speculative_decoding
