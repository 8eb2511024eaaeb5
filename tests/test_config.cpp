// Experiment configs and sweeps: the value syntax, --set, expansion order, and loading YAML and
// JSON files, with every class of bad input rejected by an InputError that names the place.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "core/error.hpp"
#include "core/spelling.hpp"
#include "harness/config.hpp"
#include "harness/sweep.hpp"
#include "techniques/registry.hpp"

using namespace aiopt;
using Catch::Matchers::Contains;
using TechniqueList = std::vector<std::unique_ptr<Technique>>;

namespace {

const std::vector<DeviceKind> both{DeviceKind::cpu, DeviceKind::cuda};

ParamSpec spec(std::string name, ParamType type, Value default_value) {
  ParamSpec s;
  s.name = std::move(name);
  s.type = type;
  s.default_value = std::move(default_value);
  return s;
}

// Declarations only: these fakes exist to be validated and expanded, never run.
class FakeTechnique : public Technique {
 public:
  std::string summary() const override { return "fake"; }
  std::string trade_off() const override { return "nothing for nothing"; }
  std::unique_ptr<Run> start(const Case&, const Device&) const override {
    throw std::logic_error("fake techniques do not run");
  }
};

// A spec shaped like tensor_fusion's (techniques/tensor_fusion), so harness tests need no real technique.
class FakeFusion : public FakeTechnique {
 public:
  std::string name() const override { return "tensor_fusion"; }
  std::vector<ParamSpec> params() const override {
    auto chain = spec("chain", ParamType::choice, std::string("layernorm"));
    chain.choices = {"bias_gelu", "layernorm", "softmax"};
    auto rows = spec("rows", ParamType::integer, std::int64_t{8192});
    rows.min = 1;
    rows.max = 1048576;
    rows.quick_value = std::int64_t{1024};
    auto hidden = spec("hidden", ParamType::integer, std::int64_t{1024});
    hidden.min = 1;
    hidden.max = 65536;
    hidden.quick_value = std::int64_t{256};
    auto dropout = spec("dropout", ParamType::real, 0.1);
    dropout.min = 0.0;
    dropout.max = 0.95;
    return {chain, rows, hidden, dropout};
  }
  std::vector<Variant> variants() const override {
    return {{"unfused", "", true, {DeviceKind::cpu, DeviceKind::cuda}},
            {"fused", "", false, {DeviceKind::cpu, DeviceKind::cuda}},
            {"cuda_graph", "", false, {DeviceKind::cuda}}};
  }
};

// One parameter of every type, and variants on different devices.
class FakeKnobs : public FakeTechnique {
 public:
  std::string name() const override { return "knobs"; }
  std::vector<ParamSpec> params() const override {
    auto count = spec("count", ParamType::integer, std::int64_t{4});
    count.min = 1;
    count.max = 100;
    count.quick_value = std::int64_t{2};
    auto offset = spec("offset", ParamType::integer, std::int64_t{0});
    auto ratio = spec("ratio", ParamType::real, 0.5);
    ratio.min = 0.0;
    ratio.max = 1.0;
    auto exact = spec("exact", ParamType::boolean, false);
    auto mode = spec("mode", ParamType::choice, std::string("safe"));
    mode.choices = {"fast", "slow", "safe"};
    mode.quick_value = std::string("fast");
    auto label = spec("label", ParamType::string, std::string("x"));
    return {count, offset, ratio, exact, mode, label};
  }
  std::vector<Variant> variants() const override {
    return {{"tuned", "", false, {DeviceKind::cpu}},
            {"plain", "", true, {DeviceKind::cpu, DeviceKind::cuda}},
            {"gpu_only", "", false, {DeviceKind::cuda}}};
  }
};

const TechniqueList& fakes() {
  static const TechniqueList list = [] {
    TechniqueList l;
    l.push_back(std::make_unique<FakeFusion>());
    l.push_back(std::make_unique<FakeKnobs>());
    return l;
  }();
  return list;
}

const Technique& knobs() { return *fakes()[1]; }
const Technique& fusion() { return *fakes()[0]; }

ParamSpec param(const Technique& t, const std::string& name) {
  for (const auto& s : t.params())
    if (s.name == name) return s;
  throw std::logic_error("no parameter " + name);
}

// The message of the InputError `f` throws, or a marker that matches no expectation.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "<no InputError thrown>";
}

std::vector<std::string> texts(const std::vector<Value>& values) {
  std::vector<std::string> out;
  for (const auto& v : values) out.push_back(to_string(v));
  return out;
}

// "cpu plain* count=1 mode=fast": device, variant (* marks the baseline), chosen parameters.
std::vector<std::string> summary(const std::vector<PlannedCase>& cases,
                                 const std::vector<std::string>& keys) {
  std::vector<std::string> out;
  for (const auto& p : cases) {
    std::string line = to_string(p.device) + " " + p.c.variant + (p.baseline ? "*" : "");
    for (const auto& k : keys) line += " " + k + "=" + to_string(p.c.params.at(k));
    out.push_back(line);
  }
  return out;
}

std::vector<PlannedCase> plan(const ExperimentFile& file, bool quick = false,
                              const std::vector<std::unique_ptr<Technique>>& techniques = fakes()) {
  std::vector<PlannedCase> cases;
  for (const auto& e : file.experiments) {
    const Technique& t = find_technique(e.technique, techniques, e.origin);
    for (auto& p : expand(e, t, quick, 7, both)) cases.push_back(std::move(p));
  }
  return cases;
}

