// Learning-rate schedules: every schedule at every step of small budgets (and
// past the end) against its formula written out again independently
// (lr_scheduling::reference_lr, which lr_scheduling's runtime check also uses),
// validate()'s errors, and name parsing.
//
// Tolerance: lr_scheduling::lr_tolerance, 2^-23 of the peak. at() computes in
// double and rounds to float once (2^-24·peak at most); the reference writes
// each formula in its own way in double (e.g. cosine through a different
// argument), ~1e-15 relative.
#include <catch2/catch.hpp>

#include <cmath>
#include <string>

#include "core/error.hpp"
#include "nn/lr_schedule.hpp"
#include "techniques/lr_scheduling/lr_scheduling.hpp"

using namespace aiopt;
using nn::LrSchedule;
using nn::ScheduleKind;

namespace {

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
      const LrSchedule s{.kind = kind,
                         .peak_lr = 3e-3f,
                         .min_lr = 2e-4f,
                         .total_steps = b.total,
                         .warmup_steps = b.warmup,
                         .step_every = 6,
                         .step_gamma = 0.5f,
                         .one_cycle_div = 10.0f,
                         .decay_fraction = 0.3f};
      REQUIRE_NOTHROW(s.validate());
      for (std::size_t t = 0; t < b.total + 3; ++t) {
        const double want = lr_scheduling::reference_lr(s, t);
        const float got = s.at(t);
        INFO(std::string(nn::to_string(kind))
             << " T=" << b.total << " W=" << b.warmup << " t=" << t << ": got " << got << ", want " << want);
        REQUIRE(std::abs(double(got) - want) <= lr_scheduling::lr_tolerance(s));  // a NaN fails
        REQUIRE(got >= 0.0f);
      }
    }
}

TEST_CASE("schedules hit their landmarks", "[lr_schedule]") {
  LrSchedule s{
      .kind = ScheduleKind::warmup_cosine, .peak_lr = 1.0f, .min_lr = 0.1f, .total_steps = 100, .warmup_steps = 10};
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
