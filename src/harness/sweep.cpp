#include "harness/sweep.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <optional>
#include <set>

#include "core/error.hpp"
#include "core/spelling.hpp"

namespace aiopt {

namespace {

// A range longer than this is almost surely a typo (a step of 1 over a large span).
constexpr std::size_t max_range_values = 10000;

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = s.find_last_not_of(" \t\r\n");
  return s.substr(first, last - first + 1);
}

// A whole-string number: "12" is one, "12x" and "" are not.
template <class T>
std::optional<T> parse_number(std::string_view s) {
  T value{};
  const auto [end, error] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (error != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(value)) return std::nullopt;
  }
  return value;
}

std::string type_name(const Value& value) {
  switch (value.index()) {
    case 0: return "bool";
    case 1: return "int";
    case 2: return "float";
    default: return "string";
  }
}

std::string bound(const ParamSpec& spec, double b) {
  if (spec.type == ParamType::integer) return to_string(Value(static_cast<std::int64_t>(b)));
  return to_string(Value(b));
}

// The pieces of "start-end*factor" or "start-end+step". The '-' that separates start from
// end is the first one after the start's sign; a '+' or '-' right after an exponent 'e' belongs
// to a number ("1e-3-1e-1*10").
struct RangeText {
  std::string_view start, end, step;
  char op;
};

bool is_exponent_sign(std::string_view s, std::size_t i) {
  return i > 0 && (s[i - 1] == 'e' || s[i - 1] == 'E');
}

std::optional<RangeText> split_range(std::string_view s) {
  std::size_t op_at = s.rfind('*');
  if (op_at == std::string_view::npos) {
    for (std::size_t i = s.size(); i-- > 1;) {
      if (s[i] == '+' && !is_exponent_sign(s, i)) {
        op_at = i;
        break;
      }
    }
  }
  if (op_at == std::string_view::npos || op_at == 0) return std::nullopt;
  const std::string_view span = s.substr(0, op_at);
  for (std::size_t i = 1; i < span.size(); ++i) {
    if (span[i] == '-' && !is_exponent_sign(span, i))
      return RangeText{span.substr(0, i), span.substr(i + 1), s.substr(op_at + 1), s[op_at]};
  }
  return std::nullopt;
}

// Expands one range of T (std::int64_t or double). `prefix` names where and the parameter.
template <class T>
std::vector<Value> expand_range(const ParamSpec& spec, std::string_view item, const RangeText& r,
                                const std::string& prefix) {
  const char* number_kind = std::is_integral_v<T> ? "an integer" : "a number";
  const std::string allowed = " (" + describe(spec) + ")";
  const auto start = parse_number<T>(r.start);
  const auto end = parse_number<T>(r.end);
  const auto step = parse_number<T>(r.step);
  for (const auto& [text, parsed] : {std::pair{r.start, start.has_value()},
                                     std::pair{r.end, end.has_value()},
                                     std::pair{r.step, step.has_value()}}) {
    if (!parsed)
      throw InputError(prefix + "range " + in_quotes(item) + ": " + in_quotes(text) + " is not " +
                       number_kind + allowed);
  }
  if (*start > *end)
    throw InputError(prefix + "range " + in_quotes(item) + " runs backwards: start " +
                     in_quotes(r.start) + " is above end " + in_quotes(r.end));
  if (r.op == '+' && *step <= 0)
    throw InputError(prefix + "range " + in_quotes(item) + " has step " + in_quotes(r.step) +
                     "; a '+' step must be above 0 or the range never ends");
  if (r.op == '*' && *step <= 1)
    throw InputError(prefix + "range " + in_quotes(item) + " has factor " + in_quotes(r.step) +
                     "; a '*' factor must be above 1 or the range never ends");
  if (r.op == '*' && *start <= 0)
    throw InputError(prefix + "range " + in_quotes(item) + " starts at " + in_quotes(r.start) +
                     "; a '*' range must start above 0 or it never grows");

  std::vector<Value> values;
  auto push = [&](T v) {
    if (values.size() == max_range_values)
      throw InputError(prefix + "range " + in_quotes(item) + " has more than " +
                       std::to_string(max_range_values) + " values; use a larger step");
    values.emplace_back(v);
  };
  if constexpr (std::is_integral_v<T>) {
    // A step that overflows lands beyond `end` anyway, so it ends the range too.
    for (T v = *start;;) {
      push(v);
      T next{};
      const bool overflow = r.op == '+' ? __builtin_add_overflow(v, *step, &next)
                                        : __builtin_mul_overflow(v, *step, &next);
      if (overflow || next > *end) break;
      v = next;
    }
  } else {
    // Each value is computed from the start, not accumulated, so rounding does not drift; the
    // slack lets "0-1+0.1" include 1 although 10 * 0.1 rounds above it.
    const double slack = 1e-9 * std::max(std::abs(*start), std::abs(*end));
    for (std::size_t i = 0;; ++i) {
      const double v = r.op == '+' ? *start + static_cast<double>(i) * *step
                                   : *start * std::pow(*step, static_cast<double>(i));
      if (v > *end + slack) break;
      push(std::min(v, *end));
    }
  }
  return values;
}