ExperimentFile yaml(const std::string& text) { return parse_experiment_file(text, "x.yaml", fakes()); }
std::string yaml_error(const std::string& text) { return error_of([&] { yaml(text); }); }

}  // namespace

// ---- spelling

TEST_CASE("edit distance counts insertions, deletions, substitutions and swaps", "[config]") {
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(edit_distance("sitting", "kitten") == 3);
  CHECK(edit_distance("", "abc") == 3);
  CHECK(edit_distance("hidden", "hidden") == 0);
  CHECK(edit_distance("hiden", "hidden") == 1);
  CHECK(edit_distance("cuont", "count") == 1);
  CHECK(edit_distance("ab", "ba") == 1);
  CHECK(edit_distance("abc", "ca") == 3);
}

TEST_CASE("the closest name is suggested only when it is a plausible typo", "[config]") {
  const std::vector<std::string> names{"chain", "rows", "hidden", "dropout"};
  CHECK(closest_name("hiden", names) == std::optional<std::string>("hidden"));
  CHECK(closest_name("row", names) == std::optional<std::string>("rows"));
  CHECK_FALSE(closest_name("temperature", names).has_value());
  CHECK(did_you_mean("dropot", names) == "; did you mean 'dropout'?");
  CHECK(did_you_mean("zzz", names).empty());
}

// ---- device names

TEST_CASE("device names parse as configs and reports write them", "[config]") {
  CHECK(device_named("cpu") == Device::cpu());
  CHECK(device_named("cuda") == Device::cuda(0));
  CHECK(device_named("cuda:3") == Device::cuda(3));
  CHECK(device_named("cuda:12345678") == Device::cuda(12345678));
  for (const char* bad : {"", "gpu", "CPU", "cuda:", "cuda:-1", "cuda:1x", "cuda0", "cuda:123456789"}) {
    INFO(bad);
    CHECK_FALSE(device_named(bad).has_value());
  }
  CHECK(device_kind_named("cpu") == DeviceKind::cpu);
  CHECK(device_kind_named("cuda") == DeviceKind::cuda);
  CHECK_FALSE(device_kind_named("cuda:0").has_value());
  for (const DeviceKind kind : device_kinds) CHECK(device_kind_named(to_string(kind)) == kind);
}

// ---- value syntax

TEST_CASE("value lists and ranges expand as llama-bench's", "[config]") {
  const auto& count = param(knobs(), "count");
  const auto& rows = param(fusion(), "rows");
  const auto& offset = param(knobs(), "offset");
  const auto& ratio = param(knobs(), "ratio");
  CHECK(texts(parse_values(count, "3, 1,2", "t")) == std::vector<std::string>{"3", "1", "2"});
  CHECK(texts(parse_values(rows, "16-1024*2", "t")) ==
        std::vector<std::string>{"16", "32", "64", "128", "256", "512", "1024"});
  CHECK(texts(parse_values(offset, "0-100+25", "t")) ==
        std::vector<std::string>{"0", "25", "50", "75", "100"});
  // A range stops at the last value not above its end.
  CHECK(texts(parse_values(rows, "16-1000*2", "t")) ==
        std::vector<std::string>{"16", "32", "64", "128", "256", "512"});
  CHECK(texts(parse_values(offset, "-4--1+1", "t")) == std::vector<std::string>{"-4", "-3", "-2", "-1"});
  CHECK(texts(parse_values(rows, "8,16-64*2,100", "t")) ==
        std::vector<std::string>{"8", "16", "32", "64", "100"});

  const auto quarters = parse_values(ratio, "0-1+0.25", "t");
  REQUIRE(quarters.size() == 5);
  for (std::size_t i = 0; i < quarters.size(); ++i)
    CHECK(std::get<double>(quarters[i]) == Approx(0.25 * static_cast<double>(i)).margin(1e-12));
  const auto tenths = parse_values(ratio, "0-1+0.1", "t");
  REQUIRE(tenths.size() == 11);
  CHECK(std::get<double>(tenths.back()) == 1.0);
  const auto decades = parse_values(ratio, "1e-3-1e-1*10", "t");
  REQUIRE(decades.size() == 3);
  CHECK(std::get<double>(decades[0]) == Approx(1e-3));
  CHECK(std::get<double>(decades[2]) == Approx(1e-1));
}

TEST_CASE("bools, choices and strings parse to typed values", "[config]") {
  CHECK(parse_values(param(knobs(), "exact"), "true,0", "t") == std::vector<Value>{true, false});
  CHECK(parse_values(param(knobs(), "mode"), "slow,fast", "t") ==
        std::vector<Value>{std::string("slow"), std::string("fast")});
  CHECK(parse_values(param(knobs(), "label"), "a b", "t") == std::vector<Value>{std::string("a b")});
  CHECK(parse_values(param(knobs(), "ratio"), "0.125", "t") == std::vector<Value>{0.125});
  CHECK(parse_values(param(knobs(), "count"), "7", "t") == std::vector<Value>{std::int64_t{7}});
}

