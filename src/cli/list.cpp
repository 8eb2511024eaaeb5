// aiopt list: the techniques, their trade-offs, variants and full parameter specs.
#include <iostream>
#include <sstream>

#include "cli/commands.hpp"
#include "cli/lookup.hpp"
#include "techniques/registry.hpp"

namespace aiopt::cli {

namespace {

nlohmann::ordered_json describe(const Technique& t) {
  nlohmann::ordered_json j;
  j["name"] = t.name();
  j["summary"] = t.summary();
  j["trade_off"] = t.trade_off();
  j["variants"] = nlohmann::ordered_json::array();
  for (const auto& v : t.variants()) {
    nlohmann::ordered_json jv;
    jv["name"] = v.name;
    jv["summary"] = v.summary;
    jv["baseline"] = v.baseline;
    jv["devices"] = nlohmann::ordered_json::array();
    for (auto d : v.devices) jv["devices"].push_back(to_string(d));
    j["variants"].push_back(jv);
  }
  j["params"] = nlohmann::ordered_json::array();
  for (const auto& p : t.params()) j["params"].push_back(nlohmann::ordered_json::parse(p.to_json().dump()));
  return j;
}

std::string allowed_text(const ParamSpec& p) {
  if (!p.choices.empty()) {
    std::string s = "{";
    for (std::size_t i = 0; i < p.choices.size(); ++i) s += (i ? ", " : "") + p.choices[i];
    return s + "}";
  }
  if (p.min || p.max) {
    auto num = [&](double v) {
      return p.type == ParamType::integer ? std::to_string(static_cast<long long>(v))
                                          : to_string(Value(v));
    };
    return "[" + (p.min ? num(*p.min) : std::string("-inf")) + ", " +
           (p.max ? num(*p.max) : std::string("inf")) + "]";
  }
  return "";
}

std::string describe_text(const Technique& t) {
  std::ostringstream os;
  os << t.name() << ": " << t.summary() << "\n";
  os << "  trade-off: " << t.trade_off() << "\n";
  os << "  variants:\n";
  for (const auto& v : t.variants()) {
    std::string devices;
    for (auto d : v.devices) devices += (devices.empty() ? "" : ", ") + to_string(d);
    os << "    " << v.name << (v.baseline ? " (baseline)" : "") << " [" << devices << "]: "
       << v.summary << "\n";
  }
  os << "  parameters:\n";
  for (const auto& p : t.params()) {
    std::string def = to_string(p.default_value);
    if (p.quick_value) def += " (quick " + to_string(*p.quick_value) + ")";
    char line[512];
    std::snprintf(line, sizeof line, "    %-12s %-6s default %-20s %-28s %-8s ", p.name.c_str(),
                  to_string(p.type).c_str(), def.c_str(), allowed_text(p).c_str(), p.unit.c_str());
    os << line << p.help << "\n";
  }
  return os.str();
}

}  // namespace

void add_list(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("list", "List techniques: trade-off, variants and parameters");
  auto technique = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("table");
  cmd->add_option("-t,--technique", *technique, "Only this technique");
  cmd->add_option("-f,--format", *format, "Output format")->check(CLI::IsMember({"table", "json"}));
  cmd->callback([technique, format, &exit_code] {
    std::vector<const Technique*> chosen;
    if (technique->empty()) {
      for (const auto& t : techniques()) chosen.push_back(t.get());
    } else {
      chosen.push_back(&find_technique(*technique));
    }
    if (*format == "json") {
      nlohmann::ordered_json j = nlohmann::ordered_json::array();
      for (const auto* t : chosen) j.push_back(describe(*t));
      std::cout << j.dump(2) << "\n";
    } else {
      for (std::size_t i = 0; i < chosen.size(); ++i)
        std::cout << (i ? "\n" : "") << describe_text(*chosen[i]);
    }
    exit_code = 0;
  });
}

}  // namespace aiopt::cli
