#include "cli/output.hpp"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "core/error.hpp"

namespace aiopt::cli {

void check_outputs(const std::vector<std::string>& outputs) {
  for (const auto& path : outputs) {
    format_from_path(path);
    const auto parent = std::filesystem::path(path).parent_path();
    if (!parent.empty() && !std::filesystem::is_directory(parent))
      throw InputError("output '" + path + "': folder '" + parent.string() + "' does not exist");
  }
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw InputError("cannot write '" + path + "': " + std::strerror(errno));
  out << text;
  if (!out.flush()) throw InputError("cannot write '" + path + "': " + std::strerror(errno));
}

void emit(const Report& report, const std::string& format, const std::vector<std::string>& outputs,
          const std::set<std::string>& already_written) {
  std::cout << render(report, format.empty() ? Format::table : format_from_name(format));
  std::cout.flush();
  for (const auto& path : outputs) {
    if (already_written.count(std::filesystem::weakly_canonical(path).string())) continue;
    write_file(path, render(report, format_from_path(path)));
    spdlog::info("wrote {}", path);
  }
}

}  // namespace aiopt::cli