TEST_CASE("bad values name the place, the key, the value and what is allowed", "[config]") {
  const auto& rows = param(fusion(), "rows");
  const auto& ratio = param(knobs(), "ratio");
  auto values_error = [](const ParamSpec& s, std::string text) {
    return error_of([&] { parse_values(s, text, "x.yaml:9"); });
  };
  CHECK(values_error(rows, "abc") ==
        "x.yaml:9: parameter 'rows': value 'abc' is not an integer (rows: int in [1, 1048576])");
  CHECK_THAT(values_error(rows, "0"), Contains("'0' is out of range") && Contains("[1, 1048576]"));
  CHECK_THAT(values_error(rows, "2000000"), Contains("'2000000' is out of range"));
  CHECK_THAT(values_error(rows, "16.5"), Contains("'16.5' is not an integer"));
  CHECK_THAT(values_error(rows, ""), Contains("x.yaml:9: parameter 'rows': no value"));
  CHECK_THAT(values_error(rows, "16,,32"), Contains("empty value") && Contains("'16,,32'"));
  CHECK_THAT(values_error(rows, "16,16"), Contains("'16' appears twice"));
  CHECK_THAT(values_error(rows, "16-64*1"), Contains("factor '1'") && Contains("never ends"));
  CHECK_THAT(values_error(rows, "16-64+0"), Contains("step '0'") && Contains("never ends"));
  CHECK_THAT(values_error(rows, "16-64+-4"), Contains("step '-4'"));
  CHECK_THAT(values_error(rows, "64-16*2"), Contains("runs backwards"));
  CHECK_THAT(values_error(rows, "16-6x*2"), Contains("'6x' is not an integer"));
  CHECK_THAT(values_error(rows, "1-1000000+1"), Contains("more than 10000 values"));
  CHECK_THAT(values_error(param(knobs(), "offset"), "0-64*2"), Contains("must start above 0"));
  CHECK_THAT(values_error(ratio, "nan"), Contains("'nan' is not a number"));
  CHECK_THAT(values_error(ratio, "0-2+0.5"), Contains("'1.5' is out of range") && Contains("[0, 1]"));
  CHECK_THAT(values_error(param(knobs(), "exact"), "yes"),
             Contains("'yes' is not a bool") && Contains("true, false, 1 or 0"));
  CHECK(values_error(param(fusion(), "chain"), "layernom") ==
        "x.yaml:9: parameter 'chain': value 'layernom' is not allowed; did you mean 'layernorm'? "
        "(chain: one of bias_gelu, layernorm, softmax)");
}

TEST_CASE("set assignments (--set key=values) parse against the technique's spec", "[config]") {
  const Axis axis = parse_set(fusion(), "rows=16-64*2");
  CHECK(axis.name == "rows");
  CHECK(texts(axis.values) == std::vector<std::string>{"16", "32", "64"});
  CHECK(texts(parse_set(fusion(), " chain = softmax,bias_gelu").values) ==
        std::vector<std::string>{"softmax", "bias_gelu"});
  CHECK_THAT(error_of([] { parse_set(fusion(), "rows"); }),
             Contains("--set") && Contains("'rows' is not key=values"));
  CHECK_THAT(error_of([] { parse_set(fusion(), "=4"); }), Contains("is not key=values"));
  CHECK(error_of([] { parse_set(fusion(), "hiden=512"); }) ==
        "--set (tensor_fusion): parameter 'hiden' is unknown; did you mean 'hidden'? "
        "(parameters: chain, dropout, hidden, rows)");
  CHECK_THAT(error_of([] { parse_set(fusion(), "rows=abc"); }),
             Contains("--set (tensor_fusion): parameter 'rows': value 'abc' is not an integer"));
}

// ---- expansion

TEST_CASE("axes expand as a cartesian product, later axes fastest, then devices and variants",
          "[config]") {
  Experiment e;
  e.technique = "knobs";
  e.axes = {{"count", {std::int64_t{1}, std::int64_t{2}}},
            {"mode", {std::string("fast"), std::string("slow")}}};
  e.devices = {"cuda", "cpu"};
  e.variants = {"tuned", "gpu_only"};
  const auto cases = expand(e, knobs(), false, 7, both);
  const std::vector<std::string> expected{
      "cuda plain* count=1 mode=fast", "cuda gpu_only count=1 mode=fast",
      "cpu plain* count=1 mode=fast",  "cpu tuned count=1 mode=fast",
      "cuda plain* count=1 mode=slow", "cuda gpu_only count=1 mode=slow",
      "cpu plain* count=1 mode=slow",  "cpu tuned count=1 mode=slow",
      "cuda plain* count=2 mode=fast", "cuda gpu_only count=2 mode=fast",
      "cpu plain* count=2 mode=fast",  "cpu tuned count=2 mode=fast",
      "cuda plain* count=2 mode=slow", "cuda gpu_only count=2 mode=slow",
      "cpu plain* count=2 mode=slow",  "cpu tuned count=2 mode=slow"};
  CHECK(summary(cases, {"count", "mode"}) == expected);
  for (const auto& p : cases) {
    CHECK(p.c.technique == "knobs");
    CHECK(p.c.seed == 7);
  }
}

