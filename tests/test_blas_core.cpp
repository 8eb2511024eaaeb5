// Which OpenBLAS kernels run (core/blas_core.hpp): the choice from the ISA, the check every loaded
// kernel passes, that check failing on broken products, and what the aiopt binary reports and
// warns with OPENBLAS_CORETYPE unset, set by a user, and after a chosen core failed. The binary
// is also run with tests/shim/unknown_cpu_openblas.cpp preloaded, an OpenBLAS that gives this CPU
// its Prescott kernels, to see aiopt start again with the best core, and fall back when that
// core computes wrong.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/blas_core.hpp"
#include "core/hardware.hpp"
#include "support/process.hpp"

using namespace aiopt;
using Catch::Matchers::Contains;
using nlohmann::json;

namespace {

const std::vector<std::string> avx512{"sse4.2", "avx", "fma", "f16c", "avx2", "avx512f", "avx512dq",
                                      "avx512cd", "avx512bw", "avx512vl"};

std::vector<std::string> plus(std::vector<std::string> isa, const std::string& flag) {
  isa.push_back(flag);
  return isa;
}

// aiopt info --format json with OPENBLAS_CORETYPE and aiopt's mark changed as given.
json info_blas(const std::vector<std::string>& environment, std::string* err = nullptr) {
  const auto r = test::run_aiopt({"info", "--format", "json"}, environment);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  if (err) *err = r.err;
  return json::parse(r.out).at("blas");
}

// The environment for an aiopt whose OpenBLAS reports Prescott while OPENBLAS_CORETYPE is unset.
std::vector<std::string> unknown_cpu(std::vector<std::string> environment) {
  environment.push_back(std::string("LD_PRELOAD=") + UNKNOWN_CPU_OPENBLAS);
  // Under AddressSanitizer a preloaded library comes before its runtime, which it refuses unless told.
  const char* asan = std::getenv("ASAN_OPTIONS");
  environment.push_back("ASAN_OPTIONS=" + (asan ? std::string(asan) + ":" : std::string()) + "verify_asan_link_order=0");
  environment.push_back("-" + std::string(blas::coretype_variable));
  environment.push_back("-" + std::string(blas::choice_variable));
  return environment;
}

std::string best_for_this_cpu() { return blas::best_core(hardware::cpu().isa, hardware::cpu().vendor); }

// This CPU's best core when it is above Prescott, the one the shim reports; else a warning and none.
std::optional<std::string> best_above_prescott() {
  const std::string best = best_for_this_cpu();
  if (blas::core_level(best) > blas::core_level("Prescott")) return best;
  WARN("this CPU supports nothing above Prescott (best core '" << best << "'): aiopt has nothing to choose");
  return std::nullopt;
}

}  // namespace

TEST_CASE("best_core picks the widest kernels the ISA allows", "[blas]") {
  // The Xeon family 6 model 207 that OpenBLAS 0.3.21 does not know, and Zen 4/5: both have BF16.
  CHECK(blas::best_core(plus(avx512, "avx512_bf16"), "GenuineIntel") == "Cooperlake");
  CHECK(blas::best_core(plus(avx512, "avx512_bf16"), "AuthenticAMD") == "Cooperlake");
  CHECK(blas::best_core(avx512, "GenuineIntel") == "SkylakeX");
  // AVX-512 F alone (Knights Landing has no BW/DQ/VL) is not SkylakeX's instruction set.
  CHECK(blas::best_core({"avx", "fma", "avx2", "avx512f", "avx512cd"}, "GenuineIntel") == "Haswell");
  CHECK(blas::best_core({"avx", "fma", "avx2"}, "AuthenticAMD") == "Zen");
  CHECK(blas::best_core({"avx", "avx2"}, "GenuineIntel") == "Sandybridge");  // no FMA
  CHECK(blas::best_core({"sse4.2"}, "GenuineIntel").empty());
  CHECK(blas::best_core({}, "").empty());
}

