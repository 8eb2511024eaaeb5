// flash_attention: the technique's contract, its inputs (scores of the stated s.d., and q, k, v
// of the trained tiny model), its CPU runs and checks (the bound per dtype and score size is
// derived in flash_attention.cpp), broken kernels failed by the technique's own check through
// the runner on both kinds of inputs, the workspace fit, input errors, the CLI report, and
// ([gpu]) every CUDA variant and dtype.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/cuda_runtime.hpp"
#include "core/error.hpp"
#include "core/fault.hpp"
#include "nn/attention_capture.hpp"
#include "support/files.hpp"
#include "support/metrics.hpp"
#include "support/model_cache.hpp"
#include "support/process.hpp"
#include "support/schema.hpp"
#include "support/technique_run.hpp"
#include "techniques/flash_attention/flash_attention.hpp"

using namespace aiopt;
namespace fa = aiopt::flash_attention;
using json = nlohmann::json;

namespace {

const std::unique_ptr<Technique> technique = make_flash_attention();

Case make_case(const std::string& variant, std::int64_t seq_len, bool causal = false,
               const std::string& head_dim = "64", const std::string& dtype = "f32") {
  return aiopt::test::quick_case(
      *technique, variant,
      {{"batch", std::int64_t{1}}, {"heads", std::int64_t{2}}, {"seq_len", seq_len}, {"head_dim", head_dim},
       {"causal", causal}, {"dtype", dtype}, {"q_tile", std::int64_t{32}}, {"kv_tile", std::int64_t{48}},
       {"chunk", std::int64_t{40}}, {"score_std", 3.0}},
      5);
}

// inputs=trained at the trained tiny model's shape (heads 4, head_dim 16, its context of 128
// positions), from its last block, on two windows of validation text; the tiles of make_case, so
// that 128 keys make three key tiles.
Case trained_case(const std::string& variant, bool causal) {
  Case c = make_case(variant, 128, causal, "16");
  c.params.set("inputs", std::string("trained"));
  c.params.set("preset", std::string("tiny"));
  c.params.set("layer", std::int64_t{1});
  c.params.set("heads", std::int64_t{4});
  c.params.set("batch", std::int64_t{2});
  return c;
}

using aiopt::test::metric;

}  // namespace

TEST_CASE("the technique declares its contract", "[flash_attention]") {
  const Technique& t = *technique;
  CHECK(t.name() == "flash_attention");
  CHECK(t.baseline() == "naive");
  for (const std::string v : {"naive", "flash", "memory_efficient"}) {
    CHECK(t.find_variant(v)->runs_on(DeviceKind::cpu));
    CHECK(t.find_variant(v)->runs_on(DeviceKind::cuda));
  }
  std::vector<std::string> names;
  for (const auto& p : t.params()) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"batch", "heads", "seq_len", "head_dim", "causal", "dtype", "q_tile",
                                          "kv_tile", "chunk", "score_std", "inputs", "preset", "layer"});
}

TEST_CASE("the scores have the stated standard deviation and the running max rises across key tiles",
          "[flash_attention]") {
  for (const double sd : {0.5, 3.0, 6.0}) {
    Case c = make_case("flash", 256);
    c.params.set("score_std", sd);
    const fa::Shape s = fa::Shape::from(c);
    const fa::Inputs in = fa::make_inputs(s);
    const std::size_t n = 256, d = 64;
    double sum = 0.0, sum2 = 0.0;
    std::size_t rises = 0;  // rows whose running max rises after the first key tile (kv_tile 48)
    for (std::size_t i = 0; i < n; ++i) {
      double first_tile = -1e300, later = -1e300;
      for (std::size_t j = 0; j < n; ++j) {
        double dot = 0.0;
        for (std::size_t t = 0; t < d; ++t) dot += static_cast<double>(in.q[i * d + t]) * in.k[j * d + t];
        const double score = dot / 8.0;
        sum += score;
        sum2 += score * score;
        (j < 48 ? first_tile : later) = std::max(j < 48 ? first_tile : later, score);
      }
      rises += later > first_tile;
    }
    const double mean = sum / (n * n), sd_measured = std::sqrt(sum2 / (n * n) - mean * mean);
    INFO("score_std " << sd << ": measured " << sd_measured << ", rows whose max rises " << rises);
    // 65536 scores of 256 × 256 independent rows: the sample s.d. is within a few % of σ.
    CHECK(sd_measured == Approx(sd).epsilon(0.1));
    CHECK(rises > n / 2);  // most rows meet their largest score after the first of 6 tiles
  }
}