TEST_CASE("zip groups advance together and come after the independent axes", "[config]") {
  Experiment e;
  e.technique = "knobs";
  e.variants = {"plain"};
  e.axes = {{"exact", {true, false}}};
  e.zips = {{{"count", {std::int64_t{1}, std::int64_t{2}, std::int64_t{3}}},
             {"label", {std::string("a"), std::string("b"), std::string("c")}}}};
  CHECK(summary(expand(e, knobs(), false, 0, {DeviceKind::cpu}), {"exact", "count", "label"}) ==
        std::vector<std::string>{"cpu plain* exact=true count=1 label=a",
                                 "cpu plain* exact=true count=2 label=b",
                                 "cpu plain* exact=true count=3 label=c",
                                 "cpu plain* exact=false count=1 label=a",
                                 "cpu plain* exact=false count=2 label=b",
                                 "cpu plain* exact=false count=3 label=c"});
}

TEST_CASE("parameters off the axes take their defaults, or quick values under --quick", "[config]") {
  Experiment e;
  e.technique = "knobs";
  e.variants = {"plain"};
  e.axes = {{"ratio", {0.25}}};
  const auto normal = expand(e, knobs(), false, 0, {DeviceKind::cpu});
  REQUIRE(normal.size() == 1);
  Params expected;
  expected.set("count", std::int64_t{4});
  expected.set("offset", std::int64_t{0});
  expected.set("ratio", 0.25);
  expected.set("exact", false);
  expected.set("mode", std::string("safe"));
  expected.set("label", std::string("x"));
  CHECK(normal[0].c.params == expected);

  const auto quick = expand(e, knobs(), true, 0, {DeviceKind::cpu});
  REQUIRE(quick.size() == 1);
  expected.set("count", std::int64_t{2});
  expected.set("mode", std::string("fast"));
  CHECK(quick[0].c.params == expected);

  // A value on an axis wins over the quick value.
  e.axes.push_back({"count", {std::int64_t{9}}});
  CHECK(expand(e, knobs(), true, 0, {DeviceKind::cpu})[0].c.params.integer("count") == 9);
}

TEST_CASE("the baseline joins its variants, and variants skip devices they do not run on",
          "[config]") {
  Experiment e;
  e.technique = "knobs";
  CHECK(summary(expand(e, knobs(), false, 0, both), {}) ==
        std::vector<std::string>{"cpu plain*", "cpu tuned", "cuda plain*", "cuda gpu_only"});
  e.variants = {"tuned"};
  CHECK(summary(expand(e, knobs(), false, 0, both), {}) ==
        std::vector<std::string>{"cpu plain*", "cpu tuned"});
  e.variants = {"plain"};
  CHECK(summary(expand(e, knobs(), false, 0, both), {}) ==
        std::vector<std::string>{"cpu plain*", "cuda plain*"});
  // With only the CPU by default, a CUDA-only variant has nothing to run, and neither has its
  // baseline: there would be nothing to compare it with.
  e.variants = {"gpu_only"};
  CHECK(expand(e, knobs(), false, 0, {DeviceKind::cpu}).empty());
}

TEST_CASE("validate rejects experiments built in code that do not fit the technique", "[config]") {
  auto validate_error = [](const Experiment& e) { return error_of([&] { validate(e, fakes()); }); };
  Experiment good;
  good.technique = "knobs";
  good.origin = "bench flags";
  CHECK(validate_error(good) == "<no InputError thrown>");

  Experiment e = good;
  e.technique = "knbos";
  CHECK_THAT(validate_error(e), Contains("bench flags") && Contains("technique 'knbos' is unknown") &&
                                    Contains("did you mean 'knobs'?"));
  e = good;
  e.variants = {"tunde"};
  CHECK_THAT(validate_error(e), Contains("variant 'tunde' is unknown; did you mean 'tuned'?") &&
                                    Contains("(variants: tuned, plain, gpu_only)"));
  e = good;
  e.variants = {"tuned", "tuned"};
  CHECK_THAT(validate_error(e), Contains("variant 'tuned' is listed twice"));
  e = good;
  e.devices = {"gpu"};
  CHECK_THAT(validate_error(e), Contains("device 'gpu' is unknown") && Contains("cpu, cuda"));
  e = good;
  e.devices = {"cpu"};
  e.variants = {"gpu_only"};
  CHECK_THAT(validate_error(e), Contains("variant 'gpu_only' runs on cuda, none of the devices asked (cpu)"));
  e = good;
  e.axes = {{"count", {std::int64_t{1}}}, {"count", {std::int64_t{2}}}};
  CHECK_THAT(validate_error(e), Contains("parameter 'count' is on two axes"));
  e = good;
  e.axes = {{"count", {}}};
  CHECK_THAT(validate_error(e), Contains("parameter 'count' has no values"));
  e = good;
  e.axes = {{"count", {1.5}}};
  CHECK_THAT(validate_error(e), Contains("parameter 'count': value '1.5' is a float") &&
                                    Contains("count: int in [1, 100]"));
  e = good;
  e.axes = {{"count", {std::int64_t{101}}}};
  CHECK_THAT(validate_error(e), Contains("value '101' is out of range"));
  e = good;
  e.zips = {{{"count", {std::int64_t{1}, std::int64_t{2}}}, {"ratio", {0.5}}}};
  CHECK_THAT(validate_error(e), Contains("'count' (2 values) and 'ratio' (1 values) differ in length"));
  e = good;
  e.axes = {{"mode", {std::string("turbo")}}};
  CHECK_THAT(validate_error(e), Contains("value 'turbo' is not allowed"));
}

// ---- files