TEST_CASE("core_level orders OpenBLAS's cores by instruction set", "[blas]") {
  CHECK(blas::core_level("Prescott") < blas::core_level("Nehalem"));
  CHECK(blas::core_level("Nehalem") < blas::core_level("Sandybridge"));
  CHECK(blas::core_level("Sandybridge") < blas::core_level("Haswell"));
  CHECK(blas::core_level("Haswell") == blas::core_level("Zen"));
  CHECK(blas::core_level("Zen") < blas::core_level("SkylakeX"));
  CHECK(blas::core_level("SkylakeX") < blas::core_level("Cooperlake"));
  CHECK(blas::core_level("NoSuchCore") == 0);
  CHECK(blas::core_level("") == 0);
  // Every core best_core can name has a level.
  for (const auto& isa : {avx512, plus(avx512, "avx512_bf16"), std::vector<std::string>{"avx", "fma", "avx2"}})
    CHECK(blas::core_level(blas::best_core(isa, "GenuineIntel")) > 0);
}

TEST_CASE("aiopt starts again with the best core only when nothing is set and OpenBLAS chose below it", "[blas]") {
  // The Xeon that OpenBLAS 0.3.21 gives Prescott.
  CHECK(blas::should_choose("", "", "Prescott", "Cooperlake"));
  CHECK(blas::should_choose("", "", "Haswell", "SkylakeX"));
  // The process it starts: OPENBLAS_CORETYPE is aiopt's own, so never again.
  CHECK_FALSE(blas::should_choose("Cooperlake", "Cooperlake", "Cooperlake", "Cooperlake"));
  CHECK_FALSE(blas::should_choose("Cooperlake", "Cooperlake", "Prescott", "Cooperlake"));
  // OpenBLAS's own pick is already the best, or above what aiopt knows.
  CHECK_FALSE(blas::should_choose("", "", "Cooperlake", "Cooperlake"));
  CHECK_FALSE(blas::should_choose("", "", "SkylakeX", "Haswell"));
  CHECK_FALSE(blas::should_choose("", "", "Prescott", ""));
  // A user's choice, even a slow one, is kept.
  CHECK_FALSE(blas::should_choose("Prescott", "", "Prescott", "Cooperlake"));
  // The chosen core failed its check: OpenBLAS's own runs, and no loop.
  CHECK_FALSE(blas::should_choose("", "failed:Cooperlake failed its check", "Prescott", "Cooperlake"));

  CHECK(blas::source_of("", "") == blas::CoreSource::detected);
  CHECK(blas::source_of("", "failed:SkylakeX failed its check") == blas::CoreSource::detected);
  CHECK(blas::source_of("SkylakeX", "SkylakeX") == blas::CoreSource::chosen);
  CHECK(blas::source_of("SkylakeX", "") == blas::CoreSource::user);
  CHECK(blas::source_of("Haswell", "SkylakeX") == blas::CoreSource::user);
}

TEST_CASE("the loaded OpenBLAS kernels pass the product check", "[blas]") {
  CHECK(blas::check_sgemm(blas::openblas_sgemm()).empty());
  CHECK(blas::core_choice().check == "passed");
  CHECK(blas::core_choice().core == blas::loaded_core());
}

TEST_CASE("the product check fails on a broken kernel", "[blas][fault]") {
  const blas::Sgemm good = blas::openblas_sgemm();
  SECTION("one entry off by one part in a thousand") {
    const auto broken = [&](bool t, int m, int n, int k, const float* a, const float* b, float* c) {
      good(t, m, n, k, a, b, c);
      c[m * n / 2] *= 1.001f;
    };
    CHECK_THAT(blas::check_sgemm(broken), Contains("reference"));
  }
  SECTION("the last term of every dot product dropped (a k-edge tile skipped)") {
    const auto broken = [&](bool t, int m, int n, int k, const float* a, const float* b, float* c) {
      std::vector<float> a_short;
      for (int i = 0; i < m; ++i)
        for (int p = 0; p < k; ++p) a_short.push_back(p == k - 1 ? 0.0f : a[i * k + p]);
      good(t, m, n, k, a_short.data(), b, c);
    };
    CHECK_THAT(blas::check_sgemm(broken), Contains("product"));
  }
  SECTION("a transposed B read as a plain one") {
    // The same k·n floats, read with the other layout's strides.
    const auto broken = [&](bool t, int m, int n, int k, const float* a, const float* b, float* c) {
      good(!t, m, n, k, a, b, c);
    };
    CHECK_THAT(blas::check_sgemm(broken), Contains("C["));
  }
  SECTION("an output never written") {
    const auto broken = [](bool, int, int, int, const float*, const float*, float*) {};
    CHECK_FALSE(blas::check_sgemm(broken).empty());
  }
  SECTION("one-row products wrong, the others right") {
    const auto broken = [&](bool t, int m, int n, int k, const float* a, const float* b, float* c) {
      good(t, m, n, k, a, b, c);
      if (m == 1) c[n - 1] = -c[n - 1];
    };
    CHECK_THAT(blas::check_sgemm(broken), Contains("1x"));
  }
}

