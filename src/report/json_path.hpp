#pragma once
// A value inside a report's JSON (the context above all) by its path of object keys.
#include <initializer_list>

#include "report/result.hpp"

namespace aiopt {

// The value at a path of object keys, or null where a key is missing or a step is not an object.
inline ojson at_path(const ojson& j, std::initializer_list<const char*> path) {
  const ojson* v = &j;
  for (const char* key : path) {
    if (!v->is_object() || !v->contains(key)) return nullptr;
    v = &(*v)[key];
  }
  return *v;
}

}  // namespace aiopt