namespace {

const char* fusion_yaml = R"(settings:
  seed: 3
  quick: true
  warmup: 2
  min_samples: 5
  min_time_s: 0.5
  max_noise: 0.05
  timeout_s: 60
experiments:
  - technique: tensor_fusion
    variants: [fused]
    devices: [cpu, cuda]
    params:
      chain: [bias_gelu, layernorm]
      hidden: 1024
    zip:
      rows: 1024-2048*2
      dropout: [0.0, 0.2]
)";

const char* fusion_json = R"({
  "settings": {"seed": 3, "quick": true, "warmup": 2, "min_samples": 5,
               "min_time_s": 0.5, "max_noise": 0.05, "timeout_s": 60},
  "experiments": [
    {"technique": "tensor_fusion", "variants": ["fused"], "devices": ["cpu", "cuda"],
     "params": {"chain": ["bias_gelu", "layernorm"], "hidden": 1024},
     "zip": {"rows": "1024-2048*2", "dropout": [0.0, 0.2]}}
  ]
})";

}  // namespace

TEST_CASE("a YAML file expands to the documented cases, settings included", "[config]") {
  const ExperimentFile file = yaml(fusion_yaml);
  CHECK(file.path == "x.yaml");
  CHECK(file.settings.seed == std::optional<std::uint64_t>(3));
  CHECK(file.settings.quick == std::optional<bool>(true));
  CHECK(file.settings.warmup == std::optional<std::int64_t>(2));
  CHECK(file.settings.min_samples == std::optional<std::int64_t>(5));
  CHECK(file.settings.min_time_s == std::optional<double>(0.5));
  CHECK(file.settings.max_noise == std::optional<double>(0.05));
  CHECK(file.settings.timeout_s == std::optional<double>(60.0));
  REQUIRE(file.experiments.size() == 1);
  CHECK(file.experiments[0].origin == "x.yaml:10: experiment 1");
  CHECK(summary(plan(file), {"chain", "rows", "dropout", "hidden"}) ==
        std::vector<std::string>{
            "cpu unfused* chain=bias_gelu rows=1024 dropout=0 hidden=1024",
            "cpu fused chain=bias_gelu rows=1024 dropout=0 hidden=1024",
            "cuda unfused* chain=bias_gelu rows=1024 dropout=0 hidden=1024",
            "cuda fused chain=bias_gelu rows=1024 dropout=0 hidden=1024",
            "cpu unfused* chain=bias_gelu rows=2048 dropout=0.2 hidden=1024",
            "cpu fused chain=bias_gelu rows=2048 dropout=0.2 hidden=1024",
            "cuda unfused* chain=bias_gelu rows=2048 dropout=0.2 hidden=1024",
            "cuda fused chain=bias_gelu rows=2048 dropout=0.2 hidden=1024",
            "cpu unfused* chain=layernorm rows=1024 dropout=0 hidden=1024",
            "cpu fused chain=layernorm rows=1024 dropout=0 hidden=1024",
            "cuda unfused* chain=layernorm rows=1024 dropout=0 hidden=1024",
            "cuda fused chain=layernorm rows=1024 dropout=0 hidden=1024",
            "cpu unfused* chain=layernorm rows=2048 dropout=0.2 hidden=1024",
            "cpu fused chain=layernorm rows=2048 dropout=0.2 hidden=1024",
            "cuda unfused* chain=layernorm rows=2048 dropout=0.2 hidden=1024",
            "cuda fused chain=layernorm rows=2048 dropout=0.2 hidden=1024"});
}

TEST_CASE("the JSON and YAML forms of an experiment give the same cases", "[config]") {
  const ExperimentFile from_json = parse_experiment_file(fusion_json, "x.json", fakes());
  const ExperimentFile from_yaml = yaml(fusion_yaml);
  const auto a = plan(from_json);
  const auto b = plan(from_yaml);
  REQUIRE(a.size() == 16);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].c.variant == b[i].c.variant);
    CHECK(a[i].c.params == b[i].c.params);
    CHECK(a[i].device == b[i].device);
    CHECK(a[i].baseline == b[i].baseline);
  }
  CHECK(from_json.settings.seed == from_yaml.settings.seed);
  CHECK(from_json.settings.max_noise == from_yaml.settings.max_noise);
  CHECK(from_json.experiments[0].origin == "x.json:5: experiment 1");
}

TEST_CASE("a bare list of experiments and a list of zip groups are accepted", "[config]") {
  const ExperimentFile file = yaml(R"(- technique: knobs
  variants: plain
  devices: cpu
  zip:
    - {count: [1, 2], mode: [fast, slow]}
    - {exact: [true, false], label: [p, q]}
- technique: tensor_fusion
  variants: [unfused]
  devices: [cpu]
)");
  REQUIRE(file.experiments.size() == 2);
  CHECK(file.experiments[0].zips.size() == 2);
  const auto cases = plan(file);
  REQUIRE(cases.size() == 5);
  CHECK(summary({cases.begin(), cases.begin() + 4}, {"count", "mode", "exact", "label"}) ==
        std::vector<std::string>{"cpu plain* count=1 mode=fast exact=true label=p",
                                 "cpu plain* count=1 mode=fast exact=false label=q",
                                 "cpu plain* count=2 mode=slow exact=true label=p",
                                 "cpu plain* count=2 mode=slow exact=false label=q"});
  CHECK(summary({cases.begin() + 4, cases.end()}, {"rows", "hidden"}) ==
        std::vector<std::string>{"cpu unfused* rows=8192 hidden=1024"});
  CHECK(plan(file, true).back().c.params.integer("rows") == 1024);
}