// One comma-separated item of a value list: a single value or, for numbers, a range.
std::vector<Value> parse_item(const ParamSpec& spec, std::string_view item,
                              const std::string& prefix) {
  const std::string allowed = " (" + describe(spec) + ")";
  switch (spec.type) {
    case ParamType::integer: {
      if (auto v = parse_number<std::int64_t>(item)) return {Value(*v)};
      if (auto r = split_range(item)) return expand_range<std::int64_t>(spec, item, *r, prefix);
      throw InputError(prefix + "value " + in_quotes(item) + " is not an integer" + allowed);
    }
    case ParamType::real: {
      if (auto v = parse_number<double>(item)) return {Value(*v)};
      if (auto r = split_range(item)) return expand_range<double>(spec, item, *r, prefix);
      throw InputError(prefix + "value " + in_quotes(item) + " is not a number" + allowed);
    }
    case ParamType::boolean: {
      if (item == "true" || item == "1") return {Value(true)};
      if (item == "false" || item == "0") return {Value(false)};
      throw InputError(prefix + "value " + in_quotes(item) + " is not a bool" + allowed);
    }
    case ParamType::choice: {
      const auto& c = spec.choices;
      if (std::find(c.begin(), c.end(), item) == c.end())
        throw InputError(prefix + "value " + in_quotes(item) + " is not allowed" +
                         did_you_mean(item, c) + allowed);
      return {Value(std::string(item))};
    }
    case ParamType::string: return {Value(std::string(item))};
  }
  return {};
}

}  // namespace

std::string describe(const ParamSpec& spec) {
  std::string out = spec.name + ": ";
  switch (spec.type) {
    case ParamType::integer:
    case ParamType::real:
      out += to_string(spec.type);
      if (spec.min && spec.max) out += " in [" + bound(spec, *spec.min) + ", " + bound(spec, *spec.max) + "]";
      else if (spec.min) out += " >= " + bound(spec, *spec.min);
      else if (spec.max) out += " <= " + bound(spec, *spec.max);
      return out;
    case ParamType::boolean: return out + "bool: true, false, 1 or 0";
    case ParamType::choice: return out + "one of " + join_names(spec.choices);
    case ParamType::string: return out + "string";
  }
  return out;
}

std::vector<Value> parse_values(const ParamSpec& spec, std::string_view text, const std::string& where) {
  const std::string prefix = where + ": parameter '" + spec.name + "': ";
  if (trim(text).empty())
    throw InputError(prefix + "no value given (" + describe(spec) + ")");
  std::vector<Value> values;
  std::size_t from = 0;
  while (from <= text.size()) {
    const std::size_t comma = std::min(text.find(',', from), text.size());
    const std::string_view item = trim(text.substr(from, comma - from));
    if (item.empty())
      throw InputError(prefix + "empty value in " + in_quotes(text) +
                       " (values are separated by single commas)");
    for (Value& v : parse_item(spec, item, prefix)) {
      check_value(spec, v, where);
      if (std::find(values.begin(), values.end(), v) != values.end())
        throw InputError(prefix + "value " + in_quotes(to_string(v)) + " appears twice in " +
                         in_quotes(text) + "; each case would run twice");
      values.push_back(std::move(v));
    }
    from = comma + 1;
  }
  return values;
}

