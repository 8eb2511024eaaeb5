// Variants and choice values declared once (harness/variant_table.hpp).
#include <catch2/catch.hpp>
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