TEST_CASE("CPU runs pass their checks and report the workspace and its growth", "[flash_attention][cpu]") {
  const Technique& t = *technique;
  for (bool causal : {false, true}) {
    for (const std::string head_dim : {"64", "128"}) {
      double naive_bytes = 0.0;
      for (const std::string variant : {"naive", "flash", "memory_efficient"}) {
        INFO(variant << " causal " << causal << " d " << head_dim);
        const Case c = make_case(variant, 160, causal, head_dim);
        auto run = t.prepare(c, Device::cpu());
        run->step();
        run->step();
        const auto metrics = run->finish();
        const fa::Shape shape = fa::Shape::from(c);
        CHECK(run->work().flops.value() == shape.attention.flops());
        CHECK(metric(metrics, "max_abs_error").value <= metric(metrics, "error_tolerance").value);
        // Large scores (s.d. 3): the derived bound is ~3e-4 at N = 160, d <= 128; a kernel that
        // averaged v or skipped the rescale would be off by ~0.5 (the fault tests below).
        CHECK(metric(metrics, "error_tolerance").value < 1e-3);
        CHECK(metric(metrics, "max_rel_error").value <= 1.0);
        const double bytes = metric(metrics, "workspace_bytes").value;
        const double exponent = metric(metrics, "workspace_exponent").value;
        if (variant == "naive") {
          naive_bytes = bytes;
          // B·H·N² fp32 scores, exactly: exponent 2.
          CHECK(bytes == 2.0 * 160 * 160 * 4);
          CHECK(exponent == Approx(2.0).margin(1e-9));
        } else if (variant == "flash") {
          CHECK(bytes > 0.0);
          CHECK(bytes < naive_bytes);
          CHECK(exponent < 1.01);
        } else {
          // chunk × N per thread: linear in N once N exceeds the chunk.
          CHECK(bytes < naive_bytes);
          CHECK(exponent < 1.5);
        }
      }
    }
  }
}

TEST_CASE("flash uses far less workspace than naive at N = 1024", "[flash_attention][cpu]") {
  const Technique& t = *technique;
  auto naive = t.prepare(make_case("naive", 1024), Device::cpu());
  auto flash = t.prepare(make_case("flash", 1024), Device::cpu());
  naive->step();
  flash->step();
  const double nb = metric(naive->finish(), "workspace_bytes").value;
  const double fb = metric(flash->finish(), "workspace_bytes").value;
  INFO("naive " << nb << " B, flash " << fb << " B");
  CHECK(fb * 10 < nb);
}

TEST_CASE("the check fails a wrong output and a NaN", "[flash_attention]") {
  const fa::Shape shape = fa::Shape::from(make_case("flash", 64));
  const fa::Inputs in = fa::make_inputs(shape);
  const memory::Buffer<double> want = fa::reference_output(shape, in);
  memory::Buffer<float> got(Device::cpu(), shape.q_elements());
  for (std::size_t i = 0; i < got.size(); ++i) got[i] = static_cast<float>(want[i]);
  CHECK(fa::check_output(shape, in, got.data(), "flash").max_abs < 1e-7);
  got[10] += 1e-3f;
  CHECK_THROWS_AS(fa::check_output(shape, in, got.data(), "flash"), CheckFailed);
  got[10] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(fa::check_output(shape, in, got.data(), "flash"), CheckFailed);
}

