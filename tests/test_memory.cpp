// The tracked allocator: exact current/peak bytes per device, and nested scopes.
#include <catch2/catch.hpp>

#include "core/memory.hpp"

using namespace aiopt;

TEST_CASE("a scope sees the peak of what was allocated inside it", "[memory]") {
  const Device cpu = Device::cpu();
  const auto before = memory::usage(cpu).current;
  memory::Scope scope(cpu);
  {
    memory::Buffer<float> a(cpu, 1000);
    memory::Buffer<float> b(cpu, 500);
    CHECK(memory::usage(cpu).current == before + 6000);
  }
  memory::Buffer<double> c(cpu, 100);
  CHECK(scope.peak_bytes() == 6000);
  CHECK(memory::usage(cpu).current == before + 800);
}
