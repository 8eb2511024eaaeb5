#include "report/context_rows.hpp"

#include <algorithm>

#include "report/number_text.hpp"

namespace aiopt {

namespace {

// Sizes in binary units, measured rates to four significant digits ("12.49", not
// "12.488274499737559"), nothing as "-".
std::string value_text(const std::string& key, const ojson& v) {
  if (v.is_null() || (v.is_string() && v.get_ref<const std::string&>().empty())) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number() && key.ends_with("_bytes")) return byte_text(v.get<double>());
  if (v.is_number_float()) return printed("%.4g", v.get<double>());
  return v.dump();
}

// Plain values joined: "avx2 fma", or "a warning; another" when a value holds spaces.
std::string joined_values(const std::string& key, const ojson& array) {
  std::vector<std::string> texts;
  for (const auto& v : array) texts.push_back(value_text(key, v));
  const bool spaced = std::any_of(texts.begin(), texts.end(),
                                  [](const std::string& t) { return t.find(' ') != std::string::npos; });
  std::string out;
  for (const auto& t : texts) out += (out.empty() ? "" : spaced ? "; " : " ") + t;
  return out;
}

void add_rows(const std::string& key, const ojson& v, std::vector<std::pair<std::string, std::string>>& rows) {
  const auto child = [&key](const std::string& name) { return key.empty() ? name : key + "." + name; };
  const bool nested = v.is_object() || (v.is_array() && std::any_of(v.begin(), v.end(), [](const ojson& e) {
                                          return e.is_structured();
                                        }));
  if (v.is_structured() && v.empty()) {
    rows.emplace_back(key, "-");
    return;
  }
  if (!nested) {
    rows.emplace_back(key, v.is_array() ? joined_values(key, v) : value_text(key, v));
    return;
  }
  if (v.is_object()) {
    for (const auto& [name, field] : v.items()) add_rows(child(name), field, rows);
  } else {
    for (std::size_t i = 0; i < v.size(); ++i) add_rows(child(std::to_string(i)), v[i], rows);
  }
}

}  // namespace

std::vector<std::pair<std::string, std::string>> context_rows(const ojson& context) {
  std::vector<std::pair<std::string, std::string>> rows;
  for (const auto& [name, v] : context.items()) add_rows(name, v, rows);
  return rows;
}

}  // namespace aiopt
