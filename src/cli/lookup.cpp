#include "cli/lookup.hpp"

#include "harness/sweep.hpp"

namespace aiopt::cli {

std::string technique_names() {
  std::string s;
  for (const auto& t : techniques()) s += (s.empty() ? "" : ", ") + t->name();
  return s;
}

const Technique& find_technique(const std::string& name) {
  return aiopt::find_technique(name, techniques(), "--technique");
}

}  // namespace aiopt::cli