TEST_CASE("the bound grows with the dtype's rounding and the scores' size and stays far below a wrong output",
          "[flash_attention]") {
  using fa::Method;
  // At the default inputs (score s.d. 3, d = 64, N = 2048): |score| <= S ~ 32 by Cauchy–Schwarz.
  const double f32 = fa::tolerance(DType::f32, Method::flash, 32.0, 1.0, 2048, 64);
  const double f16 = fa::tolerance(DType::f16, Method::flash, 32.0, 1.0, 2048, 64);
  const double bf16 = fa::tolerance(DType::bf16, Method::flash, 32.0, 1.0, 2048, 64);
  const double bf16_naive = fa::tolerance(DType::bf16, Method::naive, 32.0, 1.0, 2048, 64);
  INFO("f32 " << f32 << ", f16 " << f16 << ", bf16 " << bf16 << ", bf16 naive " << bf16_naive);
  CHECK(f32 < 1e-3);
  CHECK(f32 < f16);
  CHECK(f16 < bf16);
  CHECK(bf16 < 0.02);  // P and the output rounded to bf16: 3·2^-8 and the fp32 terms
  CHECK(bf16 < bf16_naive);  // naive stores the scores in bf16 too: 2·2^-8·S more
  CHECK(fa::tolerance(DType::f32, Method::flash, 64.0, 1.0, 2048, 64) > f32);
  // Values twice as large: every error term scales with them.
  CHECK(fa::tolerance(DType::f32, Method::flash, 32.0, 2.0, 2048, 64) == Approx(2.0 * f32));
}

TEST_CASE("a kernel that skips the online rescale or ignores the scores fails its run", "[flash_attention][fault]") {
  for (const bool causal : {false, true}) {
    INFO("causal " << causal);
    const Result ok = aiopt::test::run_through_runner(*technique, make_case("flash", 160, causal));
    INFO(ok.message);
    REQUIRE(ok.status == Status::ok);
    {
      const fault::Scope f("flash_attention.skip_rescale");
      const Result r = aiopt::test::run_through_runner(*technique, make_case("flash", 160, causal));
      CHECK(r.status == Status::failed);
      CHECK_THAT(r.message, Catch::Contains("variant flash") && Catch::Contains("exceeds the tolerance"));
    }
    const fault::Scope f("flash_attention.ignore_scores");
    for (const std::string variant : {"naive", "flash", "memory_efficient"}) {
      INFO(variant);
      const Result r = aiopt::test::run_through_runner(*technique, make_case(variant, 160, causal));
      CHECK(r.status == Status::failed);
      CHECK_THAT(r.message, Catch::Contains("exceeds the tolerance"));
    }
  }
}

TEST_CASE("inputs=trained are the model's q k v and every variant passes its check on them",
          "[flash_attention][cpu]") {
  const aiopt::test::TestModelCache cache_dir;
  const fa::Shape shape = fa::Shape::from(trained_case("flash", true));
  const fa::Inputs in = fa::make_inputs(shape);
  const nn::AttentionCapture c = nn::capture_trained_attention("tiny", 1, 2, 128);
  REQUIRE(in.q.size() == c.q.size());
  CHECK(std::equal(in.q.begin(), in.q.end(), c.q.begin()));
  CHECK(std::equal(in.k.begin(), in.k.end(), c.k.begin()));
  CHECK(std::equal(in.v.begin(), in.v.end(), c.v.begin()));
  for (const bool causal : {false, true})
    for (const std::string variant : {"naive", "flash", "memory_efficient"}) {
      INFO(variant << " causal " << causal);
      const auto metrics = aiopt::test::run_case(*technique, trained_case(variant, causal), Device::cpu(), 1);
      INFO("max abs error " << metric(metrics, "max_abs_error").value << ", tolerance "
                            << metric(metrics, "error_tolerance").value);
      CHECK(metric(metrics, "max_abs_error").value <= metric(metrics, "error_tolerance").value);
      CHECK(metric(metrics, "max_abs_error").value > 0.0);
    }
}

TEST_CASE("on trained inputs a kernel that skips the online rescale or ignores the scores fails its run",
          "[flash_attention][fault]") {
  const aiopt::test::TestModelCache cache_dir;
  for (const bool causal : {false, true}) {
    INFO("causal " << causal);
    const Result r = aiopt::test::broken_run(*technique, trained_case("flash", causal), "flash_attention.skip_rescale");
    CHECK_THAT(r.message, Catch::Contains("variant flash") && Catch::Contains("trained tiny model") &&
                              Catch::Contains("exceeds the tolerance"));
    for (const std::string variant : {"naive", "flash", "memory_efficient"}) {
      INFO(variant);
      const Result broken =
          aiopt::test::broken_run(*technique, trained_case(variant, causal), "flash_attention.ignore_scores");
      CHECK_THAT(broken.message, Catch::Contains("exceeds the tolerance"));
    }
  }
}

