#include "harness/param.hpp"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace aiopt {

std::string to_string(ParamType type) {
  switch (type) {
    case ParamType::integer: return "int";
    case ParamType::real: return "float";
    case ParamType::string: return "string";
    case ParamType::boolean: return "bool";
    case ParamType::choice: return "enum";
  }
  return "?";
}

std::string to_string(const Value& value) {
  return std::visit(
      [](const auto& v) -> std::string {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          return v ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::string>) {
          return v;
        } else if constexpr (std::is_same_v<T, double>) {
          std::ostringstream os;
          os.precision(15);
          os << v;
          return os.str();
        } else {
          return std::to_string(v);
        }
      },
      value);
}

nlohmann::json to_json(const Value& value) {
  return std::visit([](const auto& v) { return nlohmann::json(v); }, value);
}

nlohmann::json ParamSpec::to_json() const {
  nlohmann::json j;
  j["name"] = name;
  j["type"] = to_string(type);
  j["default"] = aiopt::to_json(default_value);
  if (quick_value) j["quick"] = aiopt::to_json(*quick_value);
  if (min) j["min"] = *min;
  if (max) j["max"] = *max;
  if (!choices.empty()) j["choices"] = choices;
  j["unit"] = unit;
  j["help"] = help;
  return j;
}

const Value& Params::at(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw std::out_of_range("no parameter '" + name + "' in this case");
  return it->second;
}

std::int64_t Params::integer(const std::string& name) const {
  const Value& v = at(name);
  if (auto p = std::get_if<std::int64_t>(&v)) return *p;
  throw std::invalid_argument("parameter '" + name + "' is not an integer");
}

double Params::real(const std::string& name) const {
  const Value& v = at(name);
  if (auto p = std::get_if<double>(&v)) return *p;
  if (auto p = std::get_if<std::int64_t>(&v)) return static_cast<double>(*p);
  throw std::invalid_argument("parameter '" + name + "' is not a number");
}

const std::string& Params::string(const std::string& name) const {
  const Value& v = at(name);
  if (auto p = std::get_if<std::string>(&v)) return *p;
  throw std::invalid_argument("parameter '" + name + "' is not a string");
}

bool Params::boolean(const std::string& name) const {
  const Value& v = at(name);
  if (auto p = std::get_if<bool>(&v)) return *p;
  throw std::invalid_argument("parameter '" + name + "' is not a bool");
}

nlohmann::json Params::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : values_) j[k] = aiopt::to_json(v);
  return j;
}

Params Params::from_json(const nlohmann::json& j) {
  Params p;
  for (const auto& [k, v] : j.items()) {
    if (v.is_boolean()) p.set(k, v.get<bool>());
    else if (v.is_number_integer()) p.set(k, v.get<std::int64_t>());
    else if (v.is_number()) p.set(k, v.get<double>());
    else if (v.is_string()) p.set(k, v.get<std::string>());
    else throw std::invalid_argument("parameter '" + k + "' has a value that is not a scalar");
  }
  return p;
}

namespace {

// A number parameter in [min, max]; an infinite max is no upper bound.
ParamSpec number_param(const std::string& name, ParamType type, Value value, std::optional<Value> quick, double min,
                       double max, const std::string& unit, const std::string& help) {
  ParamSpec p;
  p.name = name;
  p.type = type;
  p.default_value = std::move(value);
  p.quick_value = std::move(quick);
  p.min = min;
  if (std::isfinite(max)) p.max = max;
  p.unit = unit;
  p.help = help;
  return p;
}

}  // namespace

ParamSpec integer_param(const std::string& name, std::int64_t value, std::optional<std::int64_t> quick,
                        double min, double max, const std::string& unit, const std::string& help) {
  return number_param(name, ParamType::integer, value, quick ? std::optional<Value>(*quick) : std::nullopt, min, max,
                      unit, help);
}

ParamSpec real_param(const std::string& name, double value, std::optional<double> quick, double min, double max,
                     const std::string& unit, const std::string& help) {
  return number_param(name, ParamType::real, value, quick ? std::optional<Value>(*quick) : std::nullopt, min, max,
                      unit, help);
}

ParamSpec choice_param(const std::string& name, const std::string& value, std::optional<std::string> quick,
                       std::vector<std::string> choices, const std::string& unit, const std::string& help) {
  ParamSpec p;
  p.name = name;
  p.type = ParamType::choice;
  p.default_value = value;
  if (quick) p.quick_value = *quick;
  p.choices = std::move(choices);
  p.unit = unit;
  p.help = help;
  return p;
}

ParamSpec string_param(const std::string& name, const std::string& value, const std::string& help) {
  ParamSpec p;
  p.name = name;
  p.type = ParamType::string;
  p.default_value = value;
  p.help = help;
  return p;
}

}  // namespace aiopt
