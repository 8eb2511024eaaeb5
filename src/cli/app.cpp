#include "cli/app.hpp"

#include <CLI/CLI.hpp>

#include "core/build_info.hpp"

namespace aiopt::cli {

int run(int argc, char** argv) {
  CLI::App app{"aiopt: measure what AI optimization techniques buy and cost"};
  app.set_version_flag("--version", std::string("aiopt ") + build::version);
  CLI11_PARSE(app, argc, argv);
  return 0;
}

}  // namespace aiopt::cli
