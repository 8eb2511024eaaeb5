#include "techniques/registry.hpp"

#include "techniques/tensor_fusion/tensor_fusion.hpp"

namespace aiopt {

const TechniqueList& techniques() {
  static const TechniqueList list = [] {
    TechniqueList l;
    l.push_back(std::make_unique<TensorFusion>());
    return l;
  }();
  return list;
}

}  // namespace aiopt
