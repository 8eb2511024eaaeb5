// Learning-rate schedules: every schedule at every step of small budgets (and
// past the end) against its formula written out again here, validate()'s
// errors, and name parsing.
//
// Tolerance: 1e-6 relative to peak. Both sides compute in double and round to
// float once, but the test writes each formula in its own way (e.g. cosine
// through a different argument), so they may differ by an ulp of the float
// result.
#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>
#include <string>

#include "core/error.hpp"
#include "nn/lr_schedule.hpp"

using namespace aiopt;
using nn::LrSchedule;
using nn::ScheduleKind;

namespace {

constexpr double kPi = std::numbers::pi;

// The formulas as the header and lr_schedule.cpp document them, written
// independently.
double expected(const LrSchedule& s, std::size_t step) {
  const double P = s.peak_lr, M = s.min_lr, T = double(s.total_steps), W = double(s.warmup_steps);
  const double t = double(std::min(step, s.total_steps));
  const bool warm = step < s.warmup_steps;
  auto cos_decay = [&](double from, double x) { return M + (from - M) * (1.0 + std::cos(kPi * x)) / 2.0; };
  switch (s.kind) {
    case ScheduleKind::constant: return P;
    case ScheduleKind::step:
      return std::max(M, P * std::pow(double(s.step_gamma), double(std::size_t(t) / s.step_every)));
    case ScheduleKind::cosine: return cos_decay(P, t / T);
    case ScheduleKind::warmup_cosine:
      if (warm) return P * (t + 1) / W;
      return cos_decay(P, T == W ? 1.0 : (t - W) / (T - W));
    case ScheduleKind::linear_warmup_decay:
      if (warm) return P * (t + 1) / W;
      return T == W ? M : P - (P - M) * (t - W) / (T - W);
    case ScheduleKind::one_cycle:
      if (warm) return P / s.one_cycle_div + (P - P / s.one_cycle_div) * (t / W);
      return cos_decay(P, T == W ? 1.0 : (t - W) / (T - W));
    case ScheduleKind::inverse_sqrt:
      if (warm) return P * (t + 1) / W;
      return std::max(M, P / std::sqrt((t + 1) / std::max(W, 1.0)));
    case ScheduleKind::wsd: {
      const double D = std::max(1.0, std::round(double(s.decay_fraction) * T));
      const double S = std::max(W, T - D);
      if (warm) return P * (t + 1) / W;
      if (t < S) return P;
      return T == S ? M : P - (P - M) * (t - S) / (T - S);
    }
  }
  return -1.0;
}

const ScheduleKind kKinds[] = {ScheduleKind::constant,
                               ScheduleKind::step,
                               ScheduleKind::cosine,
                               ScheduleKind::warmup_cosine,
                               ScheduleKind::linear_warmup_decay,
                               ScheduleKind::one_cycle,
                               ScheduleKind::inverse_sqrt,
                               ScheduleKind::wsd};

}  // namespace

TEST_CASE("every schedule follows its formula at every step", "[lr_schedule]") {
  struct Budget {
    std::size_t total, warmup;
  };
  for (ScheduleKind kind : kKinds)
    for (Budget b : {Budget{20, 0}, Budget{20, 5}, Budget{7, 7}, Budget{1, 0}, Budget{33, 4}}) {
      LrSchedule s;
      s.kind = kind;
      s.peak_lr = 3e-3f;
      s.min_lr = 2e-4f;
      s.total_steps = b.total;
      s.warmup_steps = b.warmup;
      s.step_every = 6;
      s.step_gamma = 0.5f;
      s.one_cycle_div = 10.0f;
      s.decay_fraction = 0.3f;
      REQUIRE_NOTHROW(s.validate());
      for (std::size_t t = 0; t < b.total + 3; ++t) {
        const double want = expected(s, t);
        const float got = s.at(t);
        INFO(std::string(nn::to_string(kind))
             << " T=" << b.total << " W=" << b.warmup << " t=" << t << ": got " << got << ", want " << want);
        REQUIRE(std::abs(double(got) - want) <= 1e-6 * s.peak_lr);  // a NaN fails
        REQUIRE(got >= 0.0f);
      }
    }
}

