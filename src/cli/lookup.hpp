#pragma once
// Finding a technique of the registry by its CLI name.
#include <string>

#include "techniques/registry.hpp"

namespace aiopt::cli {

// Throws InputError naming the closest technique and listing all of them.
const Technique& find_technique(const std::string& name);

// "tensor_fusion, ..." for help texts.
std::string technique_names();

}  // namespace aiopt::cli
