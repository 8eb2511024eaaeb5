#pragma once
// Typed technique parameters: the spec a technique declares, and the values one case carries.
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace aiopt {

enum class ParamType { integer, real, string, boolean, choice };
std::string to_string(ParamType type);

// One parameter value. `choice` parameters hold a std::string.
using Value = std::variant<bool, std::int64_t, double, std::string>;

std::string to_string(const Value& value);
nlohmann::json to_json(const Value& value);

struct ParamSpec {
  std::string name;  // snake_case, as written in configs and --set
  ParamType type = ParamType::integer;
  Value default_value;
  std::optional<double> min;          // inclusive bounds for integer and real
  std::optional<double> max;
  std::vector<std::string> choices;   // allowed values of a choice parameter
  std::string unit;                   // "", "rows", "B", "tokens", ...
  std::string help;
  std::optional<Value> quick_value;   // value under --quick when it differs from the default

  nlohmann::json to_json() const;
};

// The `max` of a number parameter without an upper bound.
inline constexpr double unbounded = std::numeric_limits<double>::infinity();

// An integer parameter in [min, max] (max unbounded: no upper bound) with `quick` as its --quick value when
// given: the most common spec, in one call.
ParamSpec integer_param(const std::string& name, std::int64_t value, std::optional<std::int64_t> quick,
                        double min, double max, const std::string& unit, const std::string& help);

// A real parameter in [min, max] (max unbounded: no upper bound) with `quick` as its --quick value when given.
ParamSpec real_param(const std::string& name, double value, std::optional<double> quick, double min, double max,
                     const std::string& unit, const std::string& help);

// A choice parameter: one of `choices`, `quick` as its --quick value when given.
ParamSpec choice_param(const std::string& name, const std::string& value, std::optional<std::string> quick,
                       std::vector<std::string> choices, const std::string& unit, const std::string& help);

// A string parameter (a path, a name) whose default may be empty: "none", which a config or --set
// may then also give; where the default is not empty, an empty value is refused.
ParamSpec string_param(const std::string& name, const std::string& value, const std::string& help);

// The values of one case: every parameter of the technique's spec, by name.
class Params {
 public:
  void set(const std::string& name, Value value) { values_[name] = std::move(value); }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  const Value& at(const std::string& name) const;  // throws std::out_of_range naming the key

  std::int64_t integer(const std::string& name) const;
  double real(const std::string& name) const;  // integer values convert
  const std::string& string(const std::string& name) const;
  bool boolean(const std::string& name) const;

  const std::map<std::string, Value>& values() const { return values_; }
  nlohmann::json to_json() const;  // {"name": value, ...}, keys sorted
  static Params from_json(const nlohmann::json& j);
  bool operator==(const Params&) const = default;

 private:
  std::map<std::string, Value> values_;
};

}  // namespace aiopt
