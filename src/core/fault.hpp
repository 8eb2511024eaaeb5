#pragma once
// Fault injection: a deliberately broken variant, switched on by a test, so that the test can show
// that a technique's own runtime check turns it into a `failed` result (README "Correctness").
// A technique names its faults "<technique>.<what breaks>" (e.g. "kv_caching.stale_entry") and
// consults active() where the fault belongs; nothing outside tests opens a Scope, so in a real
// run every active() is false.
#include <string>
#include <string_view>

namespace aiopt::fault {

// Whether a Scope with this name is open (on any thread).
bool active(std::string_view name);

// Opens the named fault for its lifetime. Scopes may nest, with different names.
class Scope {
 public:
  explicit Scope(std::string name);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  std::string name_;
};

}  // namespace aiopt::fault
