#pragma once
// Asserting on bad input: the call must throw an InputError whose message holds every given part
// (the file, the key, the reason), as the user will read it.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "core/error.hpp"

namespace aiopt::test {

template <class Load>
void check_input_error(const Load& load, const std::vector<std::string>& parts) {
  try {
    load();
    FAIL("no error");
  } catch (const InputError& e) {
    const std::string what = e.what();
    INFO(what);
    for (const auto& part : parts) {
      INFO("expected: " << part);
      CHECK(what.find(part) != std::string::npos);
    }
  }
}

}  // namespace aiopt::test
