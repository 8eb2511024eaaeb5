#pragma once
// Names declared once against the enum the code switches on: a technique's variants (name,
// summary, baseline, devices) and the values of its choice parameters. A table gives what the
// harness lists (variants(), a choice ParamSpec), the enum of a name with the harness's "did
// you mean" error, and the name of an enum value for messages.
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/device.hpp"
#include "core/spelling.hpp"
#include "harness/param.hpp"
#include "harness/technique.hpp"

namespace aiopt {

// InputError "<where>: <kind> '<name>' is unknown; did you mean '<closest>'? (allowed: a, b)".
[[noreturn]] void throw_unknown_name(std::string_view where, std::string_view kind, std::string_view name,
                                     const std::vector<std::string>& names);

// The names of an enum's values, one row per value.
template <class Enum>
class Choices {
 public:
  struct Row {
    Enum value;
    std::string name;
  };
  Choices(std::initializer_list<Row> rows) : rows_(rows) {}
  explicit Choices(std::vector<Row> rows) : rows_(std::move(rows)) {}

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const Row& r : rows_) out.push_back(r.name);
    return out;
  }
  const std::string& name(Enum value) const {
    for (const Row& r : rows_)
      if (r.value == value) return r.name;
    throw std::logic_error("an enum value without a declared name");
  }
  // The value named `name`; InputError naming `where`, `kind` and the allowed names otherwise.
  Enum parse(std::string_view name, std::string_view where, std::string_view kind) const {
    for (const Row& r : rows_)
      if (r.name == name) return r.value;
    throw_unknown_name(where, kind, name, names());
  }

  // A choice parameter over these names (choice_param), `value` its default.
  ParamSpec param(const std::string& name, Enum value, std::optional<Enum> quick, const std::string& unit,
                  const std::string& help) const {
    return choice_param(name, this->name(value), quick ? std::optional<std::string>(this->name(*quick)) : std::nullopt,
                        names(), unit, help);
  }
  // The typed value of choice parameter `param` in `params`.
  Enum of(const Params& params, const std::string& param) const {
    return parse(params.string(param), "parameter " + in_quotes(param), "value");
  }

 private:
  std::vector<Row> rows_;
};

// One variant of a technique against its enum value; devices default to both.
template <class Enum>
struct VariantRow {
  Enum value;
  std::string name;
  std::string summary;
  bool baseline = false;
  std::vector<DeviceKind> devices = {DeviceKind::cpu, DeviceKind::cuda};
};

// A technique's variants: Technique::variants() and the enum of a case's variant.
template <class Enum>
class VariantTable {
 public:
  VariantTable(std::string technique, std::initializer_list<VariantRow<Enum>> rows)
      : technique_(std::move(technique)), rows_(rows), names_(choices(rows)) {}

  std::vector<Variant> variants() const {
    std::vector<Variant> out;
    for (const auto& r : rows_) out.push_back({r.name, r.summary, r.baseline, r.devices});
    return out;
  }
  // InputError "<technique>: variant 'x' is unknown; did you mean ...?" for an undeclared name.
  Enum parse(std::string_view variant) const { return names_.parse(variant, technique_, "variant"); }
  const std::string& name(Enum value) const { return names_.name(value); }

 private:
  static Choices<Enum> choices(std::initializer_list<VariantRow<Enum>> rows) {
    std::vector<typename Choices<Enum>::Row> names;
    for (const auto& r : rows) names.push_back({r.value, r.name});
    return Choices<Enum>(std::move(names));
  }

  std::string technique_;
  std::vector<VariantRow<Enum>> rows_;
  Choices<Enum> names_;
};

}  // namespace aiopt
