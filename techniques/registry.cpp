#include "techniques/registry.hpp"

namespace aiopt {

const TechniqueList& techniques() {
  static const TechniqueList list = [] {
    TechniqueList l;
    return l;
  }();
  return list;
}

}  // namespace aiopt