void check_value(const ParamSpec& spec, const Value& value, const std::string& where) {
  const std::string prefix = where + ": parameter '" + spec.name + "': ";
  const std::string allowed = " (" + describe(spec) + ")";
  const bool type_ok = [&] {
    switch (spec.type) {
      case ParamType::integer: return std::holds_alternative<std::int64_t>(value);
      case ParamType::real: return std::holds_alternative<double>(value);
      case ParamType::boolean: return std::holds_alternative<bool>(value);
      case ParamType::choice:
      case ParamType::string: return std::holds_alternative<std::string>(value);
    }
    return false;
  }();
  if (!type_ok)
    throw InputError(prefix + "value " + in_quotes(to_string(value)) + " is a " + type_name(value) +
                     allowed);
  if (spec.type == ParamType::integer || spec.type == ParamType::real) {
    const double x = std::holds_alternative<double>(value)
                         ? std::get<double>(value)
                         : static_cast<double>(std::get<std::int64_t>(value));
    if ((spec.min && x < *spec.min) || (spec.max && x > *spec.max))
      throw InputError(prefix + "value " + in_quotes(to_string(value)) + " is out of range" + allowed);
  }
  if (spec.type == ParamType::choice) {
    const auto& name = std::get<std::string>(value);
    const auto& c = spec.choices;
    if (std::find(c.begin(), c.end(), name) == c.end())
      throw InputError(prefix + "value " + in_quotes(name) + " is not allowed" + did_you_mean(name, c) +
                       allowed);
  }
  // An empty string means "none" where that is the default (string_param), and is refused elsewhere.
  if (spec.type == ParamType::string && std::get<std::string>(value).empty() &&
      !std::get<std::string>(spec.default_value).empty())
    throw InputError(prefix + "value is empty" + allowed);
}

Axis parse_set(const Technique& t, std::string_view assignment) {
  const std::string where = "--set (" + t.name() + ")";
  const auto eq = assignment.find('=');
  const std::string_view key = eq == std::string_view::npos ? "" : trim(assignment.substr(0, eq));
  if (key.empty())
    throw InputError(where + ": " + in_quotes(assignment) +
                     " is not key=values (for example rows=1024,2048 or rows=1024-8192*2)");
  const auto specs = t.params();
  const ParamSpec& spec = find_param(specs, key, where);
  return Axis{spec.name, parse_values(spec, assignment.substr(eq + 1), where)};
}

const Technique& find_technique(std::string_view name,
                                const std::vector<std::unique_ptr<Technique>>& techniques,
                                const std::string& where) {
  std::vector<std::string> names;
  for (const auto& t : techniques) {
    if (t->name() == name) return *t;
    names.push_back(t->name());
  }
  throw InputError(where + ": technique " + in_quotes(name) + " is unknown" + did_you_mean(name, names) +
                   " (techniques: " + join_names(names) + ")");
}

const ParamSpec& find_param(const std::vector<ParamSpec>& specs, std::string_view name,
                            const std::string& where) {
  std::vector<std::string> names;
  for (const auto& spec : specs) {
    if (spec.name == name) return spec;
    names.push_back(spec.name);
  }
  std::sort(names.begin(), names.end());
  throw InputError(where + ": parameter " + in_quotes(name) + " is unknown" + did_you_mean(name, names) +
                   " (parameters: " + join_names(names) + ")");
}

Variant find_variant(const Technique& t, std::string_view name, const std::string& where) {
  std::vector<std::string> names;
  for (const auto& v : t.variants()) {
    if (v.name == name) return v;
    names.push_back(v.name);
  }
  throw InputError(where + ": variant " + in_quotes(name) + " is unknown" + did_you_mean(name, names) +
                   " (variants: " + join_names(names) + ")");
}

DeviceKind parse_device(std::string_view name, const std::string& where) {
  if (const auto kind = device_kind_named(name)) return *kind;
  std::vector<std::string> names;
  for (const DeviceKind kind : device_kinds) names.push_back(to_string(kind));
  throw InputError(where + ": device " + in_quotes(name) + " is unknown" + did_you_mean(name, names) +
                   " (devices: " + join_names(names) + ")");
}

void validate(const Experiment& e, const std::vector<std::unique_ptr<Technique>>& techniques) {
  validate(e, find_technique(e.technique, techniques, e.origin));
}

