#pragma once
// The report's context as rows a person reads: nested objects flattened to dotted keys
// ("cpu.caches.l3_bytes", "devices.0.name"), lists joined ("avx2 fma avx512f"), sizes in binary
// units. New context fields appear without code changes.
#include <string>
#include <utility>
#include <vector>

#include "report/result.hpp"

namespace aiopt {

// One row per leaf of `context`, in its order: an object's fields under "key.field", an array of
// objects under "key.0", "key.1", ...; an array of plain values is one row, its values joined by
// spaces ("; " when a value holds a space). Sizes (keys ending in "_bytes") in binary units,
// fractional numbers to four significant digits; null and empty values read "-".
std::vector<std::pair<std::string, std::string>> context_rows(const ojson& context);

}  // namespace aiopt
