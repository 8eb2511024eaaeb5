#include "harness/variant_table.hpp"

#include "core/error.hpp"

namespace aiopt {

void throw_unknown_name(std::string_view where, std::string_view kind, std::string_view name,
                        const std::vector<std::string>& names) {
  throw InputError(std::string(where) + ": " + std::string(kind) + " " + in_quotes(name) + " is unknown" +
                   did_you_mean(name, names) + " (allowed: " + join_names(names) + ")");
}

}  // namespace aiopt