TEST_CASE("inputs=trained takes its shape from the model and says which", "[flash_attention]") {
  const Technique& t = *technique;
  CHECK_NOTHROW(t.validate(trained_case("flash", true), DeviceKind::cpu));
  // make_case's shape (heads 2, head_dim 64, seq_len 256) is not the tiny model's.
  Case c = make_case("flash", 256);
  c.params.set("inputs", std::string("trained"));
  CHECK_THROWS_WITH(t.validate(c, DeviceKind::cpu),
                    Catch::Contains("heads = 4, head_dim = 16, seq_len <= 128") &&
                        Catch::Contains("got heads = 2, head_dim = 64, seq_len = 256") &&
                        Catch::Contains("--set heads=4 --set head_dim=16 --set seq_len=128"));
  Case past = trained_case("flash", true);
  past.params.set("layer", std::int64_t{2});
  CHECK_THROWS_WITH(t.validate(past, DeviceKind::cpu), Catch::Contains("layer <= 1") && Catch::Contains("got layer = 2"));
  Case many = trained_case("flash", true);
  many.params.set("batch", std::int64_t{2000});
  CHECK_THROWS_WITH(t.validate(many, DeviceKind::cpu), Catch::Contains("batch <= 1023"));
  Case gpt2 = trained_case("flash", true);
  gpt2.params.set("preset", std::string("gpt2"));  // vocabulary 50257: the standard recipe reads bytes
  CHECK_THROWS_AS(t.validate(gpt2, DeviceKind::cpu), InputError);
  // The tensor-core kernel is built for head_dim 64 and 128: the tiny model's 16 does not apply there.
  Case half = trained_case("flash", true);
  half.params.set("dtype", std::string("bf16"));
  CHECK_THROWS_AS(t.validate(half, DeviceKind::cuda), NotApplicable);
  half.variant = "naive";
  CHECK_NOTHROW(t.validate(half, DeviceKind::cuda));
}

TEST_CASE("with many heads the check compares 4 spread from the first to the last", "[flash_attention]") {
  Case c = make_case("flash", 64);
  c.params.set("heads", std::int64_t{64});
  const fa::Shape shape = fa::Shape::from(c);
  const auto heads = fa::checked_heads(shape);
  REQUIRE(heads.size() == 4);
  CHECK(heads.front() == 0);
  CHECK(heads.back() == 63);
  CHECK(std::is_sorted(heads.begin(), heads.end()));
  CHECK(std::adjacent_find(heads.begin(), heads.end()) == heads.end());
  // A wrong value in the last head is caught.
  const fa::Inputs in = fa::make_inputs(shape);
  const memory::Buffer<double> want = fa::reference_output(shape, in);
  memory::Buffer<float> got(Device::cpu(), shape.q_elements());
  for (std::size_t i = 0; i < got.size(); ++i) got[i] = static_cast<float>(want[i]);
  CHECK(fa::check_output(shape, in, got.data(), "flash").max_abs < 1e-7);
  got[got.size() - 1] += 1e-3f;
  CHECK_THROWS_AS(fa::check_output(shape, in, got.data(), "flash"), CheckFailed);
}

TEST_CASE("the workspace exponent is the least-squares log-log slope", "[flash_attention]") {
  CHECK(fa::fitted_exponent({64, 128, 256}, {64 * 64, 128 * 128, 256 * 256}) == Approx(2.0));
  CHECK(fa::fitted_exponent({64, 128, 256}, {640, 1280, 2560}) == Approx(1.0));
  CHECK(fa::fitted_exponent({64, 128, 256}, {4096, 4096, 4096}) == Approx(0.0).margin(1e-12));
  CHECK(fa::fitted_exponent({64, 128, 256}, {0, 0, 0}) == 0.0);
  CHECK(std::isnan(fa::fitted_exponent({64, 128, 256}, {0, 10, 20})));
  CHECK(fa::fit_lengths(2048) == std::vector<std::size_t>{512, 1024, 2048});
}