TEST_CASE("schedules hit their landmarks", "[lr_schedule]") {
  LrSchedule s;
  s.peak_lr = 1.0f;
  s.min_lr = 0.1f;
  s.total_steps = 100;
  s.warmup_steps = 10;
  s.kind = ScheduleKind::warmup_cosine;
  CHECK(s.at(0) == Approx(0.1));    // peak·1/W: the first step already trains
  CHECK(s.at(9) == Approx(1.0));    // warmup ends at peak
  CHECK(s.at(10) == Approx(1.0));   // the cosine starts at peak
  CHECK(s.at(55) == Approx(0.55));  // halfway: (peak + min)/2
  CHECK(s.at(100) == Approx(0.1));  // past the budget: min
  CHECK(s.at(1000) == Approx(0.1));
  s.kind = ScheduleKind::one_cycle;
  s.one_cycle_div = 25.0f;
  CHECK(s.at(0) == Approx(0.04));
  CHECK(s.at(10) == Approx(1.0));
  s.kind = ScheduleKind::wsd;
  s.decay_fraction = 0.2f;
  CHECK(s.at(79) == Approx(1.0));  // stable until the last 20 steps
  CHECK(s.at(90) == Approx(0.55));
  s.kind = ScheduleKind::step;
  s.step_every = 30;
  s.step_gamma = 0.5f;
  CHECK(s.at(29) == Approx(1.0));
  CHECK(s.at(30) == Approx(0.5));
  CHECK(s.at(95) == Approx(0.125));
}

TEST_CASE("validate names the bad field", "[lr_schedule]") {
  auto fails = [](auto edit, const char* field) {
    LrSchedule s;
    edit(s);
    CHECK_THROWS_WITH(s.validate(), Catch::Contains(field));
    CHECK_THROWS_AS(s.validate(), InputError);
  };
  fails([](LrSchedule& s) { s.peak_lr = 0.0f; }, "peak_lr");
  fails([](LrSchedule& s) { s.peak_lr = std::nanf(""); }, "peak_lr");
  fails([](LrSchedule& s) { s.min_lr = -1e-4f; }, "min_lr");
  fails([](LrSchedule& s) { s.min_lr = 2.0f * s.peak_lr; }, "min_lr");
  fails([](LrSchedule& s) { s.total_steps = 0; }, "total_steps");
  fails([](LrSchedule& s) { s.warmup_steps = s.total_steps + 1; }, "warmup_steps");
  fails([](LrSchedule& s) { s.step_every = 0; }, "step_every");
  fails([](LrSchedule& s) { s.step_gamma = 0.0f; }, "step_gamma");
  fails([](LrSchedule& s) { s.step_gamma = 1.5f; }, "step_gamma");
  fails([](LrSchedule& s) { s.one_cycle_div = 0.5f; }, "one_cycle_div");
  fails([](LrSchedule& s) { s.decay_fraction = 0.0f; }, "decay_fraction");
  fails([](LrSchedule& s) { s.decay_fraction = 1.1f; }, "decay_fraction");
  LrSchedule fine;
  fine.warmup_steps = fine.total_steps;
  CHECK_NOTHROW(fine.validate());
}

TEST_CASE("schedule names round-trip and misspellings suggest the name meant", "[lr_schedule]") {
  REQUIRE(nn::schedule_names().size() == std::size(kKinds));
  for (ScheduleKind kind : kKinds) CHECK(nn::parse_schedule(nn::to_string(kind)) == kind);
  CHECK_THROWS_AS(nn::parse_schedule("linear"), InputError);
  CHECK_THROWS_WITH(nn::parse_schedule("cosin"),
                    Catch::Contains("did you mean 'cosine'") && Catch::Contains("warmup_cosine, linear_warmup_decay"));
  CHECK_THROWS_WITH(nn::parse_schedule("wsdd"), Catch::Contains("did you mean 'wsd'"));
}