TEST_CASE("every class of bad file input names the file, line and key", "[config]") {
  // Unknown names, with suggestions.
  CHECK(yaml_error("experiments:\n  - technique: tensor_fuson\n") ==
        "x.yaml:2: experiment 1: technique 'tensor_fuson' is unknown; did you mean "
        "'tensor_fusion'? (techniques: tensor_fusion, knobs)");
  CHECK(yaml_error("experiments:\n  - technique: tensor_fusion\n    params:\n      rows: 64\n"
                   "      hiden: 512\n") ==
        "x.yaml:5: experiment 1 (tensor_fusion): parameter 'hiden' is unknown; did you mean "
        "'hidden'? (parameters: chain, dropout, hidden, rows)");
  CHECK_THAT(yaml_error("experiment:\n  - technique: knobs\n"),
             Contains("x.yaml:1: key 'experiment' is unknown; did you mean 'experiments'?") &&
                 Contains("(keys: experiments, settings)"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    variant: [plain]\n"),
             Contains("x.yaml:3: experiment 1: key 'variant' is unknown; did you mean 'variants'?"));
  CHECK_THAT(yaml_error("settings:\n  seeds: 1\nexperiments:\n  - technique: knobs\n"),
             Contains("x.yaml:2: settings: key 'seeds' is unknown; did you mean 'seed'?"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    variants: [plain, tunde]\n"),
             Contains("x.yaml:3: experiment 1 (knobs): variant 'tunde' is unknown; did you mean 'tuned'?"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    devices:\n      - cpu\n      - gpu\n"),
             Contains("x.yaml:5: experiment 1 (knobs): device 'gpu' is unknown"));

  // Bad values, at the line of the value.
  CHECK(yaml_error("experiments:\n  - technique: tensor_fusion\n    params:\n      rows: abc\n") ==
        "x.yaml:4: experiment 1 (tensor_fusion): parameter 'rows': value 'abc' is not an integer "
        "(rows: int in [1, 1048576])");
  CHECK_THAT(yaml_error("experiments:\n  - technique: tensor_fusion\n    params:\n      rows:\n"
                        "        - 64\n        - 0\n"),
             Contains("x.yaml:6:") && Contains("parameter 'rows': value '0' is out of range"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: tensor_fusion\n    params:\n      rows: 16-64*1\n"),
             Contains("x.yaml:4:") && Contains("factor '1'"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: tensor_fusion\n    params:\n      rows: 16-64+0\n"),
             Contains("x.yaml:4:") && Contains("step '0'"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: tensor_fusion\n    params:\n      rows: [64, 64]\n"),
             Contains("x.yaml:4:") && Contains("value '64' appears twice"));
  CHECK_THAT(yaml_error("settings:\n  warmup: -1\nexperiments:\n  - technique: knobs\n"),
             Contains("x.yaml:2: setting 'warmup': value '-1' is not an integer >= 0"));
  CHECK_THAT(yaml_error("settings:\n  quick: maybe\nexperiments:\n  - technique: knobs\n"),
             Contains("x.yaml:2: setting 'quick': value 'maybe' is not a bool"));
  CHECK_THAT(yaml_error("settings:\n  max_noise: 0\nexperiments:\n  - technique: knobs\n"),
             Contains("x.yaml:2: setting 'max_noise': value '0' is not a number > 0"));

  // Empty axes and wrong node types.
  CHECK_THAT(yaml_error("experiments:\n  - technique: tensor_fusion\n    params:\n      rows: []\n"),
             Contains("x.yaml:4:") && Contains("parameter 'rows' must be a value or a non-empty list") &&
                 Contains("not an empty list"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: tensor_fusion\n    params:\n      rows:\n"
                        "    devices: [cpu]\n"),
             Contains("x.yaml:4:") && Contains("parameter 'rows'") && Contains("not empty"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: tensor_fusion\n    params:\n      - rows: 4\n"),
             Contains("x.yaml:4:") && Contains("'params' must be a mapping") && Contains("not a list"));
  CHECK_THAT(yaml_error("experiments:\n  technique: knobs\n"),
             Contains("x.yaml:2: 'experiments' must be a list of experiments, not a mapping"));
  CHECK_THAT(yaml_error("experiments: []\n"), Contains("x.yaml:1: the list of experiments is empty"));
  CHECK_THAT(yaml_error("experiments:\n  - knobs\n"),
             Contains("x.yaml:2: experiment 1 must be a mapping") && Contains("not a value"));
  CHECK_THAT(yaml_error("experiments:\n  - variants: [plain]\n"),
             Contains("x.yaml:2: experiment 1 has no 'technique:' key"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    params:\n      mode: {a: 1}\n"),
             Contains("x.yaml:4:") && Contains("parameter 'mode' must be a value") && Contains("not a mapping"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    devices: {cpu: 1}\n"),
             Contains("x.yaml:3:") && Contains("'devices' must be a name or a list of names"));
  CHECK_THAT(yaml_error("settings: [1]\nexperiments:\n  - technique: knobs\n"),
             Contains("x.yaml:1: 'settings' must be a mapping, not a list"));
  CHECK_THAT(yaml_error("just text\n"), Contains("x.yaml:1: expected a mapping") && Contains("not a value"));

  // Repeated keys, parameters on two axes, and zip lists of unequal length.
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    params:\n      count: 1\n      count: 2\n"),
             Contains("x.yaml:5: experiment 1 (knobs): key 'count' appears twice (first at x.yaml:4)"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    params:\n      count: 1\n    zip:\n"
                        "      count: [1, 2]\n      mode: [fast, slow]\n"),
             Contains("x.yaml:6: experiment 1 (knobs): parameter 'count' is already set in params (x.yaml:4)"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    zip:\n      count: [1, 2]\n"
                        "      mode: [fast, slow, safe]\n"),
             Contains("x.yaml:5: experiment 1 (knobs): zip parameter 'mode' has 3 values but 'count' has 2"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    zip: []\n"),
             Contains("x.yaml:3:") && Contains("'zip' must be a mapping"));

  // Checks that span keys report the experiment's line.
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    variants: [gpu_only]\n    devices: [cpu]\n"),
             Contains("x.yaml:2: experiment 1 (knobs): variant 'gpu_only' runs on cuda, none of the devices"));
}

TEST_CASE("syntax errors, empty and missing files are reported with file and line", "[config]") {
  CHECK_THAT(error_of([] { parse_experiment_file("{\n  \"experiments\": [],\n}\n", "bad.json", fakes()); }),
             Contains("bad.json:3: not valid JSON"));
  CHECK_THAT(error_of([] { parse_experiment_file("{\"experiments\": [{\"technique\": \"knobs\"}]} // c\n",
                                                 "c.json", fakes()); }),
             Contains("c.json:1: not valid JSON"));
  CHECK_THAT(error_of([] {
               parse_experiment_file("{\n\"experiments\": [\n{\"technique\": \"knobs\",\n"
                                     " \"params\": {\"cuont\": 1}}]}\n",
                                     "k.json", fakes());
             }),
             Contains("k.json:4: experiment 1 (knobs): parameter 'cuont' is unknown; did you mean 'count'?"));
  CHECK_THAT(yaml_error("experiments:\n  - technique: knobs\n    params: {count: [1, 2}\n"),
             Contains("x.yaml:3: not valid YAML"));
  CHECK_THAT(yaml_error(""), Contains("x.yaml: the file is empty"));
  CHECK_THAT(yaml_error("# nothing but a comment\n"), Contains("x.yaml: the file is empty"));
  CHECK_THAT(error_of([] { parse_experiment_file("experiments: []", "x.toml", fakes()); }),
             Contains("x.toml: unknown experiment file type '.toml'"));

  const auto missing = std::filesystem::temp_directory_path() / "aiopt-test-config-missing.yaml";
  std::filesystem::remove(missing);
  CHECK_THAT(error_of([&] { load_experiment_file(missing.string(), fakes()); }),
             Contains(missing.string() + ": cannot open the experiment file"));
}

TEST_CASE("a file on disk loads like its text", "[config]") {
  const auto path = std::filesystem::temp_directory_path() / "aiopt-test-config.yaml";
  {
    std::ofstream out(path);
    out << fusion_yaml;
  }
  const ExperimentFile file = load_experiment_file(path.string(), fakes());
  std::filesystem::remove(path);
  CHECK(file.path == path.string());
  CHECK(plan(file).size() == 16);
  CHECK(file.experiments[0].origin == path.string() + ":10: experiment 1");
}

TEST_CASE("the shipped configs load and expand to the intended cases", "[config]") {
  // Against the real techniques, so a config and a technique's spec cannot drift apart.
  const auto& real = aiopt::techniques();
  const std::string root = AIOPT_SOURCE_DIR;
  const ExperimentFile ci = load_experiment_file(root + "/configs/ci.yaml", real);
  CHECK(ci.settings.quick == std::optional<bool>(true));
  const auto ci_cases = plan(ci, true, real);
  std::map<std::string, std::vector<PlannedCase>> by_technique;
  int not_applicable = 0;
  for (const auto& p : ci_cases) {
    // Every case passes its technique's own validation; only the causal linformer, on CUDA int4
    // with 24 rows (its GEMV takes up to 8), and quantization's model level on CUDA do not apply.
    try {
      find_technique(p.c.technique, real, "ci.yaml").validate(p.c, p.device);
    } catch (const NotApplicable&) {
      ++not_applicable;
      const bool model_level = p.c.technique == "quantization" && p.c.params.string("level") == "model";
      CHECK((p.c.variant == "linformer" || (p.c.variant == "int4_weight_only" && p.device == DeviceKind::cuda) ||
             (model_level && p.device == DeviceKind::cuda) || (p.c.variant == "qat" && !model_level)));
    }
    by_technique[p.c.technique].push_back(p);
  }
  // causal linformer on cpu and cuda, int4 m=24 on cuda, the model level on cuda, qat at the gemm level
  CHECK(not_applicable == 3 + 7 + 2);
  // Variants × values × devices (cpu, cuda).
  CHECK(by_technique["kv_caching"].size() == 3 * 2 * 2);
  CHECK(by_technique["flash_attention"].size() == 3 * 2 * 2);
  CHECK(by_technique["linear_attention"].size() == 5 * 2 * 2);
  CHECK(by_technique["quantization"].size() == (7 + 7) * 2 + (7 + 7));  // fp8 cuda, qat cpu; gemm m=1,24, model
  CHECK(by_technique["gradient_checkpointing"].size() == 4 * 2);
  CHECK(by_technique["mixed_precision"].size() == 5 * 2);
  CHECK(by_technique["gradient_accumulation"].size() == 2 * 2);
  CHECK(by_technique["lr_scheduling"].size() == 8 * 2);
  CHECK(by_technique["lora"].size() == (3 + 2) * 2);  // variants × ranks; qlora on the CPU only
  CHECK(by_technique["knowledge_distillation"].size() == 2 * 2 * 2);  // variants × temperatures × devices
  CHECK(by_technique["speculative_decoding"].size() == 4 * 2 * 2);    // variants × gammas × devices
  CHECK(by_technique["dynamic_batching"].size() == 4 * 2 * 2);        // variants × rates × devices
  CHECK(summary(by_technique["tensor_fusion"], {"chain", "rows", "hidden"}) ==
        std::vector<std::string>{
            "cpu unfused* chain=bias_gelu rows=256 hidden=256", "cpu fused chain=bias_gelu rows=256 hidden=256",
            "cuda unfused* chain=bias_gelu rows=256 hidden=256", "cuda fused chain=bias_gelu rows=256 hidden=256",
            "cuda cuda_graph chain=bias_gelu rows=256 hidden=256",
            "cpu unfused* chain=layernorm rows=256 hidden=256", "cpu fused chain=layernorm rows=256 hidden=256",
            "cuda unfused* chain=layernorm rows=256 hidden=256", "cuda fused chain=layernorm rows=256 hidden=256",
            "cuda cuda_graph chain=layernorm rows=256 hidden=256",
            "cpu unfused* chain=softmax rows=256 hidden=256", "cpu fused chain=softmax rows=256 hidden=256",
            "cuda unfused* chain=softmax rows=256 hidden=256", "cuda fused chain=softmax rows=256 hidden=256",
            "cuda cuda_graph chain=softmax rows=256 hidden=256"});

  const ExperimentFile full = load_experiment_file(root + "/configs/tensor_fusion.yaml", real);
  std::vector<std::string> shapes;
  for (const auto& p : plan(full, false, real))
    if (p.device == DeviceKind::cpu && p.baseline)
      shapes.push_back(p.c.params.string("chain") + " " + std::to_string(p.c.params.integer("rows")) +
                       "x" + std::to_string(p.c.params.integer("hidden")) + " " + p.c.params.string("dtype"));
  std::vector<std::string> expected;
  for (const char* chain : {"bias_gelu", "layernorm", "softmax"})
    for (const char* rows : {"2048", "4096", "8192"})
      for (const char* dtype : {"f32", "bf16"})
        expected.push_back(std::string(chain) + " " + rows + "x1024 " + dtype);
  CHECK(shapes == expected);

  // The GPT-2 sweep names a folder of published files (not shipped): it plans, and every case
  // carries the checkpoint.
  const ExperimentFile gpt2 = load_experiment_file(root + "/configs/gpt2.yaml", real);
  std::map<std::string, std::size_t> gpt2_cases;
  for (const auto& p : plan(gpt2, false, real)) {
    ++gpt2_cases[p.c.technique];
    CHECK(p.c.params.string("checkpoint") == "models/gpt2");
  }
  CHECK(gpt2_cases["kv_caching"] == 3 * 2 * 2);   // variants × prompt lengths × devices
  CHECK(gpt2_cases["quantization"] == 3 * 2);     // variants × devices (cuda: not applicable at level=model)

  // The LoRA sweep: qv at seven ranks, all at five, qlora once, each beside full fine-tuning.
  const ExperimentFile lora = load_experiment_file(root + "/configs/lora.yaml", real);
  std::vector<std::string> lora_cases;
  for (const auto& p : plan(lora, false, real))
    if (p.device == DeviceKind::cpu && !p.baseline)
      lora_cases.push_back(p.c.variant + " " + p.c.params.string("targets") + " " +
                           std::to_string(p.c.params.integer("rank")));
  CHECK(lora_cases == std::vector<std::string>{"lora qv 1", "lora qv 2", "lora qv 4", "lora qv 8", "lora qv 16",
                                               "lora qv 32", "lora qv 64", "lora all 1", "lora all 4", "lora all 8",
                                               "lora all 16", "lora all 64", "qlora qv 8"});

  // The speculative decoding sweep: three drafts under the rule and greedily, and prompt lookup,
  // each at eight values of gamma, every case valid (each beside the target alone).
  const ExperimentFile sd = load_experiment_file(root + "/configs/speculative_decoding.yaml", real);
  std::map<std::string, int> sd_cases;
  for (const auto& p : plan(sd, false, real)) {
    if (p.device != DeviceKind::cpu || p.baseline) continue;
    find_technique(p.c.technique, real, "speculative_decoding.yaml").validate(p.c, p.device);
    ++sd_cases[p.c.variant + (p.c.variant == "prompt_lookup" ? "" : " " + p.c.params.string("draft"))];
  }
  CHECK(sd_cases == std::map<std::string, int>{{"speculative tiny", 8}, {"speculative distilled", 8},
                                               {"speculative small", 8}, {"speculative_greedy tiny", 8},
                                               {"speculative_greedy distilled", 8}, {"speculative_greedy small", 8},
                                               {"prompt_lookup", 8}});
}
