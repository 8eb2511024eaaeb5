// Fault injection: a named fault is active exactly while a Scope with its name is open.
#include <catch2/catch.hpp>

#include "core/fault.hpp"

using namespace aiopt;

TEST_CASE("a fault is active only inside its scope and only by its own name", "[fault]") {
  CHECK_FALSE(fault::active("kv_caching.stale_entry"));
  {
    const fault::Scope stale("kv_caching.stale_entry");
    CHECK(fault::active("kv_caching.stale_entry"));
    CHECK_FALSE(fault::active("kv_caching"));
    CHECK_FALSE(fault::active("flash_attention.zeros"));
    {
      const fault::Scope zeros("flash_attention.zeros");
      CHECK(fault::active("flash_attention.zeros"));
      CHECK(fault::active("kv_caching.stale_entry"));
    }
    CHECK_FALSE(fault::active("flash_attention.zeros"));
    CHECK(fault::active("kv_caching.stale_entry"));
  }
  CHECK_FALSE(fault::active("kv_caching.stale_entry"));
}
