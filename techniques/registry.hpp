#pragma once
// The one list that names every technique (DESIGN.md "Layers": cli hands it to the harness).
#include <memory>
#include <vector>

#include "harness/technique.hpp"

namespace aiopt {

using TechniqueList = std::vector<std::unique_ptr<Technique>>;

// Every technique, in the order TECHNIQUES.md numbers them.
const TechniqueList& techniques();

}  // namespace aiopt