void validate(const Experiment& e, const Technique& t) {
  const std::string where = e.origin + " (" + t.name() + ")";
  if (e.technique != t.name())
    throw InputError(where + ": experiment names technique " + in_quotes(e.technique));

  std::vector<Variant> variants;
  for (const auto& name : e.variants) {
    variants.push_back(find_variant(t, name, where));
    if (std::count(e.variants.begin(), e.variants.end(), name) > 1)
      throw InputError(where + ": variant " + in_quotes(name) + " is listed twice");
  }
  std::vector<DeviceKind> devices;
  for (const auto& name : e.devices) {
    devices.push_back(parse_device(name, where));
    if (std::count(e.devices.begin(), e.devices.end(), name) > 1)
      throw InputError(where + ": device " + in_quotes(name) + " is listed twice");
  }
  if (!devices.empty()) {
    for (const auto& v : variants) {
      if (std::none_of(devices.begin(), devices.end(), [&](DeviceKind d) { return v.runs_on(d); })) {
        std::vector<std::string> runs_on;
        for (DeviceKind d : v.devices) runs_on.push_back(to_string(d));
        throw InputError(where + ": variant " + in_quotes(v.name) + " runs on " + join_names(runs_on) +
                         ", none of the devices asked (" + join_names(e.devices) + ")");
      }
    }
  }

  const auto specs = t.params();
  std::set<std::string> seen;
  auto check_axis = [&](const Axis& axis) {
    const ParamSpec& spec = find_param(specs, axis.name, where);
    if (!seen.insert(axis.name).second)
      throw InputError(where + ": parameter " + in_quotes(axis.name) +
                       " is on two axes; a parameter may be on one axis only");
    if (axis.values.empty())
      throw InputError(where + ": parameter " + in_quotes(axis.name) + " has no values (" +
                       describe(spec) + ")");
    for (std::size_t i = 0; i < axis.values.size(); ++i) {
      check_value(spec, axis.values[i], where);
      if (std::find(axis.values.begin(), axis.values.begin() + i, axis.values[i]) !=
          axis.values.begin() + i)
        throw InputError(where + ": parameter " + in_quotes(axis.name) + ": value " +
                         in_quotes(to_string(axis.values[i])) + " appears twice");
    }
  };
  for (const auto& axis : e.axes) check_axis(axis);
  for (const auto& group : e.zips) {
    if (group.empty()) throw InputError(where + ": a zip group has no parameters");
    for (const auto& axis : group) {
      check_axis(axis);
      if (axis.values.size() != group.front().values.size())
        throw InputError(where + ": zip parameters " + in_quotes(group.front().name) + " (" +
                         std::to_string(group.front().values.size()) + " values) and " +
                         in_quotes(axis.name) + " (" + std::to_string(axis.values.size()) +
                         " values) differ in length; zipped lists advance together");
    }
  }
}

std::vector<PlannedCase> expand(const Experiment& e, const Technique& t, bool quick,
                                std::uint64_t seed, const std::vector<DeviceKind>& default_devices) {
  validate(e, t);

  Params base;
  for (const auto& spec : t.params())
    base.set(spec.name, quick && spec.quick_value ? *spec.quick_value : spec.default_value);

  // Every independent axis is a group of one; zip groups follow. A combination picks one index
  // per group, and the last group advances fastest, like the digits of a counter.
  std::vector<std::vector<Axis>> groups;
  for (const auto& axis : e.axes) groups.push_back({axis});
  for (const auto& group : e.zips) groups.push_back(group);

  std::vector<DeviceKind> devices;
  for (const auto& name : e.devices) devices.push_back(parse_device(name, e.origin));
  if (e.devices.empty()) devices = default_devices;

  const auto all_variants = t.variants();
  std::vector<Variant> asked;
  if (e.variants.empty()) asked = all_variants;
  for (const auto& name : e.variants) asked.push_back(*t.find_variant(name));
  const std::string baseline_name = t.baseline();
  const Variant baseline = *t.find_variant(baseline_name);

  const bool baseline_asked =
      std::any_of(asked.begin(), asked.end(), [](const Variant& v) { return v.baseline; });

  std::vector<PlannedCase> cases;
  std::vector<std::size_t> index(groups.size(), 0);
  for (;;) {
    Params params = base;
    for (std::size_t g = 0; g < groups.size(); ++g)
      for (const auto& axis : groups[g]) params.set(axis.name, axis.values[index[g]]);

    for (DeviceKind device : devices) {
      std::vector<const Variant*> run;
      for (const auto& v : asked)
        if (v.runs_on(device) && v.name != baseline_name) run.push_back(&v);
      if ((baseline_asked || !run.empty()) && baseline.runs_on(device))
        cases.push_back({Case{t.name(), baseline_name, params, seed}, device, true});
      for (const Variant* v : run) cases.push_back({Case{t.name(), v->name, params, seed}, device, false});
    }

    std::size_t g = groups.size();
    while (g > 0 && ++index[g - 1] == groups[g - 1].front().values.size()) index[--g] = 0;
    if (g == 0) break;
  }
  return cases;
}

}  // namespace aiopt