TEST_CASE("bad parameters are input errors that say what is allowed", "[flash_attention]") {
  const Technique& t = *technique;
  CHECK_THROWS_WITH(t.prepare(make_case("flash", 64, false, "64", "f16"), Device::cpu()),
                    Catch::Contains("dtype=f16") && Catch::Contains("cuda only"));
  // fp16/bf16 on the CPU does not apply (skipped with the reason); on CUDA it is valid.
  CHECK_THROWS_AS(t.validate(make_case("flash", 64, false, "64", "bf16"), DeviceKind::cpu), NotApplicable);
  CHECK_NOTHROW(t.validate(make_case("flash", 64, false, "64", "bf16"), DeviceKind::cuda));
  CHECK_THROWS_AS(t.validate(make_case("flash", 2), DeviceKind::cuda), InputError);
  CHECK_THROWS_WITH(t.prepare(make_case("flsah", 64), Device::cpu()), Catch::Contains("did you mean 'flash'"));
  CHECK_THROWS_WITH(t.prepare(make_case("flash", 2), Device::cpu()), Catch::Contains("parameter 'seq_len': value '2' is out of range"));
  CHECK_THROWS_WITH(t.prepare(make_case("flash", 64, false, "96"), Device::cpu()), Catch::Contains("'head_dim'"));
  CHECK_THROWS_WITH(t.prepare(make_case("flash", 64, false, "64", "f61"), Device::cpu()),
                    Catch::Contains("'dtype'") && Catch::Contains("did you mean 'f16'"));
  Case c = make_case("flash", 64);
  c.params.set("q_tile", std::int64_t{0});
  CHECK_THROWS_AS(t.prepare(c, Device::cpu()), InputError);
}

TEST_CASE("a CUDA case without a usable GPU is unavailable, with the reason", "[flash_attention]") {
  const Technique& t = *technique;
  const std::string why = cuda::unavailable_reason();
  if (!why.empty()) CHECK_THROWS_WITH(t.prepare(make_case("flash", 64), Device::cuda()), Catch::Contains(why));
  CHECK_THROWS_AS(t.prepare(make_case("flash", 64), Device::cuda(cuda::device_count())), DeviceUnavailable);
}

TEST_CASE("aiopt bench --technique flash_attention --quick writes a valid report", "[flash_attention][cli]") {
  aiopt::test::TempDir tmp;
  const auto r = aiopt::test::run_aiopt({"bench", "--technique", "flash_attention", "--quick", "--device", "cpu",
                                         "--min-time", "0", "--progress", "never", "--format", "json", "-o",
                                         tmp.file("r.json")});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const json report = json::parse(aiopt::test::read_text(tmp.file("r.json")));
  const auto errors = aiopt::test::schema_errors(report);
  for (const auto& e : errors) UNSCOPED_INFO(e);
  REQUIRE(errors.empty());
  REQUIRE(report.at("results").size() == 3);
  for (const auto& res : report.at("results")) CHECK(res.at("status") == "ok");
}

// ---- CUDA against the float64 reference (tolerance per dtype: fa::tolerance)

TEST_CASE("every CUDA variant and dtype matches the reference", "[flash_attention][gpu]") {
  const Technique& t = *technique;
  // 200: a partial last query tile and key tile; 64: a single tile.
  for (std::int64_t n : {std::int64_t{200}, std::int64_t{64}})
    for (bool causal : {false, true})
      for (const std::string head_dim : {"64", "128"})
        for (const std::string dtype : {"f32", "f16", "bf16"})
          for (const std::string variant : {"naive", "flash", "memory_efficient"}) {
            INFO(variant << " " << dtype << " N " << n << " d " << head_dim << " causal " << causal);
            auto run = t.prepare(make_case(variant, n, causal, head_dim, dtype), Device::cuda());
            CHECK(run->stream() != nullptr);
            for (int i = 0; i < 2; ++i) run->step();
            std::vector<Metric> metrics;
            REQUIRE_NOTHROW(metrics = run->finish());
            CHECK(metric(metrics, "max_abs_error").value <= metric(metrics, "error_tolerance").value);
            if (variant == "flash") CHECK(metric(metrics, "workspace_bytes").value == 0.0);
          }
}
