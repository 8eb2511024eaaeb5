// aiopt info: the report's context block — this build, this machine, its measured peaks.
#include <iostream>

#include "cli/blas_warnings.hpp"
#include "cli/commands.hpp"
#include "core/context.hpp"

namespace aiopt::cli {

namespace {

// Nested objects as dotted keys, arrays inline: one "key: value" line each.
void print_flat(const nlohmann::ordered_json& j, const std::string& prefix, std::ostream& os) {
  for (const auto& [key, value] : j.items()) {
    const std::string name = prefix.empty() ? key : prefix + "." + key;
    if (value.is_object()) {
      print_flat(value, name, os);
    } else if (value.is_array() && !value.empty() && value.front().is_object()) {
      for (std::size_t i = 0; i < value.size(); ++i)
        print_flat(value[i], name + "[" + std::to_string(i) + "]", os);
    } else if (value.is_array()) {
      std::string joined;
      for (const auto& v : value) joined += (joined.empty() ? "" : " ") + (v.is_string() ? v.get<std::string>() : v.dump());
      os << name << ": " << joined << "\n";
    } else {
      os << name << ": " << (value.is_string() ? value.get<std::string>() : value.dump()) << "\n";
    }
  }
}

}  // namespace

void add_info(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("info", "Show this build and machine: CPU, ISA, BLAS, GPUs, measured peaks");
  auto format = std::make_shared<std::string>("table");
  cmd->add_option("-f,--format", *format, "Output format")->check(CLI::IsMember({"table", "json"}));
  cmd->callback([format, &exit_code] {
    warn_about_blas_kernels();
    const auto context = machine_context(true);
    if (*format == "json")
      std::cout << context.dump(2) << "\n";
    else
      print_flat(context, "", std::cout);
    exit_code = 0;
  });
}

}  // namespace aiopt::cli
