#pragma once
// The trained models of every test executable of this build in one model cache directory beside
// the binaries (nn/model_cache.hpp), trained on first use: AIOPT_CACHE points there for the
// lifetime of a TestModelCache.
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

namespace aiopt::test {

class TestModelCache {
 public:
  TestModelCache() {
    const auto dir = std::filesystem::path(AIOPT_BINARY).parent_path() / "test-model-cache";
    if (setenv("AIOPT_CACHE", dir.c_str(), 1) != 0) throw std::runtime_error("cannot set AIOPT_CACHE");
  }
  ~TestModelCache() { unsetenv("AIOPT_CACHE"); }
  TestModelCache(const TestModelCache&) = delete;
  TestModelCache& operator=(const TestModelCache&) = delete;
};

}  // namespace aiopt::test
