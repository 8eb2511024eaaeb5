#pragma once
// The one list that names every technique (README "Layout": cli hands it to the harness).
#include <memory>
#include <vector>

#include "harness/technique.hpp"

namespace aiopt {

using TechniqueList = std::vector<std::unique_ptr<Technique>>;

// Every technique, in the order of the README's technique table.
const TechniqueList& techniques();

}  // namespace aiopt