TEST_CASE("with nothing set, aiopt runs the widest kernels the CPU supports", "[blas][cli]") {
  std::string err;
  const json b = info_blas({"-" + std::string(blas::coretype_variable), "-" + std::string(blas::choice_variable)}, &err);
  const std::string best = blas::best_core(hardware::cpu().isa, hardware::cpu().vendor);
  INFO("best core " << best << "; reported " << b.dump());
  CHECK(b.at("check") == "passed");
  CHECK(blas::core_level(b.at("core").get<std::string>()) >= blas::core_level(best));
  CHECK((b.at("core_source") == "detected" || b.at("core_source") == "chosen by aiopt"));
  if (b.at("core_source") == "chosen by aiopt") CHECK(b.at("core") == best);
  CHECK(b.at("warnings").empty());
  CHECK(err.find("kernels") == std::string::npos);
}

TEST_CASE("a user's OPENBLAS_CORETYPE is kept, with a warning when it is below the CPU's best", "[blas][cli]") {
  std::string err;
  const json b = info_blas({std::string(blas::coretype_variable) + "=Prescott", "-" + std::string(blas::choice_variable)}, &err);
  CHECK(b.at("core") == "Prescott");
  CHECK(b.at("core_source") == "set by the user");
  CHECK(b.at("check") == "passed");
  const std::string best = blas::best_core(hardware::cpu().isa, hardware::cpu().vendor);
  if (blas::core_level(best) > blas::core_level("Prescott")) {
    CHECK_THAT(err, Contains("OPENBLAS_CORETYPE=Prescott") && Contains("below the " + best));
    REQUIRE(b.at("warnings").size() == 1);
    CHECK_THAT(b.at("warnings")[0].get<std::string>(), Contains("unset it"));
  } else {
    WARN("this CPU supports nothing above Prescott (best core '" << best << "'): no warning is expected");
    CHECK(b.at("warnings").empty());
  }
}

TEST_CASE("after a chosen core failed its check, OpenBLAS's own choice runs and the failure is reported",
          "[blas][cli]") {
  std::string err;
  const json b = info_blas({"-" + std::string(blas::coretype_variable),
                            std::string(blas::choice_variable) + "=failed:SkylakeX failed its check (C[0,0] = 0)"},
                           &err);
  // No second start: OpenBLAS's own choice for this CPU, whatever it is.
  CHECK(b.at("core_source") == "detected");
  CHECK(b.at("check") == "passed");
  CHECK_THAT(err, Contains("SkylakeX failed its check") && Contains("own choice"));
}

TEST_CASE("on a CPU OpenBLAS does not know, aiopt starts again once, with the best core", "[blas][cli]") {
  const auto best = best_above_prescott();
  if (!best) return;
  std::string err;
  const json b = info_blas(unknown_cpu({}), &err);
  CHECK(b.at("core_source") == "chosen by aiopt");
  CHECK(b.at("core") == *best);
  CHECK(b.at("env").at("OPENBLAS_CORETYPE") == *best);
  CHECK(b.at("check") == "passed");
  CHECK(b.at("warnings").empty());
  CHECK(err.find("kernels") == std::string::npos);
}

TEST_CASE("a chosen core that fails its check falls back to OpenBLAS's own, with a warning", "[blas][cli][fault]") {
  const auto best = best_above_prescott();
  if (!best) return;
  std::string err;
  const json b = info_blas(unknown_cpu({"AIOPT_TEST_BREAK_CHOSEN_SGEMM=1"}), &err);
  CHECK(b.at("core_source") == "detected");
  CHECK(b.at("core") == "Prescott");
  CHECK(b.at("env").at("OPENBLAS_CORETYPE").is_null());
  CHECK(b.at("check") == "passed");
  REQUIRE(b.at("warnings").size() == 2);
  CHECK_THAT(b.at("warnings")[0].get<std::string>(),
             Contains("the BLAS kernel aiopt chose, " + *best + " failed its check (") &&
                 Contains("OpenBLAS's own choice, Prescott, runs instead"));
  CHECK_THAT(b.at("warnings")[1].get<std::string>(), Contains("OpenBLAS runs its Prescott kernels, below the " + *best));
  CHECK_THAT(err, Contains(*best + " failed its check"));
}
