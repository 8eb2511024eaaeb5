// Variants and choice values declared once (harness/variant_table.hpp), and the validation the
// harness does for every technique before its own check (Technique::validate, prepare).
#include <catch2/catch.hpp>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "harness/variant_table.hpp"

using namespace aiopt;

namespace {

enum class Cache { none, f32, int8 };

const VariantTable<Cache>& caches() {
  static const VariantTable<Cache> table("caching",
                                         {
                                             {Cache::none, "recompute", "no cache", true},
                                             {Cache::f32, "kv_cache", "an f32 cache"},
                                             {Cache::int8, "kv_cache_int8", "an int8 cache", false, {DeviceKind::cuda}},
                                         });
  return table;
}

enum class Layout { rows, columns };

const Choices<Layout>& layouts() {
  static const Choices<Layout> names{{Layout::rows, "rows"}, {Layout::columns, "columns"}};
  return names;
}

// A technique declared through the tables, whose start() records that it was reached.
class Caching : public Technique {
 public:
  std::string name() const override { return "caching"; }
  std::string summary() const override { return "a fake technique for validation tests"; }
  std::string trade_off() const override { return "none"; }
  std::vector<ParamSpec> params() const override {
    return {integer_param("tokens", 8, std::nullopt, 5, 64, "tokens", "generated tokens"),
            layouts().param("layout", Layout::rows, Layout::columns, "", "how the cache is laid out")};
  }
  std::vector<Variant> variants() const override { return caches().variants(); }
  mutable int started = 0;

 protected:
  void check(const Case& c, DeviceKind) const override {
    if (caches().parse(c.variant) == Cache::int8 && layouts().of(c.params, "layout") == Layout::columns)
      throw InputError("caching: kv_cache_int8 keeps rows");
  }
  std::unique_ptr<Run> start(const Case&, const Device&) const override {
    ++started;
    return nullptr;
  }
};

Case make_case(const std::string& variant, std::int64_t tokens = 8, const std::string& layout = "rows") {
  Case c;
  c.technique = "caching";
  c.variant = variant;
  c.params.set("tokens", tokens);
  c.params.set("layout", layout);
  return c;
}

}  // namespace

TEST_CASE("a variant table parses and names each declared variant", "[variant_table]") {
  for (Cache cache : {Cache::none, Cache::f32, Cache::int8}) CHECK(caches().parse(caches().name(cache)) == cache);
  CHECK(caches().parse("kv_cache_int8") == Cache::int8);
  CHECK(caches().name(Cache::f32) == "kv_cache");

  const std::vector<Variant> variants = caches().variants();
  REQUIRE(variants.size() == 3);
  CHECK(variants[0].name == "recompute");
  CHECK(variants[0].baseline);
  CHECK_FALSE(variants[1].baseline);
  CHECK(variants[1].runs_on(DeviceKind::cpu));  // both devices unless a row says otherwise
  CHECK(variants[1].runs_on(DeviceKind::cuda));
  CHECK_FALSE(variants[2].runs_on(DeviceKind::cpu));
}

TEST_CASE("a misspelt variant names the closest and every allowed one", "[variant_table]") {
  CHECK_THROWS_AS(caches().parse("kv_cahce"), InputError);
  CHECK_THROWS_WITH(caches().parse("kv_cahce"), Catch::StartsWith("caching: variant 'kv_cahce' is unknown") &&
                                                    Catch::Contains("did you mean 'kv_cache'?") &&
                                                    Catch::Contains("recompute, kv_cache, kv_cache_int8"));
  CHECK_THROWS_WITH(caches().parse("lru"), !Catch::Contains("did you mean"));  // nothing close
}

TEST_CASE("a choice table declares its parameter and reads it typed", "[variant_table]") {
  const ParamSpec spec = layouts().param("layout", Layout::rows, Layout::columns, "", "help");
  CHECK(spec.type == ParamType::choice);
  CHECK(spec.choices == std::vector<std::string>{"rows", "columns"});
  CHECK(std::get<std::string>(spec.default_value) == "rows");
  REQUIRE(spec.quick_value);
  CHECK(std::get<std::string>(*spec.quick_value) == "columns");

  Params p;
  p.set("layout", std::string("columns"));
  CHECK(layouts().of(p, "layout") == Layout::columns);
  p.set("layout", std::string("colums"));
  CHECK_THROWS_WITH(layouts().of(p, "layout"),
                    Catch::Contains("parameter 'layout'") && Catch::Contains("did you mean 'columns'?"));
}

TEST_CASE("the harness validates a case against the declarations before the technique's check", "[variant_table]") {
  const Caching t;
  CHECK_NOTHROW(t.validate(make_case("kv_cache"), DeviceKind::cpu));
  CHECK_THROWS_WITH(t.validate(make_case("kv_cahce"), DeviceKind::cpu),
                    Catch::Contains("variant 'kv_cahce' is unknown") && Catch::Contains("did you mean 'kv_cache'?"));
  CHECK_THROWS_WITH(t.validate(make_case("kv_cache", 4), DeviceKind::cpu),
                    Catch::Contains("caching: parameter 'tokens'") && Catch::Contains("'4' is out of range") &&
                        Catch::Contains("[5, 64]"));
  CHECK_THROWS_WITH(t.validate(make_case("kv_cache", 8, "colums"), DeviceKind::cpu),
                    Catch::Contains("parameter 'layout'") && Catch::Contains("did you mean 'columns'?"));
  // The technique's own check sees only declared values.
  CHECK_THROWS_WITH(t.validate(make_case("kv_cache_int8", 8, "columns"), DeviceKind::cuda),
                    Catch::Contains("keeps rows"));
}

TEST_CASE("prepare validates and refuses a device the variant does not run on", "[variant_table]") {
  const Caching t;
  CHECK_THROWS_WITH(t.prepare(make_case("kv_cache_int8"), Device::cpu()),
                    Catch::Contains("variant 'kv_cache_int8' does not run on cpu") && Catch::Contains("runs on: cuda"));
  CHECK_THROWS_AS(t.prepare(make_case("kv_cache", 65), Device::cpu()), InputError);
  CHECK(t.started == 0);
  CHECK(t.prepare(make_case("kv_cache"), Device::cpu()) == nullptr);
  CHECK(t.started == 1);
}
